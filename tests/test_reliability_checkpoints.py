"""Broken and mismatched checkpoints: refused with a message naming the problem, where a person meets them.

Three places: the library (``load_model`` and the cheap ``checkpoint_problem`` the sidebar
uses), the Models page's upload box, and the workspace itself, where a broken run folder must not
break the sidebar or any page: it is left out of the choices with a note, and picking it on the
Runs tab says what is wrong.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save
from streamlit.testing.v1 import AppTest

from kdviz.models import create_model
from kdviz.models.checkpoints import CARD, WEIGHTS, CheckpointError, checkpoint_problem, load_model
from kdviz.training.workspace import Workspace, model_choices, unusable_runs

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
ASSET = ROOT / "assets" / "digits_student"  # mnv2_student_4x, width 0.5, 10 classes, digits


# ----------------------------------------------------------------------------------- broken runs


def _edit_card(run: Path, **fields) -> None:
    card = json.loads((run / CARD).read_text())
    card.update(fields)
    (run / CARD).write_text(json.dumps(card))


def _truncate(file: Path, keep: float = 0.5) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * keep)])


#: name → (how to break a copy of the shipped student, words the reason must contain)
BREAKAGES = {
    "truncated-weights": (lambda run: _truncate(run / WEIGHTS), ["model.safetensors", "truncated"]),
    "header-only-weights": (lambda run: _truncate(run / WEIGHTS, 0.002), ["model.safetensors", "truncated"]),
    "empty-weights": (lambda run: (run / WEIGHTS).write_bytes(b""), ["model.safetensors", "empty"]),
    "no-weights": (lambda run: (run / WEIGHTS).unlink(), ["model.safetensors"]),
    "card-says-resnet": (
        lambda run: _edit_card(run, arch="resnet20", arch_kwargs={}),
        [
            "card does not match the weights",
            "saved from mnv2_student_4x, the card says resnet20",
            "another architecture",
        ],
    ),
    "card-says-7-classes": (
        lambda run: _edit_card(run, num_classes=7),
        ["card does not match the weights", "made for 10 classes, the model has 7"],
    ),
    "card-says-full-width": (
        lambda run: _edit_card(run, arch_kwargs={"width_mult": 1.0}),
        ["card does not match the weights", "another architecture or size", "mis-shaped"],
    ),
    "card-unknown-arch": (
        lambda run: _edit_card(run, arch="resnet9000"),
        ["unknown architecture 'resnet9000'"],
    ),
    "card-bad-argument": (
        lambda run: _edit_card(run, arch_kwargs={"depth": 3}),
        ["cannot be built", "does not take ['depth']"],
    ),
    "card-too-few-names": (
        lambda run: _edit_card(run, class_names=["zero", "one"]),
        ["lists 2 class names for 10 classes"],
    ),
    "card-classes-as-text": (
        lambda run: _edit_card(run, num_classes="ten"),
        ["card.json", "'num_classes' must be a positive whole number"],
    ),
    "card-not-json": (
        lambda run: (run / CARD).write_text('{"arch": "mnv2_student_4x",'),
        ["card.json", "not valid JSON"],
    ),
}


def _broken_run(root: Path, name: str) -> Path:
    run = root / name
    shutil.copytree(ASSET, run)
    BREAKAGES[name][0](run)
    return run


@pytest.mark.parametrize("name", list(BREAKAGES))
def test_each_broken_checkpoint_is_refused_with_its_reason(tmp_path, name):
    run = _broken_run(tmp_path, name)
    with pytest.raises(CheckpointError) as info:
        load_model(run)
    reason = str(info.value)
    for words in BREAKAGES[name][1]:
        assert words in reason, (words, reason)
    assert "\n" not in reason  # one line, for a page or the CLI

    # the cheap check the sidebar uses (no weights read) finds the same problem
    problem = checkpoint_problem(run)
    assert problem is not None
    for words in BREAKAGES[name][1]:
        assert words in problem, (words, problem)


def test_the_cheap_check_passes_good_checkpoints_and_follows_file_changes(tmp_path):
    run = tmp_path / "good"
    shutil.copytree(ASSET, run)
    assert checkpoint_problem(run) is None
    assert checkpoint_problem(ROOT / "assets" / "digits_teacher") is None
    load_model(run)  # and it really loads
    _edit_card(run, num_classes=7)  # a changed file is checked again, not answered from memory
    assert "made for 10 classes" in checkpoint_problem(run)


def test_workspace_lists_broken_runs_as_unusable_and_never_offers_them(tmp_path):
    ws = Workspace(tmp_path)
    for name in BREAKAGES:
        _broken_run(tmp_path, name)
    shutil.copytree(ASSET, tmp_path / "good")
    (tmp_path / "training-first-epoch").mkdir()  # a run with no card yet is not broken

    status = {r.name: r.status for r in ws.list()}
    assert status["good"] == "complete" and status["training-first-epoch"] == "empty"
    assert {n for n, s in status.items() if s == "unusable"} == set(BREAKAGES)
    offered = {r.name for r in model_choices(ws, "digits")}
    assert "good" in offered and not offered & set(BREAKAGES)
    assert {r.name for r in unusable_runs(ws, "digits")} == set(BREAKAGES)
    # for another data set, only the runs whose card cannot say which data set they belong to
    assert {r.name for r in unusable_runs(ws, "cifar10")} == {"card-not-json", "card-classes-as-text"}
    for r in unusable_runs(ws, "digits"):
        assert str(tmp_path) not in r.problem  # the name is shown beside it, the folder not repeated


def test_a_run_with_a_broken_card_can_still_be_renamed(tmp_path):
    ws = Workspace(tmp_path)
    _broken_run(tmp_path, "card-not-json")
    ws.rename("card-not-json", "renamed")
    assert (tmp_path / "renamed" / CARD).read_text() == '{"arch": "mnv2_student_4x",'


# ----------------------------------------------------------------------------------- pages


def open_app() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=240).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def sidebar_note(at: AppTest) -> str:
    notes = [w.value for w in at.sidebar.warning if w.value.startswith("Not offered, cannot be loaded")]
    assert len(notes) == 1, [w.value for w in at.sidebar.warning]
    return notes[0]


@pytest.mark.slow
def test_broken_runs_do_not_break_the_sidebar_or_any_page():
    home = Path(os.environ["KDVIZ_HOME"])
    broken = [
        "truncated-weights",
        "card-says-resnet",
        "card-says-7-classes",
        "card-not-json",
        "card-too-few-names",
    ]
    for name in broken:
        _broken_run(home, name)

    at = open_app()
    assert not at.error, [e.value for e in at.error]
    note = sidebar_note(at)
    assert note.startswith(f"Not offered, cannot be loaded ({len(broken)}):")
    for name in broken:
        assert f"**{name}**" in note
    assert "card does not match the weights" in note and "not valid JSON" in note
    for role in ("teacher", "student"):
        options = at.sidebar.selectbox(key=f"sidebar_{role}").options
        assert not any(Path(o).name in broken for o in options), options
        assert Path(at.sidebar.selectbox(key=f"sidebar_{role}").value).name == f"digits_{role}"

    # a choice that went bad after it was made is dropped by the sidebar, not handed to a page
    at.session_state["kdviz_teacher_path"] = str(home / "card-says-resnet")
    for page in sorted((ROOT / "pages").glob("*.py")):
        at.switch_page(f"pages/{page.name}").run()
        assert not at.exception, (page.name, [e.value for e in at.exception])
        # only the Models page's Runs tab speaks of a broken run: the run it picks first is the newest
        errors = [e.value for e in at.error if "cannot be used as a model" not in e.value]
        assert not errors, (page.name, errors)
        assert at.title, f"{page.name} shows no title"
        assert Path(at.session_state["kdviz_teacher_path"]).name == "digits_teacher"
        sidebar_note(at)


def test_picking_a_broken_run_on_the_runs_tab_says_what_is_wrong():
    home = Path(os.environ["KDVIZ_HOME"])
    _broken_run(home, "card-says-7-classes")
    shutil.copytree(ASSET, home / "good")
    at = open_app()
    at.switch_page("pages/models.py").run()
    runs = next(t for t in at.tabs if t.label == "Runs")
    table = runs.dataframe[0].value
    statuses = dict(zip(table["run"], table["status"], strict=False))
    assert statuses == {"card-says-7-classes": "unusable", "good": "complete"}

    at.selectbox(key="runs_pick").set_value("card-says-7-classes").run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1, errors
    assert errors[0].startswith(
        "`card-says-7-classes` cannot be used as a model: the card does not match the weights"
    )
    assert "made for 10 classes, the model has 7" in errors[0]
    assert not any(b.key in ("runs_use_teacher", "runs_use_student") for b in at.button)

    at.selectbox(key="runs_pick").set_value("good").run()
    assert not at.error, [e.value for e in at.error]
    assert {"runs_use_teacher", "runs_use_student"} <= {b.key for b in at.button}


def _safetensors_bytes(model: torch.nn.Module) -> bytes:
    return save({k: v.contiguous() for k, v in model.state_dict().items()})


def _pickle_bytes(model: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save({"state_dict": model.state_dict()}, buf)
    return buf.getvalue()


def test_models_page_upload_names_each_problem():
    """Into resnet20 on the digits (10 classes): each bad file is refused, nothing is added."""
    good = _safetensors_bytes(create_model("resnet20"))
    cases = [
        ("half.safetensors", good[: len(good) // 2], ["half.safetensors", "truncated or damaged"]),
        ("head.safetensors", good[:40], ["head.safetensors", "truncated or damaged"]),
        (
            "mobilenet.safetensors",
            _safetensors_bytes(create_model("mnv2_student_12x")),
            ["does not fit CifarResNet", "another architecture", "missing", "unexpected"],
        ),
        (
            "cifar100.pt",
            _pickle_bytes(create_model("resnet20", num_classes=100)),
            ["made for 100 classes, the model has 10", "mis-shaped: linear.bias"],
        ),
        (
            "text.pt",
            b"these are not weights\n" * 20,
            ["text.pt", "not a readable PyTorch or safetensors checkpoint"],
        ),
    ]
    at = open_app()
    at.switch_page("pages/models.py").run()
    at.selectbox(key="upload_arch").set_value("resnet20").run()
    for name, payload, expected in cases:
        at.file_uploader(key="upload_file").set_value((name, payload, "application/octet-stream")).run()
        at.button(key="upload_go").click().run()
        assert not at.exception, (name, [e.value for e in at.exception])
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and errors[0].startswith("Not added:"), (name, errors)
        for words in expected:
            assert words in errors[0], (name, words, errors[0])
        assert not any(Path(os.environ["KDVIZ_HOME"]).iterdir()), f"{name} left something in the workspace"

    # the page still works: the good file is added and chosen
    at.file_uploader(key="upload_file").set_value(("r20.safetensors", good, "application/octet-stream")).run()
    at.button(key="upload_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("chosen as the teacher" in s.value for s in at.success)


def test_the_studies_folder_is_not_a_run(tmp_path):
    """Ablation studies live in KDVIZ_HOME/studies: not a run, and no run may take its name."""
    from kdviz.training.workspace import RunNameError

    ws = Workspace(tmp_path)
    (tmp_path / "studies" / "digits-smoke").mkdir(parents=True)
    shutil.copytree(ASSET, tmp_path / "good")
    assert [r.name for r in ws.list()] == ["good"]
    with pytest.raises(RunNameError, match="reserved"):
        ws.create("studies")
