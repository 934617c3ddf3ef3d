"""The pages' side of issue 15: export buttons on the Models and Benchmark pages (a checked ONNX file
offered for download with its card), torchvision/timm names found with a search box and trained,
and the derived-students table."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from apptest_helpers import assert_clean
from streamlit.testing.v1 import AppTest

from kdviz.bench.deploy import read_metadata
from kdviz.models import load_model
from kdviz.training.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDVIZ_CACHE", str(tmp_path / "cache"))


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=300).run()
    at.switch_page(page).run()
    assert_clean(at)
    return at


def downloads(at: AppTest) -> list[str]:
    return [d.proto.label for d in at.get("download_button")]


def test_models_page_exports_the_student_and_offers_it_for_download():
    at = open_page("pages/models.py")
    at.radio(key="export_role").set_value("student").run()
    at.button(key="models_export_go").click().run()
    assert_clean(at)
    assert any("outputs equal PyTorch's" in s.value for s in at.success)
    assert downloads(at) == ["Download the .onnx", "Download its card (.json)"]
    (report,) = at.session_state["kdviz_export_reports"].values()
    onnx_file = Path(report.onnx)
    meta = read_metadata(onnx_file)
    assert meta["image_size"] == "32" and len(json.loads(meta["class_names"])) == 10
    card = json.loads(onnx_file.with_suffix(".json").read_text())
    assert card["role"] == "student" and card["export"]["opset"] >= 17


@pytest.mark.slow
def test_benchmark_page_exports_with_int8_and_shows_it_against_float():
    at = open_page("pages/benchmark.py")
    at.radio(key="bench_export_int8").set_value("static").run()
    at.number_input(key="bench_export_limit").set_value(100).run()
    at.button(key="bench_export_go").click().run()
    assert_clean(at)
    assert "Download the int8 .onnx" in downloads(at)
    table = at.dataframe[-1].value
    assert list(table["model"]) == ["float", "int8"]
    assert any("accuracy points on 100 test images" in c.value for c in at.caption)


def test_the_search_box_finds_timm_models_and_trains_one():
    from kdviz.core.jobs import MANAGER

    at = open_page("pages/models.py")
    at.text_input(key="train_arch_teacher_default_search").set_value("timm mobilenetv3_small_050").run()
    box = at.selectbox(key="train_arch_teacher_default__timm mobilenetv3_small_050")
    assert box.value == "timm:mobilenetv3_small_050"
    assert at.radio(key="train_start_from_teacher_default_timm:mobilenetv3_small_050").options[1] == (
        "the library's pretrained weights"
    )
    at.text_input(key="train_name_teacher_timm:mobilenetv3_small_050").set_value("timm-teacher").run()
    at.number_input(key="train_epochs").set_value(1).run()
    at.number_input(key="train_limit").set_value(64).run()
    at.button(key="train_start").click().run()
    deadline = time.monotonic() + 180
    while MANAGER.running() and time.monotonic() < deadline:
        time.sleep(0.2)
    run = Workspace().path("timm-teacher")
    assert load_model(run).card.arch == "timm:mobilenetv3_small_050"


def test_the_derived_students_table_measures_compression():
    at = open_page("pages/models.py")
    assert not any("compression" in d.value.columns for d in at.dataframe)  # measured only when asked
    at.toggle(key="derive_on").set_value(True).run()
    at.text_input(key="derive_teacher").set_value("torchvision:mobilenet_v2").run()
    assert_clean(at)
    table = next(d.value for d in at.dataframe if "compression" in d.value.columns)
    assert table["student"].iloc[0] == "torchvision:mobilenet_v2"
    assert table["arguments"].iloc[0] == "width_mult=0.5"


def test_the_finetune_recipe_starts_from_a_weights_file_given_on_the_page(tmp_path):
    from safetensors.torch import save_file

    from kdviz.core.jobs import MANAGER
    from kdviz.models import create_model

    arch = "timm:mobilenetv3_large_100"  # the recipe's default teacher
    torch_state = create_model(arch, num_classes=1000).state_dict()
    file = tmp_path / "imagenet.safetensors"
    save_file({k: v.contiguous() for k, v in torch_state.items()}, str(file))
    at = open_page("pages/models.py")
    at.radio(key="train_recipe_digits").set_value("finetune").run()
    assert at.selectbox(key="train_arch_teacher_finetune").value == arch
    start = at.radio(key=f"train_start_from_teacher_finetune_{arch}")
    start.set_value("a local weights file").run()
    at.text_input(key=f"train_start_from_teacher_finetune_path_{arch}").set_value(str(file)).run()
    at.text_input(key=f"train_name_teacher_{arch}").set_value("finetuned").run()
    at.number_input(key="train_epochs").set_value(1).run()
    at.number_input(key="train_limit").set_value(64).run()
    at.button(key="train_start").click().run()
    deadline = time.monotonic() + 240
    while MANAGER.running() and time.monotonic() < deadline:
        time.sleep(0.2)
    card = load_model(Workspace().path("finetuned")).card
    assert card.pretrained["file"] == str(file) and card.pretrained["head"] == "replaced"
    assert card.train_config["recipe"] == "finetune" and card.train_config["backbone_lr_scale"] == 0.1
