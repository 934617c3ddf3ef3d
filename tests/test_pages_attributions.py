"""The Attributions and Compare pages, driven headless with Streamlit's AppTest.

Every test opens the whole app (``app.py``: navigation and the shared sidebar), switches to a page
with the default selection (the built-in digits and the teacher and student in ``assets/``), drives
its widgets and checks what the page shows. The attribution cache starts empty in each test.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from apptest_helpers import assert_clean
from streamlit.testing.v1 import AppTest

from kdviz.attribution import METHODS

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
TEACHER = ROOT / "assets" / "digits_teacher"
STUDENT = ROOT / "assets" / "digits_student"
CMP_METRICS = ["Spearman rank correlation", "cosine similarity", "top-k % intersection over union", "SSIM"]
SANITY = "Spearman, trained vs random teacher"

pytestmark = pytest.mark.slow


# ----------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def digits():
    from kdviz.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="module")
def gallery_predictions(digits):
    """Each asset model's predictions on the test set, computed here, not by the page."""
    from kdviz.models.checkpoints import load_model
    from kdviz.models.evaluate import predict

    out = {}
    for role, path in (("teacher", TEACHER), ("student", STUDENT)):
        loaded = load_model(path)
        out[role] = predict(loaded.model, digits.test, mean=loaded.card.mean, std=loaded.card.std).predicted
    return out


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty on-disk attribution cache, and a process-wide cache object that reads it."""
    monkeypatch.setenv("KDVIZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("kdviz.attribution.cache._DEFAULT_CACHE", None)
    return tmp_path / "cache"


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=240).run()
    assert not at.exception, [e.value for e in at.exception]
    at.switch_page(page).run()
    assert_clean(at)
    return at


def captions(at) -> list[str]:
    return [c.value for c in at.caption]


def panels(at: AppTest) -> dict:
    """The model panels: the columns whose first subheader is Teacher or Student."""
    out = {}
    for col in at.columns:
        if len(col.subheader) and col.subheader[0].value in ("Teacher", "Student"):
            out[col.subheader[0].value] = col
    return out


def panel_markdown(col) -> str:
    texts = [m.value for m in col.markdown if "map for class" in m.value]
    assert len(texts) == 1, [m.value for m in col.markdown]
    return texts[0]


def panel_image_captions(col) -> list[str]:
    return [c for img in col.get("image") for c in img.captions]


def completeness_texts(at) -> list[str]:
    return [t for t in captions(at) + [w.value for w in at.warning] if "Completeness" in t]


def gallery_indices(at: AppTest) -> list[int]:
    return [
        int(b.key.removeprefix("attr_pick_")) for b in at.button if (b.key or "").startswith("attr_pick_")
    ]


def match_count(at: AppTest) -> tuple[int, int]:
    found = [re.fullmatch(r"(\d+) of (\d+) test images match\.", c) for c in captions(at)]
    found = [m for m in found if m]
    assert len(found) == 1, captions(at)
    return int(found[0].group(1)), int(found[0].group(2))


def chosen_caption(at: AppTest) -> re.Match:
    found = [
        m
        for m in (re.fullmatch(r"Test image #(\d+), true class \*\*(.+)\*\*\.", c) for c in captions(at))
        if m
    ]
    assert len(found) == 1, captions(at)
    return found[0]


def png(mode: str, size: tuple[int, int]) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    channels = len(mode)
    arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    if mode == "RGBA":
        arr[..., 3] = 0
        arr[size[1] // 4 : 3 * size[1] // 4, size[0] // 4 : 3 * size[0] // 4, 3] = 255
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


def metric_values(at: AppTest) -> dict[str, float]:
    return {m.label: float(m.value) for m in at.metric}


# ----------------------------------------------------------------------------------- Attributions


def test_attributions_opens_with_both_panels(fresh_cache, digits):
    at = open_page("pages/attributions.py")
    assert at.title[0].value == "Attributions"
    assert match_count(at) == (360, 360)
    assert len(gallery_indices(at)) == 24
    m = chosen_caption(at)
    index = int(m.group(1))
    assert m.group(2) == digits.class_names[int(digits.test.labels[index])]

    found = panels(at)
    assert set(found) == {"Teacher", "Student"}
    for col in found.values():
        text = panel_markdown(col)
        pred = re.match(r"\*\*(.+?)\*\*", text).group(1)
        assert pred in digits.class_names
        assert f"map for class *{pred}*" in text  # the default target is the predicted class
        assert "from the cache" not in text  # the cache started empty
        assert panel_image_captions(col) == ["input", METHODS["ig"], "overlay"]
        assert len(col.get("plotly_chart")) == 2  # hover map and top-5 bars
    texts = completeness_texts(at)
    assert len(texts) == 2 and all(t.startswith("Completeness: the map sums to") for t in texts)
    assert "Colour scale: shared by both maps (colours compare)." in captions(at)
    assert any(fresh_cache.rglob("*.npz")), "maps should be written to the fresh KDVIZ_CACHE"

    labels = {b.label for b in at.get("download_button")}
    assert {"Download the figure (PNG)", "Download the maps (NumPy .npz)"} <= labels

    at.run()  # the same image again: both maps now come from the cache
    assert_clean(at)
    assert all("from the cache" in panel_markdown(col) for col in panels(at).values())


def test_attributions_pick_a_gallery_image(fresh_cache, digits):
    at = open_page("pages/attributions.py")
    shown = gallery_indices(at)
    first = int(chosen_caption(at).group(1))
    assert first == shown[0]
    target = next(i for i in shown[5:] if digits.test.labels[i] != digits.test.labels[first])
    at.slider(key="attr_steps").set_value(4)
    at.button(key=f"attr_pick_{target}").click().run()
    assert_clean(at)
    m = chosen_caption(at)
    assert int(m.group(1)) == target
    assert m.group(2) == digits.class_names[int(digits.test.labels[target])]
    assert at.button(key=f"attr_pick_{target}").proto.type == "primary"
    assert at.button(key=f"attr_pick_{first}").proto.type == "secondary"
    for col in panels(at).values():
        pred = re.match(r"\*\*(.+?)\*\*", panel_markdown(col)).group(1)
        assert pred in digits.class_names


def test_attributions_filters(fresh_cache, digits, gallery_predictions):
    at = open_page("pages/attributions.py")
    at.slider(key="attr_steps").set_value(4)
    k = 3
    at.selectbox(key="attr_class").set_value(k).run()
    assert_clean(at)
    expected = int((digits.test.labels == k).sum())
    assert match_count(at) == (expected, 360)
    shown = gallery_indices(at)
    assert shown and all(digits.test.labels[i] == k for i in shown)
    assert len(shown) == min(24, expected)
    m = chosen_caption(at)
    assert int(m.group(1)) in shown and m.group(2) == digits.class_names[k]

    at.selectbox(key="attr_class").set_value("all")
    at.selectbox(key="attr_filter").set_value("teacher wrong").run()
    assert_clean(at)
    wrong = np.flatnonzero(gallery_predictions["teacher"] != digits.test.labels)
    if len(wrong) == 0:
        assert match_count(at) == (0, 360)
        assert any("No image matches" in i.value for i in at.info)
        assert not panels(at)
    else:
        assert match_count(at) == (len(wrong), 360)
        assert set(gallery_indices(at)) == set(wrong[:24].tolist())
        assert int(chosen_caption(at).group(1)) in set(wrong.tolist())
        teacher = panel_markdown(panels(at)["Teacher"])
        assert "✗ (true:" in teacher  # the teacher is wrong on every image this filter keeps

    at.selectbox(key="attr_filter").set_value("teacher and student disagree").run()
    assert_clean(at)
    disagree = int((gallery_predictions["teacher"] != gallery_predictions["student"]).sum())
    assert match_count(at) == (disagree, 360)
    if disagree == 0:
        assert any("No image matches" in i.value for i in at.info)


def test_attributions_every_method(fresh_cache):
    at = open_page("pages/attributions.py")
    for method in ("saliency", "smoothgrad", "gradcam", "occlusion"):
        at.selectbox(key="attr_method").set_value(method).run()
        assert_clean(at)
        found = panels(at)
        assert set(found) == {"Teacher", "Student"}, method
        for col in found.values():
            assert panel_image_captions(col) == ["input", METHODS[method], "overlay"]
        assert completeness_texts(at) == [], method
        assert at.slider(key="attr_steps").disabled  # IG's settings are greyed out for other methods
    at.selectbox(key="attr_method").set_value("ig").run()
    assert_clean(at)
    assert not at.slider(key="attr_steps").disabled
    assert len(completeness_texts(at)) == 2
    assert all("from the cache" in panel_markdown(col) for col in panels(at).values())  # the first run's maps


def test_attributions_scale_and_target(fresh_cache, digits):
    at = open_page("pages/attributions.py")
    at.slider(key="attr_steps").set_value(4)
    at.toggle(key="attr_shared").set_value(False).run()
    assert_clean(at)
    assert "Colour scale: each map on its own 99th percentile." in captions(at)
    assert not any("shared" in c for c in captions(at))

    at.selectbox(key="attr_target_kind").set_value("choose…").run()
    assert_clean(at)
    k = 7
    at.selectbox(key="attr_target_class").set_value(k).run()
    assert_clean(at)
    for col in panels(at).values():
        assert f"map for class *{digits.class_names[k]}*" in panel_markdown(col)

    at.selectbox(key="attr_target_kind").set_value("true").run()
    assert_clean(at)
    true_name = chosen_caption(at).group(2)
    for col in panels(at).values():
        assert f"map for class *{true_name}*" in panel_markdown(col)


def test_attributions_upload(fresh_cache, digits):
    at = open_page("pages/attributions.py")
    at.slider(key="attr_steps").set_value(4)
    at.radio(key="attr_source").set_value("upload").run()
    assert_clean(at)
    assert any("Upload an image" in i.value for i in at.info)
    assert not panels(at)

    uploader = at.file_uploader(key="attr_upload")
    uploader.set_value(("wide.png", png("RGB", (100, 60)), "image/png")).run()
    assert_clean(at)
    notes = [m.value for m in at.markdown if m.value.startswith("**What the models see:**")]
    assert len(notes) == 1
    assert "cropped to its central 60×60 square" in notes[0]
    assert "resized from 60×60 to 32×32" in notes[0]
    image_captions = [c for img in at.get("image") for c in img.captions]
    assert "wide.png: 100×60 PNG" in image_captions
    assert "model input, 32×32" in image_captions
    found = panels(at)
    assert set(found) == {"Teacher", "Student"}
    for col in found.values():
        text = panel_markdown(col)
        assert "✓" not in text and "✗" not in text  # an upload has no true class
    assert {"Download the figure (PNG)", "Download the maps (NumPy .npz)"} <= {
        b.label for b in at.get("download_button")
    }

    at.file_uploader(key="attr_upload").set_value(
        ("broken.png", np.random.default_rng(1).bytes(3000), "image/png")
    ).run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("Cannot use this file: broken.png")
    assert not panels(at)

    at.file_uploader(key="attr_upload").set_value(("clear.png", png("RGBA", (40, 40)), "image/png")).run()
    assert_clean(at)
    notes = [m.value for m in at.markdown if m.value.startswith("**What the models see:**")]
    assert len(notes) == 1 and "transparent pixels shown on white" in notes[0]
    assert "cropped" not in notes[0]
    assert set(panels(at)) == {"Teacher", "Student"}

    at.radio(key="attr_source").set_value("data").run()
    assert_clean(at)
    assert match_count(at) == (360, 360)


def test_attributions_upload_goes_through_the_servers_compute_queue(fresh_cache, digits):
    """Both maps of an upload come from the process's scheduler (one call per model); looking again
    reads the cache and queues nothing."""
    from kdviz.core.scheduler import SCHEDULER

    at = open_page("pages/attributions.py")
    at.slider(key="attr_steps").set_value(4)
    at.radio(key="attr_source").set_value("upload").run()
    before = SCHEDULER.calls
    at.file_uploader(key="attr_upload").set_value(("mine.png", png("RGB", (48, 40)), "image/png")).run()
    assert_clean(at)
    assert set(panels(at)) == {"Teacher", "Student"}
    new_calls = SCHEDULER.served[-(SCHEDULER.calls - before) :] if SCHEDULER.calls > before else []
    attribution = [c for c in new_calls if c.kind == "attribution"]
    assert len(attribution) == 2, new_calls  # the teacher's call and the student's
    assert all(c.size == 1 for c in attribution)
    assert not any("compute queue" in c for c in captions(at))  # the wait's line is gone once done

    before = SCHEDULER.calls
    at.run()
    assert_clean(at)
    assert SCHEDULER.calls == before
    assert all("from the cache" in panel_markdown(col) for col in panels(at).values())


# ----------------------------------------------------------------------------------- Compare


def check_compare(at: AppTest, n: int) -> dict[str, float]:
    values = metric_values(at)
    assert set(CMP_METRICS) | {SANITY} == set(values), values
    for label in CMP_METRICS + [SANITY]:
        assert -1.0 <= values[label] <= 1.0, (label, values[label])
    table = at.dataframe[0].value
    assert len(table) == n
    assert list(table.columns[:4]) == ["image", "class", "teacher", "student"]
    ids = [c.proto.id for c in at.get("plotly_chart")]
    assert any(i.endswith("cmp_box") for i in ids) and any(i.endswith("cmp_faith") for i in ids)
    assert [s.value for s in at.subheader] == ["Where they disagree most"]
    worst = [c for img in at.get("image") for c in img.captions if re.fullmatch(r"#\d+: .+", c)]
    assert len(worst) == min(6, n)
    assert {int(c[1:].split(":")[0]) for c in worst} <= set(table["image"].tolist())
    return values


def test_compare_default(fresh_cache):
    at = open_page("pages/compare.py")
    assert [h.value for h in at.header] == ["Agreement", "Faithfulness", "Sanity check"]
    check_compare(at, 16)
    box = next(c for c in at.get("plotly_chart") if c.proto.id.endswith("cmp_box"))
    spec = json.loads(box.proto.spec)
    assert spec["data"][0]["type"] == "box"
    assert "Spearman rank correlation per class" in json.dumps(spec["layout"]["title"])
    sanity = [c for img in at.get("image") for c in img.captions if c.startswith("random weights")]
    assert len(sanity) == 4


def test_compare_method_n_and_class(fresh_cache, digits):
    at = open_page("pages/compare.py")
    before = check_compare(at, 16)
    at.selectbox(key="cmp_method").set_value("saliency")
    at.slider(key="cmp_n").set_value(8).run()
    assert_clean(at)
    after = check_compare(at, 8)
    assert at.slider(key="cmp_steps").disabled
    assert [after[k] for k in CMP_METRICS] != [before[k] for k in CMP_METRICS]

    at.selectbox(key="cmp_how").set_value("class").run()
    assert_clean(at)
    at.selectbox(key="cmp_class").set_value(3).run()
    assert_clean(at)
    check_compare(at, min(8, int((digits.test.labels == 3).sum())))
    table = at.dataframe[0].value
    assert set(table["class"]) == {digits.class_names[3]}
    assert all(digits.test.labels[i] == 3 for i in table["image"])


def test_compare_disagree(fresh_cache, digits, gallery_predictions):
    at = open_page("pages/compare.py")
    at.selectbox(key="cmp_method").set_value("saliency")
    at.selectbox(key="cmp_how").set_value("disagree").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error
    differ = np.flatnonzero(gallery_predictions["teacher"] != gallery_predictions["student"])
    if len(differ) == 0:
        assert any("No images match" in i.value for i in at.info)
        assert not at.metric
    else:
        check_compare(at, min(16, len(differ)))
        table = at.dataframe[0].value
        assert set(table["image"]) <= set(differ.tolist())
        assert (table["teacher"] != table["student"]).all()


def test_a_busy_server_serves_lighter_maps_says_so_and_offers_the_full_steps(
    fresh_cache, digits, monkeypatch
):
    """While others' maps wait in the queue, an upload's maps use fewer IG steps (the default only:
    a number the person chose is kept); the page says so, and its button computes the full maps."""
    from kdviz.attribution import BUSY_IG_STEPS, DEFAULT_IG_STEPS, AttributionOptions, under_load
    from kdviz.core.scheduler import SCHEDULER
    from kdviz.ui import compute

    assert under_load(AttributionOptions()).steps == BUSY_IG_STEPS < DEFAULT_IG_STEPS
    assert under_load(AttributionOptions(steps=40)).steps == 40
    assert under_load(AttributionOptions(method="saliency")) == AttributionOptions(method="saliency")

    monkeypatch.setattr(compute, "others_waiting", lambda kind: 3)  # three other people waiting
    at = open_page("pages/attributions.py")
    at.radio(key="attr_source").set_value("upload").run()
    at.file_uploader(key="attr_upload").set_value(("mine.png", png("RGB", (48, 40)), "image/png")).run()
    assert_clean(at)
    assert set(panels(at)) == {"Teacher", "Student"}
    busy = [i.value for i in at.info if "The server is busy" in i.value]
    assert len(busy) == 1 and f"use {BUSY_IG_STEPS} IG steps instead of {DEFAULT_IG_STEPS}" in busy[0]

    before = SCHEDULER.calls
    at.button(key="attr_full_steps").click().run()
    assert_clean(at)
    assert not [i for i in at.info if "The server is busy" in i.value]
    assert SCHEDULER.calls - before == 2  # both maps made again, at the full steps
    assert set(panels(at)) == {"Teacher", "Student"}

    at.run()  # still busy, but the full maps are cached now: they are shown, nothing is queued
    assert not [i for i in at.info if "The server is busy" in i.value]
    assert all("from the cache" in panel_markdown(col) for col in panels(at).values())

    at.slider(key="attr_steps").set_value(40).run()  # a number the person chose is kept when busy
    assert_clean(at)
    assert not [i for i in at.info if "The server is busy" in i.value]


def test_maps_asked_for_when_the_queue_looked_empty_are_lighter_if_others_wait_when_they_start(
    fresh_cache, digits, monkeypatch
):
    """People who upload at the same moment all find the queue empty when their pages ask; the
    server decides as it starts each map, so these maps still come at the busy steps, and say so."""
    import time

    from kdviz.attribution import BUSY_IG_STEPS, DEFAULT_IG_STEPS
    from kdviz.core.scheduler import SCHEDULER
    from kdviz.ui import compute

    monkeypatch.setattr(compute, "others_waiting", lambda kind: 0)  # the page sees nobody
    at = open_page("pages/attributions.py")
    at.radio(key="attr_source").set_value("upload").run()
    assert_clean(at)

    def hold(items):  # another person's map, running until this page's maps are queued behind it
        deadline = time.monotonic() + 30
        while SCHEDULER.others_waiting("third", "attribution") < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        return items

    others = [SCHEDULER.submit(hold, 0, key="someone's map", session="someone", kind="attribution")]
    others += [  # a third person's two maps, waiting
        SCHEDULER.submit(lambda items: items, i, key=("third", i), session="third", kind="attribution")
        for i in (1, 2)
    ]
    at.file_uploader(key="attr_upload").set_value(("mine.png", png("RGB", (40, 48)), "image/png")).run()
    assert_clean(at)
    assert [t.result(30) for t in others] == [0, 1, 2]
    assert set(panels(at)) == {"Teacher", "Student"}
    busy = [i.value for i in at.info if "The server is busy" in i.value]
    assert len(busy) == 1 and f"use {BUSY_IG_STEPS} IG steps instead of {DEFAULT_IG_STEPS}" in busy[0]
    mine = [s for s in SCHEDULER.served if s.sessions == ["test session id"]]
    assert [s.lighter for s in mine[-2:]] == [True, True]

    calls = SCHEDULER.calls
    at.slider(key="attr_strength").set_value(0.3).run()  # the queue is empty now: a rerun keeps
    assert_clean(at)  # the lighter maps (the button asks for the full ones) and queues nothing
    assert SCHEDULER.calls == calls
    assert [i for i in at.info if "The server is busy" in i.value]
