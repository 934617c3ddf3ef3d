"""The dashboard in a real browser: ``streamlit run app.py`` driven by headless Chromium.

Every page listed in the sidebar's navigation is opened by clicking its link (pages added later are
visited without touching this file), and the main action of each page is done with the mouse and
keyboard as a person would: attributions of a gallery image and of an uploaded file, the
comparison, a small ablation study, a latency measurement; training a model on the Models page has
a test of its own, and so have two people using one server at once. No page may show an exception
or an error box, and the browser may raise no JavaScript error. Screenshots of every page and
action go to a tmp folder and, when ``KDVIZ_SCREENSHOTS`` names a folder, there too.

One server (with its own empty workspace) and one Chromium serve the whole module; each test opens
its own browser context, so tests share runs on disk but no session.

Needs Debian's ``chromium`` (``apt-get install chromium``); Playwright never downloads a browser.
Without it the tests are skipped, except in CI (``CI=true``) where that is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from tools import live_app  # noqa: E402
from tools.live_app import CHROMIUM, CHROMIUM_ARGS, start_server, stop_server  # noqa: E402
from tools.live_app import free_port as _free_port  # noqa: E402

VIEWPORT = {"width": 1400, "height": 900}
START_TIMEOUT_S = 60
PAGE_TIMEOUT_S = 90  # the first run of a page imports torch and decodes the data set
TRAIN_TIMEOUT_S = 150
STUDY_TIMEOUT_S = 150

pytestmark = pytest.mark.browser


def _unavailable(reason: str):
    """Skip on a developer's machine; fail in CI, which must never pass by skipping this."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the browser test may not be skipped; .ci/run installs chromium)")
    pytest.skip(reason)


# ---------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def server(browser, tmp_path_factory):
    """A fresh ``streamlit run app.py`` on a free port with its own empty workspace and caches, for
    the whole module; always terminated at the end. (Needs the browser first: no browser, no server.)"""
    # the walk below was written for the built-in set
    yield from _serve(tmp_path_factory.mktemp("server"), {"KDVIZ_DEFAULT_DATA": "digits"})


def _serve(folder: Path, extra_env: dict[str, str]):
    port = _free_port()
    log = folder / "streamlit.log"
    env = {
        **os.environ,
        "KDVIZ_HOME": str(folder / "runs"),
        "KDVIZ_CACHE": str(folder / "cache"),
        "KDVIZ_DEVICE": "cpu",
        **extra_env,
    }
    try:
        proc = start_server(port, env, log, START_TIMEOUT_S)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield Server(f"http://127.0.0.1:{port}", log, Path(env["KDVIZ_HOME"]))
    finally:
        stop_server(proc)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # requirements-dev.txt pins it
        _unavailable(f"playwright is not installed ({exc}): pip install -r requirements-dev.txt")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


class Server(NamedTuple):
    url: str
    log: Path
    home: Path  # the server's KDVIZ_HOME


class BrowserLog:
    """JavaScript errors and console errors the page produced."""

    # Not the app's fault: a favicon request the server answers 404. (No other console error was
    # seen here: websocket messages would mean a lost connection, which is a failure.)
    BENIGN = re.compile(r"favicon", re.I)

    def __init__(self, page):
        self.page_errors: list[str] = []
        self.console_errors: list[str] = []
        self.ignored: list[str] = []  # printed at the end (seen with -s or on failure)
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        page.on("console", self._console)

    def _console(self, msg) -> None:
        if msg.type == "error":
            (self.ignored if self.BENIGN.search(msg.text) else self.console_errors).append(msg.text)

    def check(self, where: str) -> None:
        problems = [f"page error: {e}" for e in self.page_errors] + [
            f"console error: {e}" for e in self.console_errors
        ]
        assert not problems, f"JavaScript errors on {where}:\n" + "\n".join(problems)


@pytest.fixture
def sessions(browser, server):
    """Open a new browser session (its own context: cookies, Streamlit session) on the server."""
    opened = []

    def open_session():
        context = browser.new_context(viewport=VIEWPORT)
        pg = context.new_page()
        pg.set_default_timeout(30_000)
        pg.log = BrowserLog(pg)
        pg.server_log = server.log
        opened.append((context, pg))
        pg.goto(server.url)
        return pg

    try:
        yield open_session
    finally:
        for context, pg in opened:
            for text in pg.log.ignored:
                print(f"ignored console error: {text}")
            context.close()


@pytest.fixture
def page(sessions):
    return sessions()


# ----------------------------------------------------------------------------------------- helpers
def wait_idle(page, timeout_s: float = PAGE_TIMEOUT_S, settle_s: float = 1.0) -> None:
    live_app.wait_idle(page, timeout_s, settle_s)


def assert_no_errors(page, where: str) -> None:
    """No exception, no error box, no JavaScript error, no traceback in the server's log."""
    boxes = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
    texts = [boxes.nth(i).inner_text().strip() for i in range(boxes.count())]
    assert not texts, f"{where} shows {len(texts)} error(s):\n" + "\n---\n".join(texts)
    page.log.check(where)
    log = page.server_log.read_text(errors="replace")
    assert "Traceback" not in log, f"the server logged a traceback by {where}:\n{log[-4000:]}"


_CONTENT_HEIGHT_JS = """() => {
    const main = document.querySelector('[data-testid="stMain"]');
    const sidebar = document.querySelector('[data-testid="stSidebarContent"]');
    return Math.ceil(Math.max(main ? main.scrollHeight : 0, sidebar ? sidebar.scrollHeight : 0));
}"""


def screenshot(page, tmp_path: Path, name: str) -> Path:
    """The whole page (Streamlit scrolls inside its main block, so the window is made as tall as it)."""
    file = tmp_path / "screenshots" / f"{name}.png"
    file.parent.mkdir(parents=True, exist_ok=True)
    height = min(max(VIEWPORT["height"], page.evaluate(_CONTENT_HEIGHT_JS)), 8000)
    page.set_viewport_size({"width": VIEWPORT["width"], "height": height})
    try:
        page.wait_for_timeout(300)
        page.screenshot(path=str(file))
    finally:
        page.set_viewport_size(VIEWPORT)
    if os.environ.get("KDVIZ_SCREENSHOTS"):
        extra = Path(os.environ["KDVIZ_SCREENSHOTS"])
        extra.mkdir(parents=True, exist_ok=True)
        shutil.copy(file, extra / file.name)
    return file


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "page"


def nav_links(page):
    """The sidebar's page links, once the app has replaced the pages/ folder listing with st.navigation's."""
    links = page.locator('[data-testid="stSidebarNav"] a[data-testid="stSidebarNavLink"]')
    return [(_link_title(links.nth(i)), links.nth(i).get_attribute("href")) for i in range(links.count())]


def _link_title(link) -> str:
    """A link's page title, without its icon."""
    return link.locator('[data-testid="stMarkdownContainer"]').inner_text().strip()


def open_page(page, title: str) -> None:
    links = page.locator('[data-testid="stSidebarNav"] a[data-testid="stSidebarNavLink"]')
    link = links.filter(
        has=page.locator('[data-testid="stMarkdownContainer"]', has_text=re.compile(f"^{re.escape(title)}$"))
    )
    assert link.count() == 1, f"no single link {title!r} in the sidebar navigation: {nav_links(page)}"
    href = link.get_attribute("href")
    link.click()
    page.wait_for_url(href)
    wait_idle(page)
    current = page.locator('[data-testid="stSidebarNav"] a[aria-current="page"]')
    assert current.count() == 1 and _link_title(current) == title, f"clicking {title!r} did not open it"


def widget(page, testid: str, label: str, scope: str = '[data-testid="stMain"]'):
    """The one ``testid`` widget (stSelectbox, stNumberInput...) whose label is exactly ``label``."""
    exact = page.locator(
        '[data-testid="stWidgetLabel"]', has_text=re.compile(f"^\\s*{re.escape(label)}\\s*$")
    )
    found = page.locator(f'{scope} [data-testid="{testid}"]').filter(has=exact)
    assert found.count() == 1, f"expected one {testid} labelled {label!r}, found {found.count()}"
    return found


def _set_number(page, label: str, value: float) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(str(value))
    field.press("Enter")
    wait_idle(page)
    assert float(field.input_value()) == float(value), f"{label!r} did not take {value}"


def _keep_only(page, label: str, keep: str) -> None:
    """Remove every chosen option of the multiselect ``label`` except ``keep``."""
    box = widget(page, "stMultiSelect", label)
    for tag in box.locator("[data-tag]").all_inner_texts():
        if tag.strip() != keep:
            box.get_by_role("button", name=f"Remove {tag.strip()}", exact=True).first.click()
            wait_idle(page)
    chosen = [t.strip() for t in widget(page, "stMultiSelect", label).locator("[data-tag]").all_inner_texts()]
    assert chosen == [keep], f"{label!r} still holds {chosen}"


def _panels(page) -> list[str]:
    """The model panels' titles (Teacher, Student) the main area shows."""
    heads = page.locator('[data-testid="stMain"] h3')
    return [t for t in (h.strip() for h in heads.all_inner_texts()) if t in ("Teacher", "Student")]


def _png(path: Path) -> Path:
    from PIL import Image

    arr = np.random.default_rng(0).integers(0, 256, (60, 100, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


# ------------------------------------------------------------------------------------------- actions
# The main action of a page, by its title in the navigation; pages not named here are only opened.


def _pick_gallery_image(page, n: int) -> None:
    """Click the Attributions gallery's n-th image; the page then names it and shows both panels."""
    picks = page.locator('[data-testid="stMain"] button', has_text=re.compile(r"^#\d+$"))
    target = picks.nth(n).inner_text().strip()
    picks.nth(n).click()
    wait_idle(page)
    page.get_by_text(re.compile(f"^Test image {re.escape(target)}, true class")).wait_for(state="visible")
    assert _panels(page) == ["Teacher", "Student"]


def attributions_action(page, tmp_path: Path) -> None:
    """A gallery image, then an uploaded file: both models' maps each time."""
    assert _panels(page) == ["Teacher", "Student"], "the page opens on a gallery image with both panels"
    _pick_gallery_image(page, 3)
    assert page.get_by_text("map for class").count() == 2
    screenshot(page, tmp_path, "attributions-gallery")
    assert_no_errors(page, "Attributions, a gallery image")

    page.locator('[data-testid="stRadio"]').get_by_text("Upload your own", exact=True).click()
    wait_idle(page)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        str(_png(tmp_path / "wide.png"))
    )
    page.get_by_text("What the models see:").wait_for(state="visible", timeout=PAGE_TIMEOUT_S * 1000)
    wait_idle(page)
    assert page.get_by_text("cropped to its central 60×60 square").count() == 1
    assert _panels(page) == ["Teacher", "Student"]
    screenshot(page, tmp_path, "attributions-upload")


def compare_action(page, tmp_path: Path) -> None:
    """The comparison runs on opening: its agreement scores are shown."""
    labels = page.locator('[data-testid="stMetricLabel"]').all_inner_texts()
    for label in ("Spearman rank correlation", "cosine similarity", "SSIM"):
        assert any(label in text for text in labels), f"no {label!r} score on the Compare page: {labels}"


def ablations_action(page, tmp_path: Path) -> None:
    """A study as small as the form allows: one arm, one seed, one epoch, one batch of images. The
    form's expander opens on its own only while there is nothing to show; with committed study
    summaries (docs/results) it is closed, and a person opens it first."""
    form = page.locator('[data-testid="stExpander"]').filter(has_text="Start a small study").first
    label = page.locator('[data-testid="stWidgetLabel"]', has_text=re.compile(r"^\s*Arms\s*$"))
    arms = page.locator('[data-testid="stMain"] [data-testid="stMultiSelect"]').filter(has=label)
    if not (arms.count() and arms.first.is_visible()):
        form.locator("summary").first.click()
        arms.first.wait_for(state="visible", timeout=10_000)
    _keep_only(page, "Arms", "baseline")
    _set_number(page, "Seeds", 1)
    _set_number(page, "Epochs", 1)
    _set_number(page, "Training images (0: all)", 32)
    _set_number(page, "IG steps (teacher cache)", 2)
    name = page.get_by_label("Study name", exact=True).input_value()
    page.get_by_role("button", name="Start the study").click()
    page.get_by_text(re.compile(f"{re.escape(name)}: done, 1 of 1 runs finished")).wait_for(
        state="visible", timeout=STUDY_TIMEOUT_S * 1000
    )
    wait_idle(page)
    assert page.locator('[data-testid="stDataFrame"]').count() >= 1, "the finished study shows no table"
    screenshot(page, tmp_path, "ablations-study")


def benchmark_action(page, tmp_path: Path) -> None:
    """Latency of the teacher and student in eager PyTorch, with the smallest settings."""
    _keep_only(page, "Runtimes", "eager PyTorch")
    _set_number(page, "Warm-up runs", 0)
    _set_number(page, "Repeats", 3)
    _set_number(page, "Seconds per model at most", 1.0)
    assert page.get_by_text("Press Measure latency").count() == 1
    page.get_by_role("button", name="Measure latency").click()
    page.locator('[data-testid="stMain"] [data-testid="stPlotlyChart"]').first.wait_for(
        state="visible", timeout=PAGE_TIMEOUT_S * 1000
    )
    wait_idle(page)
    assert page.get_by_text("Press Measure latency").count() == 0, "no latency was measured"
    screenshot(page, tmp_path, "benchmark-latency")


ACTIONS = {
    "Attributions": attributions_action,
    "Compare": compare_action,
    "Ablations": ablations_action,
    "Benchmark": benchmark_action,
}


# ------------------------------------------------------------------------------------------- tests
def test_every_page_and_its_main_action(page, tmp_path):
    wait_idle(page)
    assert_no_errors(page, "the start page")
    links = nav_links(page)
    titles = [t for t, _ in links]
    assert len(links) >= 2, f"expected at least two pages in the sidebar navigation, found {titles}"
    assert len(set(titles)) == len(titles), f"duplicate page titles in the navigation: {titles}"
    for title, _ in links:
        t0 = time.monotonic()
        open_page(page, title)
        print(f"{title}: opened in {time.monotonic() - t0:.1f} s")
        main = page.locator('[data-testid="stMainBlockContainer"]')
        assert main.locator("h1").count() >= 1, f"page {title!r} shows no title"
        screenshot(page, tmp_path, slug(title))
        assert_no_errors(page, f"page {title!r}")
        if title in ACTIONS:
            t0 = time.monotonic()
            ACTIONS[title](page, tmp_path)
            print(f"{title}: main action in {time.monotonic() - t0:.1f} s")
            assert_no_errors(page, f"page {title!r} after its main action")
    # and back to the first one: state kept across pages must not break it
    open_page(page, titles[0])
    assert_no_errors(page, f"page {titles[0]!r} (second visit)")


def _start_training(page, epochs: int, limit: int, name: str | None = None) -> str:
    """Fill the Models page's Train tab for a small resnet20 and press Start; the run's name."""
    open_page(page, "Models")
    page.get_by_role("tab", name="Train").click()
    wait_idle(page)
    arch = widget(page, "stSelectbox", "Architecture")
    arch.get_by_role("combobox").click()
    page.get_by_role("option", name="resnet20", exact=True).click()
    wait_idle(page)
    chosen = arch.get_by_role("combobox").input_value()
    assert chosen == "resnet20", f"architecture not set to resnet20: {chosen!r}"
    _set_number(page, "Epochs", epochs)
    page.get_by_text("Seed and subset", exact=True).click()
    _set_number(page, "Training images (0: all)", limit)
    if name:
        page.get_by_label("Run name", exact=True).fill(name)
        page.get_by_label("Run name", exact=True).press("Enter")
        wait_idle(page)
    run_name = page.get_by_label("Run name", exact=True).input_value()
    assert name == run_name if name else "resnet20" in run_name
    page.get_by_role("button", name="Start training").click()
    return run_name


@pytest.mark.slow
def test_models_page_trains_a_model(page, server, tmp_path):
    wait_idle(page)
    run_name = _start_training(page, epochs=1, limit=128)
    page.get_by_text("Training finished", exact=False).wait_for(
        state="visible", timeout=TRAIN_TIMEOUT_S * 1000
    )
    wait_idle(page)
    screenshot(page, tmp_path, "models-trained")
    assert_no_errors(page, "the Models page after training")

    # the new run is in the workspace and listed on the Runs tab
    assert (server.home / run_name / "card.json").exists(), f"no checkpoint for {run_name}"
    page.get_by_role("tab", name="Runs").click()
    wait_idle(page)
    assert page.locator('[data-testid="stDataFrame"]').count() == 1, "the Runs tab shows no table"
    picked = widget(page, "stSelectbox", "Run").get_by_role("combobox").input_value()
    assert picked == run_name, f"the Runs tab does not offer {run_name}: it shows {picked!r}"
    assert_no_errors(page, "the Runs tab after training")


def _sidebar_choice(page, role: str) -> str:
    return (
        widget(page, "stSelectbox", role, scope='[data-testid="stSidebar"]')
        .get_by_role("combobox")
        .input_value()
    )


def _choose_in_sidebar(page, role: str, label: str) -> None:
    widget(page, "stSelectbox", role, scope='[data-testid="stSidebar"]').get_by_role("combobox").click()
    page.get_by_role("option", name=label, exact=True).click()
    wait_idle(page)
    assert _sidebar_choice(page, role) == label


def _assert_still_training(page) -> None:
    """The Stop button is there (the training fragment redraws itself every second: allow a redraw)."""
    try:
        page.get_by_role("button", name="Stop training").wait_for(state="visible", timeout=15_000)
    except Exception:  # noqa: BLE001 - Playwright's timeout: say what the page shows instead
        shown = page.locator('[data-testid="stMain"]').inner_text()[:2000]
        raise AssertionError(f"the training is no longer running; the page shows:\n{shown}") from None


@pytest.mark.slow
def test_two_browser_sessions_one_training_one_browsing(sessions, tmp_path):
    """Two people on one server: neither blocks the other, neither sees the other's job or choices."""
    trainer, viewer = sessions(), sessions()
    wait_idle(trainer)
    wait_idle(viewer)
    # the workspace is the module's: other tests' runs may be the newest; the viewer picks the shipped pair
    _choose_in_sidebar(viewer, "Teacher", "digits_teacher · asset")
    _choose_in_sidebar(viewer, "Student", "digits_student · asset")
    run_name = _start_training(trainer, epochs=100, limit=128, name="two-sessions")
    trainer.get_by_role("button", name="Stop training").wait_for(state="visible")

    # while the first trains, the second browses attributions: its page completes
    open_page(viewer, "Attributions")
    _pick_gallery_image(viewer, 5)
    screenshot(viewer, tmp_path, "sessions-viewer")
    assert_no_errors(viewer, "the second session's Attributions page")
    _assert_still_training(trainer)

    # the second session sees no job on its Models page
    open_page(viewer, "Models")
    viewer.get_by_role("tab", name="Train").click()
    wait_idle(viewer)
    assert viewer.get_by_role("button", name="Stop training").count() == 0
    assert viewer.locator('[data-testid="stMain"] [data-testid="stProgress"]').count() == 0
    assert viewer.get_by_role("button", name="Start training").is_enabled()

    # the first stops its own job once an epoch is finished, and makes that run its student ...
    trainer.get_by_text("last test accuracy", exact=False).wait_for(
        state="visible", timeout=TRAIN_TIMEOUT_S * 1000
    )
    trainer.get_by_role("button", name="Stop training").click()
    trainer.get_by_text("Stopped after", exact=False).wait_for(state="visible", timeout=60_000)
    wait_idle(trainer)
    trainer.get_by_role("tab", name="Runs").click()
    wait_idle(trainer)
    runs = widget(trainer, "stSelectbox", "Run").get_by_role("combobox")
    runs.click()
    trainer.get_by_role("option", name=run_name, exact=True).click()
    wait_idle(trainer)
    assert runs.input_value() == run_name
    trainer.get_by_role("button", name="Use as student").click()
    wait_idle(trainer)
    assert _sidebar_choice(trainer, "Student") == run_name
    screenshot(trainer, tmp_path, "sessions-trainer")
    assert_no_errors(trainer, "the training session after stopping")

    # ... which changes nothing for the second
    open_page(viewer, "Overview")
    assert _sidebar_choice(viewer, "Student") == "digits_student · asset"
    assert_no_errors(viewer, "the second session at the end")


# ------------------------------------------------------------------ a fresh machine, no CIFAR-10 images


@pytest.fixture(scope="module")
def photo_server(browser, tmp_path_factory):
    """The app as a new user meets it: no data anywhere, the default data set (CIFAR-10)."""
    folder = tmp_path_factory.mktemp("photo-server")
    (folder / "no-data").mkdir()
    env = {"KDVIZ_DATA": str(folder / "no-data"), "KDVIZ_DEFAULT_DATA": "cifar10"}
    yield from _serve(folder, env)


def test_a_new_user_sees_both_ig_maps_of_the_cat_in_one_click(browser, photo_server, tmp_path):
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.log = BrowserLog(page)
    page.server_log = photo_server.log
    try:
        page.goto(photo_server.url)
        wait_idle(page)
        open_page(page, "Attributions")  # the one click
        wait_idle(page)
        assert_no_errors(page, "Attributions, fresh machine")
        assert sorted(_panels(page)) == ["Student", "Teacher"]
        main = page.locator('[data-testid="stMain"]').inner_text()
        assert "Chelsea the cat" in main
        classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
        assert any(c in main for c in classes)
        screenshot(page, tmp_path, "fresh-machine-cat")
    finally:
        context.close()
