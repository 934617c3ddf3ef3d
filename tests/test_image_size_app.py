"""A 96-px data set end to end: the CLI's contracts with ``--image-size`` and every page of the app.

One module-wide workspace holds a teacher (registered) and a student (``timm:``) trained (one short
epoch) on the built-in shapes read at 96 px; the pages are opened with the sidebar set to that data
set and size, and with another size, where the 96-px models are not offered and the sidebar says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from apptest_helpers import assert_clean
from PIL import Image
from streamlit.testing.v1 import AppTest
from test_cli import kdviz, one_json, one_line_error

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
PAGES = (
    "pages/overview.py",
    "pages/lesson.py",
    "pages/attributions.py",
    "pages/compare.py",
    "pages/models.py",
    "pages/ablations.py",
    "pages/benchmark.py",
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A teacher and a student at 96 px, and the shapes data set read at 96 px; the student is a
    ``timm:`` model, so every page is also walked with a library architecture (issue 15's test)."""
    from kdviz.data import load_dataset
    from kdviz.training.loop import TrainConfig
    from kdviz.training.workflows import TrainRequest, train_run
    from kdviz.training.workspace import Workspace

    home = tmp_path_factory.mktemp("home96")
    old = os.environ.get("KDVIZ_HOME")
    os.environ["KDVIZ_HOME"] = str(home)
    try:
        data = load_dataset("shapes", image_size=96)
        cfg = dict(epochs=1, batch_size=32, train_limit=64, eval_limit=40)
        for role, arch in (("teacher", "airnet_student_8x"), ("student", "timm:mobilenetv3_small_050")):
            request = TrainRequest(
                name=f"{role}96", arch=arch, dataset=data.source, role=role, config=TrainConfig(**cfg)
            )
            train_run(request, workspace=Workspace(home), data=data)
    finally:
        if old is None:
            os.environ.pop("KDVIZ_HOME", None)
        else:
            os.environ["KDVIZ_HOME"] = old
    return home


@pytest.fixture
def home(workspace, monkeypatch):
    monkeypatch.setenv("KDVIZ_HOME", str(workspace))
    return workspace


# ---------------------------------------------------------------------------------------- CLI


def test_cards_record_96_px(home):
    for name in ("teacher96", "student96"):
        card = json.loads((home / name / "card.json").read_text())
        assert card["image_size"] == 96 and card["dataset"] == "shapes@96"


def test_cli_data_and_eval_at_96(home):
    listing = one_json(kdviz("data", "--json"))
    assert "shapes" in [s["source"] for s in listing["sources"]]  # built in, always there
    summary = one_json(kdviz("data", "shapes", "--image-size", "96", "--json"))
    assert summary["image_size"] == 96 and summary["source"] == "shapes@96" and summary["train"] == 240
    result = one_json(
        kdviz("eval", "--weights", "teacher96", "--data", "shapes", "--image-size", "96", "--json")
    )
    assert result["image_size"] == 96 and result["n"] == 80 and 0 <= result["accuracy"] <= 1
    same = one_json(kdviz("eval", "--weights", "teacher96", "--data", "shapes@96", "--json"))
    assert same["accuracy"] == result["accuracy"]  # SOURCE@PX is the same as --image-size PX


def test_cli_models_count_macs_at_the_size():
    small = {r["name"]: r for r in one_json(kdviz("models", "--json"))}
    large = {r["name"]: r for r in one_json(kdviz("models", "--image-size", "96", "--json"))}
    for name in ("resnet20", "mnv2_student_4x", "airnet_student_8x"):
        assert large[name]["image_size"] == 96 and large[name]["params"] == small[name]["params"]
        assert large[name]["macs"] > 8 * small[name]["macs"]  # (96 / 32)² = 9 times the pixels
    assert "8 to 512" in one_line_error(kdviz("models", "--image-size", "1000"))


def test_cli_eval_of_a_model_with_data_of_another_size_says_so(home):
    line = one_line_error(kdviz("eval", "--weights", "teacher96", "--data", "shapes", "--json"))
    assert "96×96" in line and "32×32" in line and "--image-size 96" in line
    line = one_line_error(kdviz("eval", "--weights", "teacher96", "--data", "shapes", "--image-size", "4"))
    assert "--image-size" in line and "8 to 512" in line


def test_cli_attribute_at_96(home, tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8)).save(photo)
    out = tmp_path / "map.npy"
    result = one_json(
        kdviz(
            "attribute", "--weights", "student96", "--image", photo, "--image-size", "96", "--steps", "8",
            "--out", out, "--json",
        )
    )  # fmt: skip
    assert result["shape"] == [3, 96, 96] and np.load(out).shape == (3, 96, 96)
    assert any("96×96" in note for note in result["image_notes"])  # resized to the model's size, said so
    line = one_line_error(
        kdviz("attribute", "--weights", "student96", "--image", photo, "--image-size", "32")
    )
    assert "96×96" in line and "--image-size 32" in line


# -------------------------------------------------------------------------------------- pages


def open_app(size: int) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=300).run()
    assert_clean(at)
    at.sidebar.selectbox(key="sidebar_data_kind").set_value("Built-in shapes (offline, any size)").run()
    at.sidebar.selectbox(key="sidebar_image_size").set_value(size).run()
    assert_clean(at)
    return at


def test_every_page_opens_and_works_at_96_px(home):
    at = open_app(96)
    assert Path(at.sidebar.selectbox(key="sidebar_teacher").value).name == "teacher96"
    assert Path(at.sidebar.selectbox(key="sidebar_student").value).name == "student96"
    from kdviz.models.checkpoints import read_card

    student = read_card(home / "student96")
    assert student.arch == "timm:mobilenetv3_small_050" and student.image_size == 96
    shown = {m.label: m.value for m in at.metric}
    assert shown["Training images"] == "240" and shown["Test images"] == "80"
    for page in PAGES:
        at.switch_page(page).run()
        assert_clean(at)
        assert at.sidebar.selectbox(key="sidebar_image_size").value == 96, page  # the size holds
    at.switch_page("pages/attributions.py").run()
    assert_clean(at)
    assert {"Teacher", "Student"} <= {s.value for s in at.subheader}
    # both maps were computed at 96 px: each panel states IG's completeness
    texts = [c.value for c in at.caption] + [w.value for w in at.warning]
    assert sum("Completeness: the map sums to" in t for t in texts) == 2, texts


def test_models_of_another_size_are_not_offered_and_the_sidebar_says_so(home):
    at = open_app(32)
    for role in ("teacher", "student"):  # no shapes model at 32 px: none is offered
        assert not [s for s in at.sidebar.selectbox if s.key == f"sidebar_{role}"]
    notes = " ".join(c.value for c in at.sidebar.caption)
    assert "take other sizes (96×96 px)" in notes
    at.session_state["kdviz_pending_teacher"] = str(home / "teacher96")  # "use as teacher" on a page
    at.run()
    warnings = " ".join(w.value for w in at.sidebar.warning)
    assert "teacher96" in warnings and "takes 96×96 images" in warnings and "32×32" in warnings


def test_cli_attribute_at_224_shows_progress_and_stops_on_ctrl_c(tmp_path):
    """A file without a card is read at the size it is told; its IG bar moves and Ctrl-C ends it."""
    import signal
    import subprocess
    import sys

    from safetensors.torch import save_file

    from kdviz.models import create_model

    weights = tmp_path / "tiny.safetensors"
    save_file(create_model("airnet_student_64x", num_classes=10).state_dict(), str(weights))
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 300, 3), dtype=np.uint8)).save(photo)
    args = ["attribute", "--weights", weights, "--arch", "airnet_student_64x", "--image", photo]
    args += ["--image-size", "224", "--steps", "128", "--no-cache"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kdviz", *map(str, args)],
        cwd=ROOT,
        env={**os.environ, "KDVIZ_DEVICE": "cpu"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen = ""
    while "ig 224×224" not in seen:  # the bar names the method and the size
        char = proc.stderr.read(1)
        assert char, f"ended before its progress bar: {seen}"
        seen += char
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, (out, seen + err)
    assert "stopping after this step" in seen + err and not out.strip()
