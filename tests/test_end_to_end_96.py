"""Issue 15's workflow end to end on a 96-px, 10-class image folder: a ``timm:`` teacher fine-tuned
from a local weights file (what an offline machine has instead of the hub's download), then a
student derived from it and distilled with KD + IG, from the command line and from the pages.

The weights file stands in for an ImageNet file fetched elsewhere: a 1000-way timm state dict
written as safetensors. The folder is the generated shapes (10 classes, always there).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import onnx
import pytest
import torch
from apptest_helpers import assert_clean
from imagedata import shapes_folder
from safetensors.torch import save_file
from streamlit.testing.v1 import AppTest
from test_cli import kdviz, one_json

from kdviz.core.jobs import MANAGER
from kdviz.models import create_model, load_model

ROOT = Path(__file__).resolve().parents[1]
TEACHER = "timm:mobilenetv3_large_100"  # the fine-tuning recipe's teacher
STUDENT = "timm:mobilenetv3_small_075"  # derived from it at 4.10x, the nearest to 4x

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return shapes_folder(tmp_path_factory.mktemp("shapes96"), 96, train_per_class=6, test_per_class=2)


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory) -> Path:
    torch.manual_seed(3)
    state = create_model(TEACHER, num_classes=1000).state_dict()
    file = tmp_path_factory.mktemp("weights") / "mobilenetv3_large_100.safetensors"
    save_file(state, str(file))
    return file


# ---------------------------------------------------------------------------------------- CLI


def test_cli_fine_tunes_a_timm_teacher_and_distils_a_kd_ig_student_at_96(folder, imagenet_file, tmp_path):
    file = imagenet_file
    size = ("--data", folder, "--image-size", "96")
    teacher = one_json(
        kdviz(
            "train", *size, "--arch", TEACHER, "--pretrained", file, "--recipe", "finetune",
            "--epochs", "1", "--name", "t96", "--json",
        )
    )  # fmt: skip
    assert teacher["epochs_done"] == 1
    card = json.loads((Path(teacher["path"]) / "card.json").read_text())
    assert card["arch"] == TEACHER and card["image_size"] == 96 and card["num_classes"] == 10
    assert card["pretrained"]["file"] == str(file) and card["pretrained"]["head"] == "replaced"
    assert card["train_config"]["recipe"] == "finetune"

    proc = kdviz(
        "distill", "--teacher", "t96", *size, "--student-ratio", "4", "--arm", "kd+ig",
        "--ig-steps", "4", "--epochs", "1", "--name", "s96", "--json",
    )  # fmt: skip
    student = one_json(proc)
    assert STUDENT in proc.stderr  # the derived student is named before it trains
    assert student["arm"] == "kd+ig" and student["epochs_done"] == 1 and student["ig_cache"]
    card = json.loads((Path(student["path"]) / "card.json").read_text())
    assert card["arch"] == STUDENT and card["image_size"] == 96 and card["role"] == "student"
    assert card["teacher"] and Path(card["train_config"]["teacher"]).name == "t96"

    evaluated = one_json(kdviz("eval", "--weights", "s96", *size, "--json"))
    assert evaluated["image_size"] == 96 and evaluated["n"] == 20
    out = tmp_path / "s96.onnx"
    exported = one_json(kdviz("export", "--weights", "s96", "--out", out, "--json"))  # the card's data
    assert out.is_file() and exported["image_size"] == 96 and exported["checked_images"] > 0
    assert exported["max_abs_diff"] < 1e-3
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["image_size"] == "96" and meta["arch"] == STUDENT
    assert json.loads(meta["class_names"])[:2] == ["circle", "cross"]


# -------------------------------------------------------------------------------------- pages


def wait_for_jobs(timeout: float = 420.0) -> None:
    deadline = time.monotonic() + timeout
    while MANAGER.running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not MANAGER.running(), "training did not finish in time"


def finish(at: AppTest) -> None:
    at.button(key="train_start").click().run()
    assert_clean(at)
    wait_for_jobs()
    at.run()  # the page sees the finished job, selects the new run and reruns
    at.run()
    assert_clean(at)
    assert any("Training finished" in s.value for s in at.success), [s.value for s in at.success]


def test_pages_fine_tune_a_timm_teacher_and_distil_a_kd_ig_student_at_96(
    folder, imagenet_file, tmp_path, monkeypatch
):
    file = imagenet_file
    home = tmp_path / "home"
    monkeypatch.setenv("KDVIZ_HOME", str(home))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    at.switch_page("pages/models.py").run()
    at.sidebar.selectbox(key="sidebar_data_kind").set_value("Image folder…").run()
    at.sidebar.text_input(key="sidebar_folder").set_value(str(folder)).run()
    at.sidebar.selectbox(key="sidebar_image_size").set_value(96).run()
    assert_clean(at)
    source = at.session_state["kdviz_data_source"]
    assert source.endswith("@96")

    # the teacher: fine-tuned from the local file
    at.radio(key="train_role").set_value("teacher").run()
    at.radio(key=f"train_recipe_{source}").set_value("finetune").run()
    start = f"train_start_from_teacher_finetune_{TEACHER}"
    at.radio(key=start).set_value("a local weights file").run()
    at.text_input(key=f"train_start_from_teacher_finetune_path_{TEACHER}").set_value(str(file)).run()
    at.text_input(key=f"train_name_teacher_{TEACHER}").set_value("page-t96").run()
    at.number_input(key="train_epochs").set_value(1).run()
    finish(at)
    teacher = load_model(home / "page-t96")
    assert teacher.card.arch == TEACHER and teacher.card.image_size == 96
    assert teacher.card.pretrained["file"] == str(file) and teacher.card.pretrained["head"] == "replaced"
    assert Path(at.sidebar.selectbox(key="sidebar_teacher").value).name == "page-t96"

    # the student: derived from that teacher (the default), distilled with KD + IG
    at.radio(key="train_role").set_value("student").run()
    at.radio(key=f"train_recipe_{source}").set_value("default").run()
    at.radio(key="train_learn_from").set_value("kd+ig").run()
    arch = at.selectbox(key="train_arch_student_default_of_page-t96")
    assert arch.value == STUDENT  # the teacher's own family, nearest 4x
    at.text_input(key=f"train_name_student_{STUDENT}").set_value("page-s96").run()
    at.number_input(key="train_epochs").set_value(1).run()
    at.number_input(key="distill_steps").set_value(4).run()
    finish(at)
    student = load_model(home / "page-s96")
    assert student.card.arch == STUDENT and student.card.image_size == 96
    assert student.card.role == "student" and student.card.train_config["arm"] == "kd+ig"
    assert Path(student.card.train_config["teacher"]).name == "page-t96"
    assert student.card.train_config["ig_cache"]  # the teacher's IG maps were made and read
    assert Path(at.sidebar.selectbox(key="sidebar_student").value).name == "page-s96"
