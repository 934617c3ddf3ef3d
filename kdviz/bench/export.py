"""Edge export: a model to ONNX, checked against eager PyTorch before anyone times it."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ExportError(Exception):
    """The exported graph could not be made, or does not compute what the model computes."""


def to_onnx(model: nn.Module, image_size: int = 32, channels: int = 3) -> bytes:
    """ONNX bytes with a dynamic batch dimension (``torch.onnx.export(..., dynamo=True)``).

    Raises :class:`ExportError` with one line naming the root cause (the exporter's own message is a
    page of advice, and it prints graphs on the way): a person sees why, not a traceback.
    """
    model = model.eval().cpu()
    x = torch.zeros(2, channels, image_size, image_size)
    try:
        with _quiet(), torch.no_grad():
            batch = torch.export.Dim("batch", min=1, max=4096)
            program = torch.onnx.export(
                model,
                (x,),
                dynamo=True,
                verbose=False,
                input_names=["images"],
                output_names=["logits"],
                dynamic_shapes=({0: batch},),
            )
    except Exception as exc:  # exporter errors are many and long; one line says enough
        raise ExportError(f"ONNX export of {type(model).__name__} failed: {_root_cause(exc)}") from exc
    if program is None:  # only the legacy exporter (dynamo=False) returns nothing
        raise ExportError(f"ONNX export of {type(model).__name__} returned no program")
    return program.model_proto.SerializeToString()


def _root_cause(exc: BaseException) -> str:
    """The innermost exception's first line, without the terminal colour codes the exporter adds."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    first = next((line for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {_ANSI.sub('', first).strip()}"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter: it narrates its passes on stdout and logs graphs through ``torch`` loggers."""
    loggers = [
        logging.getLogger(name)
        for name in ("torch", "torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript")
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def session(onnx_bytes: bytes, threads: int | None = None, spin: bool = True):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (all cores when None).

    ``spin=False`` stops its threads spin-waiting after each call: slower alone, but fair when
    several sessions take turns on the same cores (each session has its own threads, and a
    spinning one slows the next session's call several-fold).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def check_equal(
    model: nn.Module,
    sess,
    image_size: int = 32,
    batch: int = 4,
    atol: float = 1e-4,
    *,
    x: torch.Tensor | None = None,
) -> float:
    """Max |eager − ONNX| on ``x`` (random inputs when None); raises :class:`ExportError` above ``atol``
    (relative to the logits' scale where they exceed one)."""
    real = x is not None
    if x is None:
        x = torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager = model.eval()(x).numpy()
    onnx_out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    diff = float(np.abs(eager - onnx_out).max())
    scale = float(np.abs(eager).max()) or 1.0
    if diff > atol * max(1.0, scale):
        on = " on real images" if real else ""
        raise ExportError(f"the ONNX model's outputs differ from PyTorch's by up to {diff:.3g}{on}")
    return diff
