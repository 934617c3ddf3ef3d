"""A fresh machine with no CIFAR-10 images: the app opens on CIFAR-10, and the shipped CIFAR-10
teacher and student judge the sample cat photo on the Attributions and Lesson pages."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT

APP = ROOT / "app.py"
CIFAR10_CLASSES = {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def fresh_machine(tmp_path, monkeypatch):
    """No data anywhere (KDVIZ_DATA is an empty folder), the app's own default data set."""
    monkeypatch.setenv("KDVIZ_DATA", str(tmp_path / "no-data"))
    monkeypatch.setenv("KDVIZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KDVIZ_DEFAULT_DATA", raising=False)
    (tmp_path / "no-data").mkdir()


def _open(page: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=300).run()
    assert not at.exception, [e.value for e in at.exception]
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def test_app_opens_on_cifar10_with_the_shipped_pair(fresh_machine):
    at = _open("pages/overview.py")
    assert at.sidebar.selectbox(key="sidebar_data_kind").value == "CIFAR-10"
    assert at.sidebar.selectbox(key="sidebar_teacher").value.endswith("cifar10_teacher")
    assert at.sidebar.selectbox(key="sidebar_student").value.endswith("cifar10_student")
    assert any("sample photos" in i.value for i in at.sidebar.info)


def test_the_cat_photo_gets_both_ig_maps_judged_by_cifar10_classes(fresh_machine):
    at = _open("pages/attributions.py")
    radio = at.radio(key="attr_source")
    assert radio.value == "sample" and "data" not in radio.options  # no gallery without the images
    assert at.selectbox(key="attr_sample").value == "cat"
    verdicts = [m.value for m in at.markdown if m.value.startswith("**") and "map for class" in m.value]
    assert len(verdicts) == 2  # the teacher's panel and the student's
    for verdict in verdicts:
        predicted = verdict.split("**")[1]
        assert predicted in CIFAR10_CLASSES  # a CIFAR-10 class, not a digit
    assert sum("Integrated Gradients" in c for img in at.get("image") for c in img.captions) == 2


def test_the_lesson_runs_on_the_cat_without_data(fresh_machine):
    at = _open("pages/lesson.py")
    assert at.radio(key="lesson_source").value == "sample"
    text = " ".join(m.value for m in at.markdown)
    assert "The **teacher** answers **" in text
    answer = text.split("The **teacher** answers **")[1].split("**")[0]
    assert answer in CIFAR10_CLASSES
