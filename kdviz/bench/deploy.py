"""A checkpoint made ready for a device: an ONNX file that says how to feed it, checked, optionally int8.

:func:`export_model` is what ``python -m kdviz export`` and the Models and Benchmark pages run:

1. the model is exported to ONNX (:func:`kdviz.bench.export.to_onnx`, a dynamic batch
   dimension, the opset stated);
2. its outputs are compared with PyTorch's on real test images of its data set (not noise: a
   graph can agree on noise and still differ where real images take it), and a file that differs
   is never written;
3. the preprocessing (mean, std, image size, layout) and the class names go into the ONNX model's
   ``metadata_props``, so a device needs nothing but the file;
4. optionally an int8 copy (ONNX Runtime's quantisation: dynamic, or static QDQ calibrated on a
   few training images), with its accuracy and latency against the float model measured on this
   machine and written into the card beside the file.
"""

from __future__ import annotations

import functools
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core import atomic
from ..core.version import __version__
from ..data.base import Dataset, ImageSplit
from ..data.loader import iterate_batches
from ..models.checkpoints import LoadedModel
from ..models.evaluate import spread_indices
from . import latency
from .export import ExportError, check_equal, session, to_onnx

#: int8 quantisation methods: ONNX Runtime's dynamic (weights int8, activations quantised per call)
#: and static QDQ (activations' ranges calibrated on training images beforehand); "auto" takes static
#: for a graph with convolutions (dynamic turns them into ConvInteger, which ONNX Runtime's CPU runs
#: 7-14x slower than float: measured on the CIFAR-10 student, see README) and dynamic otherwise
INT8_METHODS = ("auto", "dynamic", "static")
#: how many real test images the float export is checked on, and calibration images for static int8
CHECK_IMAGES = 64
CALIBRATION_IMAGES = 32


@dataclass
class ExportReport:
    """What an export produced and measured; also written, with the model's card, beside the file."""

    onnx: str
    card: str
    opset: int
    image_size: int
    max_abs_diff: float  # |PyTorch − ONNX| on real test images, largest
    checked_images: int
    size_bytes: int
    int8: dict = field(default_factory=dict)  # path, method, accuracy and latency against float

    def as_dict(self) -> dict:
        return asdict(self)


def export_model(
    loaded: LoadedModel,
    out: str | Path,
    data: Dataset,
    *,
    int8: str | None = None,
    eval_limit: int | None = 2000,
    check_images: int = CHECK_IMAGES,
    threads: int | None = None,
    atol: float = 1e-4,
    timing_seconds: float = 8.0,
    progress: Callable[[str], None] | None = None,
) -> ExportReport:
    """Write ``out`` (``.onnx``) and its card ``out.json``; with ``int8`` also ``out.int8.onnx``.

    Raises :class:`ExportError` (one line) when the model cannot be exported, its ONNX outputs
    differ from PyTorch's on real images, or ``data`` is not the model's data set; nothing is
    written then. ``timing_seconds`` bounds each int8 timing (float and int8 take turns in it).
    """
    say = progress or (lambda _: None)
    out = Path(out)
    if out.suffix != ".onnx":
        raise ExportError(f"the output must be a .onnx file, not {out.name}")
    card = loaded.card
    if data.num_classes != card.num_classes:
        raise ExportError(
            f"the model predicts {card.num_classes} classes but {data.name} has {data.num_classes}"
        )
    size = card.image_size
    say(f"exporting {card.arch} at {size} px to ONNX")
    model_bytes = to_onnx(loaded.model, size)
    images = real_images(data.test, check_images, loaded, size)
    sess = session(model_bytes, threads=threads)
    say(f"checking the ONNX outputs against PyTorch on {len(images)} test images")
    diff = check_equal(loaded.model, sess, atol=atol, x=images)
    model_bytes, opset = with_metadata(model_bytes, loaded, data)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(out, model_bytes)
    report = ExportReport(
        onnx=str(out),
        card=str(out.with_suffix(".json")),
        opset=opset,
        image_size=size,
        max_abs_diff=diff,
        checked_images=len(images),
        size_bytes=len(model_bytes),
    )
    if int8:
        report.int8 = quantize(model_bytes, out, loaded, data, int8, eval_limit, threads, say, timing_seconds)
    atomic.write_json(out.with_suffix(".json"), {**card.to_json(), "export": report.as_dict()})
    return report


def real_images(split: ImageSplit, n: int, loaded: LoadedModel, size: int) -> torch.Tensor:
    """``n`` test images spread over the split, normalised as the model takes them, at its size."""
    idx = spread_indices(len(split), n)
    return _at_size(loaded.preprocess(split.images[idx]), size)


def _at_size(x: torch.Tensor, size: int) -> torch.Tensor:
    """Images resized to the model's input size where the data set's differs."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def with_metadata(model_bytes: bytes, loaded: LoadedModel, data: Dataset) -> tuple[bytes, int]:
    """The model with its preprocessing and class names in ``metadata_props``, and its opset."""
    import onnx

    proto = onnx.load_from_string(model_bytes)
    card = loaded.card
    props = {
        "kdviz_version": __version__,
        "arch": card.arch,
        "arch_kwargs": json.dumps(card.arch_kwargs),
        "dataset": card.dataset or data.source,
        "num_classes": str(card.num_classes),
        "class_names": json.dumps(list(card.class_names or data.class_names)),
        "image_size": str(card.image_size),
        "mean": json.dumps(list(card.mean)),
        "std": json.dumps(list(card.std)),
        "input": "images: float32 (N, 3, H, W), RGB, (pixel / 255 - mean) / std",
        "output": "logits: float32 (N, num_classes)",
        "pretrained": json.dumps(card.pretrained) if card.pretrained else "",
    }
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    return proto.SerializeToString(), int(opset)


def read_metadata(path: str | Path) -> dict[str, str]:
    """An ONNX file's ``metadata_props`` as a dict (what a device reads to feed the model)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


# ----------------------------------------------------------------------------------- int8


def quantize(
    model_bytes: bytes,
    out: Path,
    loaded: LoadedModel,
    data: Dataset,
    method: str,
    eval_limit: int | None,
    threads: int | None,
    say: Callable[[str], None],
    timing_seconds: float = 8.0,
) -> dict:
    """Write ``out.int8.onnx`` and measure it against the float model: accuracy on ``eval_limit`` test
    images (all with None), agreement of their predictions, latency at batch 1 and 64."""
    if method not in INT8_METHODS:
        raise ExportError(f"int8 method must be one of {', '.join(INT8_METHODS)}, not {method!r}")
    if method == "auto":
        method = "static" if has_convolutions(model_bytes) else "dynamic"
    say(f"quantising to int8 ({method})")
    int8_bytes = int8_model(model_bytes, method, data, loaded)
    int8_path = out.with_name(out.stem + ".int8.onnx")
    atomic.write_bytes(int8_path, int8_bytes)
    float_sess, int8_sess = session(model_bytes, threads=threads), session(int8_bytes, threads=threads)
    say(f"measuring float and int8 accuracy on {eval_limit or len(data.test)} test images")
    float_pred, labels = onnx_predictions(float_sess, data.test, loaded, eval_limit)
    int8_pred, _ = onnx_predictions(int8_sess, data.test, loaded, eval_limit)
    timings = {}
    for batch in (1, 64):
        say(f"timing float and int8 at batch {batch}, taking turns")
        x = real_images(data.test, batch, loaded, loaded.card.image_size).numpy()
        if len(x) < batch:  # a small test split: its images repeated to fill the batch
            x = np.resize(x, (batch, *x.shape[1:]))
        fns: dict[str, Callable[[], object]] = {
            name: functools.partial(sess.run, None, {sess.get_inputs()[0].name: x})
            for name, sess in (("float", float_sess), ("int8", int8_sess))
        }
        samples = latency.sample_interleaved(fns, max_seconds=timing_seconds, repeats=200)
        for name, ms in samples.items():
            timings[(name, batch)] = float(np.median(ms))
    float_acc, int8_acc = float((float_pred == labels).mean()), float((int8_pred == labels).mean())
    return {
        "path": str(int8_path),
        "method": method,
        "size_bytes": len(int8_bytes),
        "images": int(len(labels)),
        "accuracy_float": float_acc,
        "accuracy_int8": int8_acc,
        "accuracy_change": int8_acc - float_acc,
        "agreement": float((float_pred == int8_pred).mean()),
        "latency_ms": {f"{name}_batch{b}": ms for (name, b), ms in timings.items()},
        "speedup_batch1": timings[("float", 1)] / timings[("int8", 1)],
        "speedup_batch64": timings[("float", 64)] / timings[("int8", 64)],
        "threads": threads or 0,
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def has_convolutions(model_bytes: bytes) -> bool:
    import onnx

    return any(node.op_type == "Conv" for node in onnx.load_from_string(model_bytes).graph.node)


def int8_model(model_bytes: bytes, method: str, data: Dataset, loaded: LoadedModel) -> bytes:
    """The int8 model by ONNX Runtime's quantisation (after its pre-processing: shapes inferred,
    graph optimised, as its documentation asks); static calibrates on a few training images."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="kdviz-int8-") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        proto = onnx.load_from_string(model_bytes)
        # the exporter's intermediate shapes can disagree with ONNX's own inference (a Gemm's
        # weight); the quantiser re-infers them and stops at the first disagreement, so drop them
        del proto.graph.value_info[:]
        onnx.save(proto, str(src))
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantiser advises through the root logger, on every call
        try:
            _quantize(_pre_processed(src), dst, method, data, loaded)
        except Exception as exc:
            first = next((line for line in str(exc).splitlines() if line.strip()), "")
            raise ExportError(f"int8 quantisation ({method}) failed: {type(exc).__name__}: {first}") from exc
        finally:
            root.setLevel(level)
        return dst.read_bytes()


def _pre_processed(src: Path) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = src.with_name("pre.onnx")
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    except Exception:  # noqa: BLE001 - pre-processing is an optimisation; quantise the plain graph
        return src
    return pre


def _quantize(src: Path, dst: Path, method: str, data: Dataset, loaded: LoadedModel) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    if method == "dynamic":
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
        return
    images = real_images(data.train, CALIBRATION_IMAGES, loaded, loaded.card.image_size)
    quantize_static(
        str(src),
        str(dst),
        _Calibration(images),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )


class _Calibration:
    """ONNX Runtime's CalibrationDataReader over a batch of images, one image at a time."""

    def __init__(self, images: torch.Tensor) -> None:
        self._items: Iterator[np.ndarray] = iter([images[i : i + 1].numpy() for i in range(len(images))])
        self._name = "images"

    def get_next(self) -> dict | None:
        item = next(self._items, None)
        return None if item is None else {self._name: item}

    def rewind(self) -> None:  # ORT calls it on some versions; a single pass is enough here
        return None


def onnx_predictions(
    sess, split: ImageSplit, loaded: LoadedModel, limit: int | None, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted classes and labels of ``limit`` test images spread over ``split`` (all with None)."""
    card = loaded.card
    preds, labels = [], []
    name = sess.get_inputs()[0].name
    indices = spread_indices(len(split), limit)
    for x, y, _ in iterate_batches(split, batch_size, mean=card.mean, std=card.std, indices=indices):
        logits = sess.run(None, {name: _at_size(x, card.image_size).numpy()})[0]
        preds.append(logits.argmax(1))
        labels.append(y.numpy())
    return np.concatenate(preds), np.concatenate(labels)
