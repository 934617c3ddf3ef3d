"""The paper's headline table, rebuilt for any teacher and students: size, accuracy, speed.

Also the cached evaluation it needs (predictions per model and data, on disk under
``KDVIZ_CACHE/eval``) and the Pareto front of speed against accuracy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..core import atomic, settings
from ..data.base import Dataset
from ..models.checkpoints import LoadedModel
from ..models.evaluate import Predictions, predict


def cached_predictions(
    loaded: LoadedModel,
    data: Dataset,
    split: str = "test",
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Predictions:
    """Predictions of ``loaded`` on ``data``'s split, computed once per weights, data and slice."""
    key = hashlib.blake2b(
        f"{loaded.fingerprint}|{data.source}|{split}|{limit}|{loaded.card.mean}|{loaded.card.std}".encode(),
        digest_size=16,
    ).hexdigest()
    path = settings.cache_dir() / "eval" / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path) as npz:
                return Predictions(npz["logits"], npz["labels"])
        except (OSError, ValueError, KeyError):
            pass
    preds = predict(
        loaded.model,
        data.split(split),
        mean=loaded.card.mean,
        std=loaded.card.std,
        limit=limit,
        progress=progress,
    )
    try:
        atomic.write_npz(path, logits=preds.logits, labels=preds.labels)
    except OSError:
        pass
    return preds


@dataclass
class Entry:
    """What is known of one model; ``None`` where it was not measured (the table shows a gap)."""

    name: str
    role: str
    params: int
    size_bytes: int
    macs: int
    accuracy: float | None = None
    latency_ms: float | None = None  # batch-1 median, eager
    latency_batch_ms: float | None = None  # the chosen batch, eager, per batch
    onnx_ms: float | None = None  # batch-1 median, ONNX Runtime


def headline(entries: Sequence[Entry], batch: int | None = None) -> list[dict]:
    """One row per model; ratios against the first entry whose role is teacher (else the first).

    Every speed-up divides two medians of the same table, so ratios come from one session's runs.
    ``batch`` names the chosen batch size in its columns.
    """
    if not entries:
        return []
    teacher = next((e for e in entries if e.role == "teacher"), entries[0])
    b = f"batch {batch}" if batch else "batch"
    rows = []
    for e in entries:
        rows.append(
            {
                "model": e.name,
                "role": e.role,
                "parameters": e.params,
                "size MB": round(e.size_bytes / 2**20, 2),
                "MMACs": round(e.macs / 1e6, 1),
                "compression ×": round(teacher.params / max(e.params, 1), 2),
                "accuracy": e.accuracy,
                "teacher's accuracy kept": _ratio(e.accuracy, teacher.accuracy),
                "latency ms (batch 1)": e.latency_ms,
                "speed-up × (batch 1)": _ratio(teacher.latency_ms, e.latency_ms),
                f"latency ms ({b})": e.latency_batch_ms,
                f"speed-up × ({b})": _ratio(teacher.latency_batch_ms, e.latency_batch_ms),
                "ONNX Runtime ms (batch 1)": e.onnx_ms,
                "ONNX speed-up × (batch 1)": _ratio(teacher.onnx_ms, e.onnx_ms),
                "ONNX Runtime over eager ×": _ratio(e.latency_ms, e.onnx_ms),
            }
        )
    return rows


def _ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None when either is unknown (or ``b`` is zero): a gap, never a made-up number."""
    return a / b if a is not None and b else None


def pareto_front(latency: Sequence[float], accuracy: Sequence[float]) -> np.ndarray:
    """Boolean mask of the points no other point beats on both (faster and at least as accurate)."""
    lat, acc = np.asarray(latency, float), np.asarray(accuracy, float)
    keep = np.ones(len(lat), bool)
    for i in range(len(lat)):
        better = (lat <= lat[i]) & (acc >= acc[i]) & ((lat < lat[i]) | (acc > acc[i]))
        keep[i] = not better.any()
    return keep
