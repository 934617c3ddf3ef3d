"""The app's entry and the Overview and Models pages, driven headless with Streamlit's AppTest.

The app opens on the built-in digits with the teacher and student shipped in ``assets/``; the
Models page trains a tiny model through its widgets (in a background job, as a person would),
lists, renames and deletes runs, and imports an uploaded checkpoint, refusing a hostile one.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest
import torch
from apptest_helpers import assert_clean
from streamlit.testing.v1 import AppTest

from kdviz.core.jobs import MANAGER
from kdviz.models import create_model

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
ASSET_CARDS = {
    role: json.loads((ROOT / "assets" / f"digits_{role}" / "card.json").read_text())
    for role in ("teacher", "student")
}


def open_app() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=240).run()
    assert_clean(at)
    return at


def metrics(at: AppTest) -> list[tuple[str, str]]:
    return [(m.label, m.value) for m in at.metric]


def tab(at: AppTest, label: str):
    return next(t for t in at.tabs if t.label == label)


def wait_for_jobs(timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while MANAGER.running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not MANAGER.running(), "training did not finish in time"


# ----------------------------------------------------------------------------------- the app


def test_app_opens_on_overview_with_the_shipped_models():
    at = open_app()
    assert at.title[0].value.startswith("kdviz")
    assert at.sidebar.selectbox(key="sidebar_data_kind").value.startswith("Built-in digits")
    # the sidebar chose the shipped teacher and student
    teacher = at.sidebar.selectbox(key="sidebar_teacher")
    student = at.sidebar.selectbox(key="sidebar_student")
    assert Path(teacher.value).name == "digits_teacher"
    assert Path(student.value).name == "digits_student"
    shown = dict(metrics(at))
    assert shown["Classes"] == "10"
    assert shown["Training images"] == "1,437" and shown["Test images"] == "360"
    # both model cards, with the parameters their cards record and the compression between them
    params = [v for label, v in metrics(at) if label == "Parameters"]
    assert params == [
        f"{ASSET_CARDS['teacher']['stats']['params']:,}",
        f"{ASSET_CARDS['student']['stats']['params']:,}",
    ]
    ratio = ASSET_CARDS["teacher"]["stats"]["params"] / ASSET_CARDS["student"]["stats"]["params"]
    assert shown["Compression"] == f"{ratio:.2f}×"
    assert [s.value for s in at.subheader][:2] == ["Teacher", "Student"]


def test_sidebar_switching_the_student_updates_the_cards():
    at = open_app()
    at.sidebar.selectbox(key="sidebar_student").set_value(str(ROOT / "assets" / "digits_teacher")).run()
    assert_clean(at)
    shown = dict(metrics(at))
    assert shown["Compression"] == "1.00×"  # the teacher compared with itself


def test_missing_cifar_folder_keeps_the_cifar_models_for_photos(tmp_path):
    at = open_app()
    at.sidebar.selectbox(key="sidebar_data_kind").set_value("CIFAR-10").run()
    at.sidebar.text_input(key="sidebar_data_root").set_value(str(tmp_path / "nowhere")).run()
    assert not at.exception and not at.error
    assert any("are not under" in i.value and "sample photos" in i.value for i in at.sidebar.info)
    assert "Test images" not in dict(metrics(at))  # no data set is shown, and none is pretended
    teacher = at.sidebar.selectbox(key="sidebar_teacher").value
    assert teacher.endswith("cifar10_teacher")  # the shipped CIFAR-10 pair, not the digits one


def test_every_registered_page_opens_without_an_error():
    at = open_app()
    for page in sorted((ROOT / "pages").glob("*.py")):
        at.switch_page(f"pages/{page.name}").run()
        assert_clean(at)
        assert at.title, f"{page.name} shows no title"


# ----------------------------------------------------------------------------------- Models


def open_models() -> AppTest:
    at = open_app()
    at.switch_page("pages/models.py").run()
    assert_clean(at)
    return at


def test_models_page_cards_side_by_side():
    at = open_models()
    cards = tab(at, "Teacher & student")
    assert [s.value for s in cards.subheader] == ["Teacher", "Student"]
    accuracies = [m.value for m in cards.metric if m.label == "Test accuracy"]
    assert accuracies == [f"{ASSET_CARDS[r]['metrics']['test_accuracy']:.2%}" for r in ("teacher", "student")]
    # the training curves of each shipped model are drawn from its history.json
    assert len(cards.get("plotly_chart")) == 2


def test_train_a_tiny_model_through_the_widgets():
    at = open_models()
    assert "no runs yet" in tab(at, "Runs").info[0].value
    at.radio(key="train_role").set_value("student").run()
    at.selectbox(key="train_arch_student_default").set_value("mnv2_student_12x").run()
    at.select_slider(key="train_width_student").set_value(0.25).run()
    name = at.text_input(key="train_name_student_mnv2_student_12x")
    name.set_value("tiny-student").run()
    at.number_input(key="train_epochs").set_value(2).run()
    at.number_input(key="train_limit").set_value(128).run()
    at.button(key="train_start").click().run()
    assert_clean(at)
    wait_for_jobs()
    at.run()  # the page sees the finished job: it selects the new run and reruns once
    at.run()
    assert_clean(at)
    assert any("Training finished" in s.value for s in at.success), [s.value for s in at.success]

    run_dir = Path(os.environ["KDVIZ_HOME"]) / "tiny-student"
    card = json.loads((run_dir / "card.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    assert card["arch"] == "mnv2_student_12x" and card["arch_kwargs"] == {"width_mult": 0.25}
    assert card["role"] == "student" and card["train_config"]["train_limit"] == 128
    assert [r["epoch"] for r in history] == [1, 2]
    # the new run is now this session's student, listed in the Runs tab with its accuracy
    assert Path(at.sidebar.selectbox(key="sidebar_student").value).name == "tiny-student"
    runs = tab(at, "Runs").dataframe[0].value
    row = runs[runs["run"] == "tiny-student"].iloc[0]
    assert row["architecture"] == "mnv2_student_12x" and row["status"] == "complete"
    assert row["test accuracy"] == pytest.approx(history[-1]["test_acc"])
    # the live curves show both epochs
    assert any(len(c.proto.spec) for c in at.get("plotly_chart"))


def test_the_default_recipe_form_trains_with_muon_at_the_filters_rate_asked_for():
    at = open_models()
    at.radio(key="train_role").set_value("student").run()
    at.selectbox(key="train_arch_student_default").set_value("mnv2_student_12x").run()
    at.select_slider(key="train_width_student").set_value(0.25).run()
    assert at.selectbox(key="train_optimizer").options == ["sgd", "adamw", "muon"]
    assert not [n for n in at.number_input if n.key == "train_muon_lr"], "Muon's rate shown for SGD"
    at.selectbox(key="train_optimizer").set_value("muon").run()
    at.number_input(key="train_muon_lr").set_value(0.05).run()
    at.text_input(key="train_name_student_mnv2_student_12x").set_value("muon-student").run()
    at.number_input(key="train_epochs").set_value(1).run()
    at.number_input(key="train_limit").set_value(64).run()
    at.button(key="train_start").click().run()
    assert_clean(at)
    wait_for_jobs()
    at.run()
    assert_clean(at)
    card = json.loads((Path(os.environ["KDVIZ_HOME"]) / "muon-student" / "card.json").read_text())
    assert card["train_config"]["optimizer"] == "muon"
    assert card["train_config"]["muon_lr"] == pytest.approx(0.05)


def _make_run(name: str) -> Path:
    from kdviz.data import load_dataset
    from kdviz.training.loop import TrainConfig
    from kdviz.training.workflows import TrainRequest, train_run

    request = TrainRequest(
        name=name,
        arch="mnv2_student_12x",
        arch_kwargs={"width_mult": 0.25},
        role="student",
        config=TrainConfig(epochs=1, train_limit=64, eval_limit=40),
    )
    run_dir, _ = train_run(request, data=load_dataset("digits"))
    return run_dir


def test_rename_and_delete_a_run():
    run_dir = _make_run("old-name")
    at = open_models()
    runs = tab(at, "Runs")
    assert list(runs.dataframe[0].value["run"]) == ["old-name"]
    at.selectbox(key="runs_pick").set_value("old-name").run()
    at.text_input(key="runs_new_name").set_value("../escape").run()
    at.button(key="runs_rename").click().run()
    assert any("invalid run name" in e.value for e in at.error)  # refused, nothing moved
    assert run_dir.is_dir()

    at.text_input(key="runs_new_name").set_value("new-name").run()
    at.button(key="runs_rename").click().run()
    assert not run_dir.exists() and (run_dir.parent / "new-name" / "card.json").is_file()
    assert json.loads((run_dir.parent / "new-name" / "card.json").read_text())["name"] == "new-name"
    assert list(tab(at, "Runs").dataframe[0].value["run"]) == ["new-name"]

    assert at.button(key="runs_delete").disabled  # not before the person says so
    at.checkbox(key="runs_sure").check().run()
    at.button(key="runs_delete").click().run()
    assert_clean(at)
    assert not (run_dir.parent / "new-name").exists()
    assert "no runs yet" in tab(at, "Runs").info[0].value


def _state_bytes(model: torch.nn.Module, wrap: dict | None = None) -> bytes:
    buf = io.BytesIO()
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, **(wrap or {})}, buf)
    return buf.getvalue()


def test_upload_a_foreign_checkpoint_and_refuse_a_wrong_one():
    at = open_models()
    at.selectbox(key="upload_arch").set_value("resnet20").run()
    at.radio(key="upload_role").set_value("student").run()
    assert at.button(key="upload_go").disabled  # nothing to add yet
    at.file_uploader(key="upload_file").set_value(
        ("r20.th", _state_bytes(create_model("resnet20")), "application/octet-stream")
    ).run()
    at.button(key="upload_go").click().run()
    assert_clean(at)
    assert any("chosen as the student" in s.value for s in at.success)
    assert Path(at.sidebar.selectbox(key="sidebar_student").value).name.startswith("upload-r20")

    # weights of another architecture: a message naming the tensors, nothing added
    at.file_uploader(key="upload_file").set_value(
        ("r56.th", _state_bytes(create_model("resnet56")), "application/octet-stream")
    ).run()
    at.button(key="upload_go").click().run()
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("Not added:") and "unexpected" in errors[0]
    names = [p.name for p in Path(os.environ["KDVIZ_HOME"]).iterdir()]
    assert len(names) == 1 and names[0].startswith("upload-r20")


class _Hostile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_upload_of_a_hostile_pickle_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    payload = _state_bytes(create_model("resnet20"), {"extra": _Hostile(marker)})
    at = open_models()
    at.selectbox(key="upload_arch").set_value("resnet20").run()
    at.file_uploader(key="upload_file").set_value(("evil.pt", payload, "application/octet-stream")).run()
    at.button(key="upload_go").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "never runs the code a pickle may carry" in errors[0]
    assert not marker.exists()
    assert not any(Path(os.environ["KDVIZ_HOME"]).iterdir())
