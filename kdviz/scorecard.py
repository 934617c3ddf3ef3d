"""The paper's headline table, rebuilt for any teacher and students: size, accuracy, speed.

Also the cached evaluation it needs (predictions per model and data, on disk under
``KDVIZ_CACHE/eval``) and the Pareto front of speed against accuracy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from . import atomic, settings
from .attribution import model_fingerprint
from .checkpoints import LoadedModel
from .data.base import Dataset
from .evaluate import Predictions, predict


def cached_predictions(loaded: LoadedModel, data: Dataset, split: str = "test", limit: int | None = None,
                       progress: Callable[[int, int], None] | None = None,
                       fingerprint: str | None = None) -> Predictions:
    """Predictions of ``loaded`` on ``data``'s split, computed once per weights, data and slice."""
    fp = fingerprint or model_fingerprint(loaded.model)
    key = hashlib.blake2b(f"{fp}|{data.source}|{split}|{limit}|{loaded.card.mean}|{loaded.card.std}".encode(),
                          digest_size=16).hexdigest()
    path = settings.cache_dir() / "eval" / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path) as npz:
                return Predictions(npz["logits"], npz["labels"])
        except (OSError, ValueError, KeyError):
            pass
    preds = predict(loaded.model, data.split(split), mean=loaded.card.mean, std=loaded.card.std, limit=limit,
                    progress=progress)
    try:
        with atomic.atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, logits=preds.logits, labels=preds.labels)
    except OSError:
        pass
    return preds


@dataclass
class Entry:
    name: str
    role: str
    params: int
    size_bytes: int
    macs: int
    accuracy: float | None = None
    latency_ms: float | None = None  # batch-1 median, eager
    latency_batch_ms: float | None = None  # chosen batch, eager, per batch
    onnx_ms: float | None = None  # batch-1 median, ONNX Runtime


def headline(entries: Sequence[Entry]) -> list[dict]:
    """One row per model; ratios against the first entry whose role is teacher (else the first)."""
    if not entries:
        return []
    teacher = next((e for e in entries if e.role == "teacher"), entries[0])
    rows = []
    for e in entries:
        row = {
            "model": e.name, "role": e.role, "parameters": e.params, "size MB": round(e.size_bytes / 2**20, 2),
            "MMACs": round(e.macs / 1e6, 1), "compression ×": round(teacher.params / max(e.params, 1), 2),
            "accuracy": e.accuracy,
            "teacher's accuracy kept": (e.accuracy / teacher.accuracy) if e.accuracy is not None and teacher.accuracy else None,
            "latency ms (batch 1)": e.latency_ms,
            "speed-up ×": (teacher.latency_ms / e.latency_ms) if e.latency_ms and teacher.latency_ms else None,
            "latency ms (batch)": e.latency_batch_ms,
            "ONNX Runtime ms (batch 1)": e.onnx_ms,
            "ONNX speed-up over eager ×": (e.latency_ms / e.onnx_ms) if e.latency_ms and e.onnx_ms else None,
        }
        rows.append(row)
    return rows


def pareto_front(latency: Sequence[float], accuracy: Sequence[float]) -> np.ndarray:
    """Boolean mask of the points no other point beats on both (faster and at least as accurate)."""
    lat, acc = np.asarray(latency, float), np.asarray(accuracy, float)
    keep = np.ones(len(lat), bool)
    for i in range(len(lat)):
        better = (lat <= lat[i]) & (acc >= acc[i]) & ((lat < lat[i]) | (acc > acc[i]))
        keep[i] = not better.any()
    return keep
