"""Edge export: a model to ONNX, checked against eager PyTorch before anyone times it."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import torch
from torch import nn


class ExportError(Exception):
    """The exported graph could not be made, or does not compute what the model computes."""


def to_onnx(model: nn.Module, image_size: int = 32, channels: int = 3) -> bytes:
    """ONNX bytes with a dynamic batch dimension (``torch.onnx.export(..., dynamo=True)``)."""
    model = model.eval().cpu()
    x = torch.zeros(2, channels, image_size, image_size)
    try:
        quiet = contextlib.redirect_stdout(io.StringIO())  # the exporter narrates its passes on stdout
        with warnings.catch_warnings(), torch.no_grad(), quiet:
            warnings.simplefilter("ignore")
            batch = torch.export.Dim("batch", min=1, max=4096)
            program = torch.onnx.export(model, (x,), dynamo=True, verbose=False, input_names=["images"],
                                        output_names=["logits"], dynamic_shapes={"x": {0: batch}})
    except Exception as exc:  # noqa: BLE001 - exporter errors are many and long; one line says enough
        raise ExportError(f"ONNX export of {type(model).__name__} failed: {str(exc).splitlines()[0]}") from exc
    buf = io.BytesIO()
    buf.write(program.model_proto.SerializeToString())
    return buf.getvalue()


def session(onnx_bytes: bytes, threads: int | None = None):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (all cores when None)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def check_equal(model: nn.Module, sess, image_size: int = 32, batch: int = 4, atol: float = 1e-4) -> float:
    """Max |eager − ONNX| on random inputs; raises :class:`ExportError` above ``atol``."""
    x = torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager = model.eval()(x).numpy()
    onnx_out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    diff = float(np.abs(eager - onnx_out).max())
    scale = float(np.abs(eager).max()) or 1.0
    if diff > atol * max(1.0, scale):
        raise ExportError(f"the ONNX model's outputs differ from PyTorch's by up to {diff:.3g}")
    return diff
