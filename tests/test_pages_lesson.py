"""The Lesson page, presentation mode, URL state and sample photos, driven headless with AppTest.

Every test opens the whole app (``app.py``), switches to a page with the default selection (the
built-in digits and the teacher and student in ``assets/``), drives its widgets and checks what is
shown against numbers computed here, not by the page.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from apptest_helpers import assert_clean
from streamlit.testing.v1 import AppTest

from conftest import PRETRAINED, pretrained, require_shared
from kdviz.attribution import METHODS
from kdviz.ui.lesson import STEPS

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
TEACHER = ROOT / "assets" / "digits_teacher"
STUDENT = ROOT / "assets" / "digits_student"

# ----------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def digits():
    from kdviz.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="module")
def models():
    from kdviz.models.checkpoints import load_model

    return {role: load_model(path) for role, path in (("teacher", TEACHER), ("student", STUDENT))}


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty on-disk attribution cache, and a process-wide cache object that reads it."""
    monkeypatch.setenv("KDVIZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("kdviz.attribution.cache._DEFAULT_CACHE", None)
    return tmp_path / "cache"


def open_page(page: str, query: dict | None = None) -> AppTest:
    """The app as a link with ``query`` opens it: the parameters are there from the first run."""
    at = AppTest.from_file(str(APP), default_timeout=240)
    at.query_params.update(query or {})
    at.run()
    assert_clean(at)
    at.switch_page(page).run()
    assert_clean(at)
    return at


def progress(at: AppTest) -> str:
    texts = [p.proto.text for p in at.get("progress") if p.proto.text.startswith("Step ")]
    assert len(texts) == 1, texts
    return texts[0]


def chart(at: AppTest, key: str) -> dict:
    found = [c for c in at.get("plotly_chart") if c.proto.id.endswith(key)]
    assert len(found) == 1, [c.proto.id for c in at.get("plotly_chart")]
    return json.loads(found[0].proto.spec)


def values(v) -> list:
    """A Plotly array as a list: Plotly 6 writes numpy arrays as {"dtype", "bdata"} (base64)."""
    if isinstance(v, dict) and "bdata" in v:
        import base64

        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])).tolist()
    return list(v)


def image_rows(at: AppTest) -> list[list[str]]:
    """The captions of each image element, in page order (one element holds a row of images)."""
    return [list(img.captions) for img in at.get("image")]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def number(text: str) -> float:
    return float(re.search(r"[-+]?\d[\d,]*\.?\d*", text).group(0).replace(",", ""))


def captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def teacher_view(models, image: np.ndarray, baseline: str = "zero"):
    """The teacher's prediction, and its score at the image and at the baseline, computed here."""
    from kdviz.attribution import make_baseline

    loaded = models["teacher"]
    x = loaded.preprocess(image)
    with torch.no_grad():
        logits = loaded.model.eval()(x)[0]
        k = int(logits.argmax())
        base = loaded.model(make_baseline(x, baseline, loaded.card.mean, loaded.card.std))[0, k]
    return k, float(logits[k]), float(base), torch.softmax(logits, 0).numpy()


# ----------------------------------------------------------------------------------- the six steps


def check_step_1(at, digits, models):
    k, _, _, probs = teacher_view(models, digits.test.images[0])
    assert f"Test image #0, true class **{digits.class_names[digits.test.labels[0]]}**." in captions(at)
    assert ["the image", "its IG map", "the map on the image"] == [c for row in image_rows(at) for c in row]
    text = next(m.value for m in at.markdown if m.value.startswith("The **teacher** answers"))
    assert f"answers **{digits.class_names[k]}**, with {probs[k]:.0%}" in text
    bars = chart(at, "lesson_top5")["data"][0]
    assert values(bars["y"])[-1] == digits.class_names[k]  # the longest bar, drawn last, is the answer
    assert values(bars["x"])[-1] == pytest.approx(probs[k], abs=1e-4)


def check_step_2(at, digits, models, steps=8):
    k, score, base, _ = teacher_view(models, digits.test.images[0])
    rows = image_rows(at)
    assert rows[0] == [f"α = {a:.2f}" for a in np.linspace(0, 1, 8)]  # the path strip
    marks = sorted({max(1, round(steps * q)) for q in (0.25, 0.5, 0.75, 1.0)})
    assert rows[1] == [f"after {m} of {steps} points" for m in marks] + ["Captum, 256 steps"]
    path = chart(at, "lesson_path")["data"]
    assert len(path) == 3 and len(values(path[1]["x"])) == steps
    line = values(path[0]["y"])
    assert line[0] == pytest.approx(base, abs=1e-3) and line[-1] == pytest.approx(score, abs=1e-3)
    shown = metrics(at)
    total, change, gap = (
        number(shown[k]) for k in ("Sum of the map", "F(image) − F(baseline)", "Completeness gap")
    )
    assert change == pytest.approx(score - base, abs=2e-3)
    assert gap == pytest.approx(total - change, abs=2e-3)
    assert values(path[2]["y"])[-1] == pytest.approx(
        base + total, abs=2e-3
    )  # the running sum ends at the map's sum
    conv = chart(at, "lesson_convergence")["data"]
    assert values(conv[0]["x"]) == [2, 4, 8, 16, 32, 64]
    assert values(conv[0]["y"])[-1] < values(conv[0]["y"])[0]
    return number(shown["Distance to the 256-step map"]), abs(gap)


def check_step_3(at, digits, models, temperature=2.5):
    _, _, _, probs = teacher_view(models, digits.test.images[0])
    label = int(digits.test.labels[0])
    bars = chart(at, "lesson_soft")["data"]
    assert [b["name"] for b in bars] == ["label (one-hot)", "teacher, T = 1", f"teacher, T = {temperature:g}"]
    assert values(bars[0]["y"]) == [1.0 if i == label else 0.0 for i in range(10)]
    np.testing.assert_allclose(values(bars[1]["y"]), probs, atol=1e-5)
    assert sum(values(bars[2]["y"])) == pytest.approx(1.0)
    assert max(values(bars[2]["y"])) < max(values(bars[1]["y"]))  # softened: the top class gives some away
    shown = metrics(at)
    cold, warm = number(shown["Entropy at T = 1"]), number(shown[f"Entropy at T = {temperature:g}"])
    assert 0 <= cold < warm <= np.log2(10)
    soft, hard = number(shown["Soft part, T²·KL"]), number(shown["Hard part, cross-entropy"])
    alpha = at.slider(key="lesson_alpha").value
    assert number(shown[f"Loss at α = {alpha:g}"]) == pytest.approx(
        alpha * soft + (1 - alpha) * hard, abs=2e-3
    )
    return warm


def check_step_4(at, digits):
    from kdviz.models.evaluate import spread_indices

    shown = [c for row in image_rows(at) for c in row]  # one column per image: image, map, after
    idx = spread_indices(len(digits.train), 8)
    assert shown[0::3] == [digits.class_names[int(k)] for k in digits.train.labels[idx]]
    assert shown[1::3] == ["its map"] * 8
    done = re.search(r"(\d+) of 8 images got their map", " ".join(captions(at)))
    assert done and shown[2::3].count("overlaid") == int(done.group(1))
    assert set(shown[2::3]) <= {"overlaid", "as it is"} and len(shown) == 24
    return int(done.group(1))


def check_step_5(at, models):
    assert [s.value for s in at.subheader] == ["Teacher", "Student"]
    shown = metrics(at)
    for label in ("Spearman rank correlation", "Cosine similarity", "Top-10 % overlap (IoU)", "SSIM"):
        assert -1.0 <= number(shown[label]) <= 1.0
    assert number(shown["Teacher parameters"]) == models["teacher"].card.stats["params"]
    assert number(shown["Student parameters"]) == models["student"].card.stats["params"]
    assert number(shown["Teacher, one image"]) > 0 and number(shown["Student, one image"]) > 0
    assert [c for row in image_rows(at) for c in row] == ["IG map", "on the image"] * 2


def check_step_6(at, models):
    points = chart(at, "bench_scatter")["data"][0]
    accuracy = {f"digits_{r}": models[r].card.test_accuracy for r in ("teacher", "student")}
    assert dict(zip(values(points["text"]), values(points["y"]), strict=False)) == pytest.approx(accuracy)
    assert all(x > 0 for x in values(points["x"]))
    table = at.dataframe[0].value
    assert sorted(table["run"]) == ["digits_student · asset", "digits_teacher · asset"]
    assert (table["latency ms (batch 1)"] > 0).all()


@pytest.mark.slow
def test_walk_the_six_steps(fresh_cache, digits, models):
    at = open_page("pages/lesson.py")
    assert at.title[0].value.startswith("Lesson")
    assert at.button(key="lesson_prev").disabled
    for step in range(1, 7):
        if step > 1:
            at.button(key="lesson_next").click().run()
            assert_clean(at)
        assert progress(at) == f"Step {step} of 6: {STEPS[step]}"
        assert at.query_params.get("step") == (None if step == 1 else str(step))  # the URL follows
        if step == 1:
            check_step_1(at, digits, models)
        elif step == 2:
            check_step_2(at, digits, models)
        elif step == 3:
            check_step_3(at, digits, models)
        elif step == 4:
            check_step_4(at, digits)
        elif step == 5:
            check_step_5(at, models)
        else:
            check_step_6(at, models)
    assert at.button(key="lesson_next").disabled
    at.button(key="lesson_prev").click().run()
    assert_clean(at)
    assert progress(at) == f"Step 5 of 6: {STEPS[5]}"


@pytest.mark.slow
def test_each_steps_control_changes_its_figure(fresh_cache, digits, models):
    at = open_page("pages/lesson.py", {"step": "2"})
    distance_8, gap_8 = check_step_2(at, digits, models, steps=8)
    at.slider(key="lesson_steps").set_value(64).run()
    assert_clean(at)
    distance_64, gap_64 = check_step_2(at, digits, models, steps=64)
    assert distance_64 < distance_8 / 3 and gap_64 < gap_8
    assert at.query_params["steps"] == "64"

    at.button(key="lesson_next").click().run()
    warm = check_step_3(at, digits, models)
    at.slider(key="lesson_temperature").set_value(10.0).run()
    assert_clean(at)
    assert check_step_3(at, digits, models, temperature=10.0) > warm
    assert at.query_params["T"] == "10"

    at.button(key="lesson_next").click().run()
    at.slider(key="lesson_p").set_value(0.0).run()
    assert_clean(at)
    assert check_step_4(at, digits) == 0
    at.slider(key="lesson_p").set_value(1.0).run()
    assert check_step_4(at, digits) == 8
    at.button(key="lesson_draw").click().run()
    assert_clean(at)
    assert at.query_params["seed"] == "1"

    at.button(key="lesson_prev").click().run()  # back to step 3: its slider kept its value
    assert at.slider(key="lesson_temperature").value == 10.0


# ------------------------------------------------------------------------------ URL state and presentation


def test_a_link_restores_the_view(fresh_cache):
    query = {"step": "3", "T": "6", "alpha": "0.2", "source": "sample", "sample": "rocket", "present": "1"}
    at = open_page("pages/lesson.py", query)
    assert progress(at) == f"Step 3 of 6: {STEPS[3]}"
    assert at.slider(key="lesson_temperature").value == 6.0
    assert at.slider(key="lesson_alpha").value == 0.2
    assert at.radio(key="lesson_source").value == "sample"
    assert at.selectbox(key="lesson_sample").value == "rocket"
    assert "Rocket: 640×427" in [c for row in image_rows(at) for c in row]
    assert any("This image has no label" in c for c in captions(at))
    assert at.sidebar.toggle(key="kdviz_presentation").value is True
    assert any("kdviz-presentation" in h.proto.body for h in at.get("html"))
    assert [e.label for e in at.expander] == ["Image and baseline", "Temperature and α"]
    assert at.query_params == query  # nothing lost on the way

    at.slider(key="lesson_temperature").set_value(8.0).run()
    assert_clean(at)
    assert at.query_params["T"] == "8" and at.query_params["step"] == "3"


def test_a_bad_link_value_is_ignored_with_a_message(fresh_cache):
    at = open_page("pages/lesson.py", {"step": "9", "baseline": "purple"})
    assert progress(at) == f"Step 1 of 6: {STEPS[1]}"
    toasts = [t.value for t in at.toast]
    assert "The link's step='9' is not a whole number in 1–6; showing 1 instead." in toasts
    assert any(t.startswith("The link's baseline='purple' is not one of zero, black") for t in toasts)
    assert at.selectbox(key="lesson_baseline").value == "zero"
    assert "step" not in at.query_params and "baseline" not in at.query_params  # the link is corrected


def test_presentation_mode_folds_the_controls_and_enlarges_the_text(fresh_cache):
    at = open_page("pages/lesson.py")
    assert not at.expander and not any("kdviz-presentation" in h.proto.body for h in at.get("html"))
    at.sidebar.toggle(key="kdviz_presentation").set_value(True).run()
    assert_clean(at)
    assert [e.label for e in at.expander] == ["Image and baseline"]
    assert at.expander[0].radio(key="lesson_source").value == "data"  # the control is inside the fold
    assert any("font-size" in h.proto.body for h in at.get("html"))
    assert at.query_params["present"] == "1"
    at.switch_page("pages/overview.py").run()  # the setting holds on every page
    assert_clean(at)
    assert at.sidebar.toggle(key="kdviz_presentation").value is True
    assert any("kdviz-presentation" in h.proto.body for h in at.get("html"))


def test_sample_photo_and_upload_on_the_lesson(fresh_cache):
    at = open_page("pages/lesson.py")
    at.radio(key="lesson_source").set_value("sample").run()
    assert_clean(at)
    at.selectbox(key="lesson_sample").set_value("coffee").run()
    assert_clean(at)
    notes = [m.value for m in at.markdown if m.value.startswith("**What the models see:**")]
    assert notes == [
        "**What the models see:** cropped to its central 400×400 square; resized from 400×400 to 32×32."
    ]
    assert at.query_params["source"] == "sample" and at.query_params["sample"] == "coffee"
    assert [c for row in image_rows(at) for c in row][-3:] == [
        "the image",
        "its IG map",
        "the map on the image",
    ]

    at.radio(key="lesson_source").set_value("upload").run()
    assert_clean(at)
    assert any("Upload an image" in i.value for i in at.info)
    at.file_uploader(key="lesson_upload").set_value(("junk.png", b"not an image at all", "image/png")).run()
    assert not at.exception
    assert [e.value for e in at.error][0].startswith("Cannot use this file: junk.png")


# ----------------------------------------------------------------------------------- the Attributions page


def test_attributions_offers_sample_photos(fresh_cache):
    at = open_page("pages/attributions.py")
    at.slider(key="attr_steps").set_value(4)
    at.radio(key="attr_source").set_value("sample").run()
    assert_clean(at)
    found = [c for row in image_rows(at) for c in row]
    assert "Chelsea the cat: 451×300" in found  # the first photo is the default
    assert "sample" not in at.query_params  # a default stays out of the link
    at.selectbox(key="attr_sample").set_value("coffee").run()
    assert_clean(at)
    notes = [m.value for m in at.markdown if m.value.startswith("**What the models see:**")]
    assert notes == [
        "**What the models see:** cropped to its central 400×400 square; resized from 400×400 to 32×32."
    ]
    found = [c for row in image_rows(at) for c in row]
    assert "Coffee: 600×400" in found and "model input, 32×32" in found
    assert found.count("overlay") == 2  # the teacher's and the student's panels
    assert at.query_params["source"] == "sample" and at.query_params["sample"] == "coffee"
    assert at.query_params["steps"] == "4"


def test_an_attributions_link_restores_the_image_and_method(fresh_cache, digits):
    at = open_page("pages/attributions.py", {"image": "57", "method": "saliency", "strength": "0.3"})
    assert f"Test image #57, true class **{digits.class_names[digits.test.labels[57]]}**." in captions(at)
    assert at.selectbox(key="attr_method").value == "saliency"
    assert at.slider(key="attr_strength").value == 0.3
    assert [c for row in image_rows(at) for c in row].count(METHODS["saliency"]) == 2

    at.selectbox(key="attr_method").set_value("gradcam").run()
    assert_clean(at)
    assert at.query_params["method"] == "gradcam" and at.query_params["image"] == "57"


# ----------------------------------------------------------------------------------- CIFAR-10


@pytest.mark.slow
def test_every_step_on_cifar10_with_the_pretrained_resnets(fresh_cache, monkeypatch):
    """The sidebar on CIFAR-10, the two real ResNets imported as teacher and student."""
    require_shared()
    require_shared(PRETRAINED)
    monkeypatch.delenv("KDVIZ_CACHE")  # the decoded CIFAR-10 arrays are shared between tests
    from kdviz.data import load_dataset
    from kdviz.training.workflows import import_checkpoint

    data = load_dataset("cifar10")
    import_checkpoint(pretrained("resnet20"), "resnet20", data, "cifar-teacher", role="teacher")
    import_checkpoint(pretrained("resnet56"), "resnet56", data, "cifar-student", role="student")
    at = open_page("pages/lesson.py", {"steps": "4"})  # step 2 with few steps keeps the test short
    at.sidebar.selectbox(key="sidebar_data_kind").set_value("CIFAR-10").run()
    assert_clean(at)
    assert at.sidebar.selectbox(key="sidebar_teacher").value.endswith("cifar-teacher")
    assert f"Test image #0, true class **{data.class_names[data.test.labels[0]]}**." in captions(at)
    answer = next(m.value for m in at.markdown if m.value.startswith("The **teacher** answers"))
    assert re.search(r"answers \*\*(\w+)\*\*", answer).group(1) in data.class_names
    at.button(key="lesson_next").click().run()
    assert_clean(at)
    assert len(image_rows(at)[0]) == 8 and values(chart(at, "lesson_path")["data"][0]["y"])
    for step in (3, 4, 5, 6):
        at.button(key="lesson_next").click().run()
        assert_clean(at)
        assert progress(at) == f"Step {step} of 6: {STEPS[step]}"
    runs = set(at.dataframe[0].value["run"])  # the workspace's runs, then the shipped CIFAR-10 pair
    assert {"cifar-student", "cifar-teacher"} <= runs and runs <= {
        "cifar-student",
        "cifar-teacher",
        "cifar10_student · asset",
        "cifar10_teacher · asset",
    }
