"""kdviz.bench.deploy and ``python -m kdviz export``: the ONNX file computes what PyTorch computes (at
96 px, batch 1 and 7), says how to feed it in its metadata, is never written when it differs, and
its int8 copy comes with measured accuracy and latency against float."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kdviz.bench import deploy
from kdviz.bench.export import ExportError, session
from kdviz.data import load_dataset
from kdviz.models import create_model, load_model, make_card, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ARCH = "resnet20"  # small, quick to export; its pooling takes any size
SIZE = 96


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def run_96(tmp_path_factory, digits):
    """A 96-px model of the digits' 10 classes saved as a kdviz checkpoint."""
    torch.manual_seed(0)
    model = create_model(ARCH, num_classes=digits.num_classes).eval()
    card = make_card(ARCH, data=digits, model=None, image_size=SIZE, name="net96", mean=[0.4, 0.45, 0.5])
    return save_checkpoint(tmp_path_factory.mktemp("runs") / "net96", model, card)


@pytest.fixture(scope="module")
def exported(run_96, digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "net96.onnx"
    report = deploy.export_model(load_model(run_96, data=digits), out, digits, threads=1)
    return out, report


@pytest.mark.parametrize("batch", [1, 7])
def test_the_onnx_file_computes_what_pytorch_computes_at_96_px(exported, run_96, batch):
    out, report = exported
    model = load_model(run_96).model
    sess = session(out.read_bytes(), threads=1)
    x = torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        eager = model(x).numpy()
    onnx_out = sess.run(None, {"images": x.numpy()})[0]
    assert onnx_out.shape == (batch, 10)
    np.testing.assert_allclose(onnx_out, eager, rtol=1e-4, atol=1e-4)
    assert report.image_size == SIZE and report.checked_images == deploy.CHECK_IMAGES


def test_the_metadata_says_how_to_feed_it(exported, digits):
    out, report = exported
    meta = deploy.read_metadata(out)
    assert json.loads(meta["mean"]) == [0.4, 0.45, 0.5]
    assert json.loads(meta["std"]) == list(digits.std)
    assert meta["image_size"] == "96" and meta["arch"] == ARCH
    assert json.loads(meta["class_names"]) == list(digits.class_names)
    import onnx

    opsets = {o.domain: o.version for o in onnx.load(str(out)).opset_import}
    assert report.opset == opsets.get("", opsets.get("ai.onnx")) and report.opset >= 17


def test_the_card_goes_beside_the_file(exported):
    out, report = exported
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["arch"] == ARCH and card["image_size"] == SIZE
    assert card["export"]["opset"] == report.opset and card["export"]["max_abs_diff"] < 1e-3


def test_an_export_that_differs_is_never_written(run_96, digits, tmp_path, monkeypatch):
    other = create_model(ARCH, num_classes=10).eval()
    real_to_onnx = deploy.to_onnx
    monkeypatch.setattr(deploy, "to_onnx", lambda model, size: real_to_onnx(other, size))
    out = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match="differ from PyTorch's .* on real images"):
        deploy.export_model(load_model(run_96, data=digits), out, digits, threads=1)
    assert not out.exists() and not out.with_suffix(".json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["static", "dynamic"])
def test_int8_comes_with_its_accuracy_and_latency_against_float(tmp_path, digits, method):
    torch.manual_seed(0)
    model = create_model(ARCH, num_classes=10).eval()
    run = save_checkpoint(tmp_path / "net32", model, make_card(ARCH, data=digits))
    out = tmp_path / "net32.onnx"
    report = deploy.export_model(
        load_model(run, data=digits), out, digits, int8=method, eval_limit=64, threads=1, timing_seconds=0.5
    )
    q = report.int8
    assert q["method"] == method and (tmp_path / "net32.int8.onnx").is_file()
    assert q["images"] == 64 and 0 <= q["accuracy_int8"] <= 1 and 0 <= q["agreement"] <= 1
    assert q["accuracy_change"] == pytest.approx(q["accuracy_int8"] - q["accuracy_float"])
    assert q["speedup_batch1"] > 0 and set(q["latency_ms"]) == {
        "float_batch1",
        "int8_batch1",
        "float_batch64",
        "int8_batch64",
    }
    import onnx

    ops = {n.op_type for n in onnx.load(q["path"]).graph.node}
    assert ("QuantizeLinear" in ops) if method == "static" else ("ConvInteger" in ops)
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["export"]["int8"]["method"] == method


def test_auto_takes_static_for_a_convnet(exported):
    assert deploy.has_convolutions(exported[0].read_bytes())


# ----------------------------------------------------------------------------- the CLI contract


def test_cli_export_writes_the_file_and_its_card(run_96, tmp_path, capsys):
    from kdviz.cli import main

    out = tmp_path / "cli.onnx"
    assert main(["export", "--weights", str(run_96), "--out", str(out), "--data", "digits", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["onnx"] == str(out) and out.is_file() and out.with_suffix(".json").is_file()


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--weights", "no-such-run", "--out", "x.onnx"], "no such file, run or asset"),
        (["--out", "x.txt"], "must be a .onnx file"),
        (["--out", "x.onnx", "--data", "cifar10:/nowhere"], "cannot be loaded here"),
    ],
)
def test_cli_export_failures_are_one_line_and_a_non_zero_exit(run_96, tmp_path, capsys, argv, says):
    from kdviz.cli import main

    if "--weights" not in argv:
        argv = ["--weights", str(run_96), *argv]
    argv = [str(tmp_path / a) if a.startswith("x.") else a for a in argv]
    code = main(["export", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1 and err[0].startswith("kdviz: error:") and says in err[0]
    assert not list(tmp_path.glob("x.*"))
