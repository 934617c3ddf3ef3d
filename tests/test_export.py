"""kdviz.bench.export: the ONNX graph computes what the PyTorch model computes, at any batch size, and a
model that cannot be exported fails with one line that says why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kdviz.bench import export
from kdviz.models import create_model
from kdviz.models.checkpoints import load_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported():
    """The asset teacher and student and the edge student, exported once for the module."""
    models = {name: load_model(ROOT / "assets" / name).model for name in ("digits_teacher", "digits_student")}
    torch.manual_seed(0)
    models["mnv2_student_4x_edge"] = create_model("mnv2_student_4x_edge").eval()
    return {name: (model, export.session(export.to_onnx(model), threads=1)) for name, model in models.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["digits_teacher", "digits_student", "mnv2_student_4x_edge"])
@pytest.mark.parametrize("batch", [1, 7])
def test_onnx_outputs_equal_eager_outputs(exported, name, batch):
    model, sess = exported[name]
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        eager = model(x).numpy()
    onnx_out = sess.run(None, {"images": x.numpy()})[0]
    assert onnx_out.shape == (batch, 10)
    np.testing.assert_allclose(onnx_out, eager, rtol=1e-4, atol=1e-4)
    assert (onnx_out.argmax(1) == eager.argmax(1)).all()


@pytest.mark.slow
def test_check_equal_passes_the_right_model_and_refuses_another(exported):
    model, sess = exported["digits_student"]
    assert export.check_equal(model, sess) < 1e-4
    other, _ = exported["digits_teacher"]
    with pytest.raises(export.ExportError, match="differ from PyTorch's by up to"):
        export.check_equal(other, sess)


def test_session_uses_the_asked_threads():
    sess = export.session(
        export.to_onnx(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())), threads=1
    )
    assert sess.get_session_options().intra_op_num_threads == 1
    assert [i.name for i in sess.get_inputs()] == ["images"]
    assert sess.run(None, {"images": np.zeros((3, 3, 32, 32), np.float32)})[0].shape == (3, 4)


def test_a_session_that_takes_turns_does_not_spin_and_computes_the_same():
    data = export.to_onnx(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    default, quiet = export.session(data, threads=1), export.session(data, threads=1, spin=False)
    key = "session.intra_op.allow_spinning"
    assert quiet.get_session_options().get_session_config_entry(key) == "0"
    with pytest.raises(RuntimeError, match="does not have configuration"):  # ONNX Runtime's default: spin
        default.get_session_options().get_session_config_entry(key)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(quiet.run(None, {"images": x})[0], default.run(None, {"images": x})[0])


class ValueBranching(nn.Module):
    """Branches on a tensor's value: torch.export cannot trace that into one graph."""

    def forward(self, x):
        if x.sum() > 0:
            return x.mean((2, 3))
        return x.amax((2, 3))


def test_a_model_that_cannot_be_exported_fails_with_one_clear_line(capsys):
    with pytest.raises(export.ExportError) as info:
        export.to_onnx(ValueBranching())
    message = str(info.value)
    assert message.startswith("ONNX export of ValueBranching failed: ")
    assert "data-dependent" in message  # the root cause, not the exporter's advice page
    assert "\n" not in message and "\x1b[" not in message
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # the exporter's graph dumps are kept off the terminal
