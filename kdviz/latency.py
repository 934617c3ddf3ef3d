"""Latency of a model on this machine, in eager PyTorch or ONNX Runtime: median, p90, distribution.

A measurement warms up, then repeats until it has ``repeats`` samples or ``max_seconds`` have
passed, so one model takes a bounded time; the median of many short runs is stable where a mean
would follow the slowest outlier.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn


@dataclass
class Latency:
    name: str
    runtime: str  # "eager" or "onnxruntime"
    batch: int
    threads: int
    samples_ms: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return float(np.median(self.samples_ms))

    @property
    def p90_ms(self) -> float:
        return float(np.percentile(self.samples_ms, 90))

    @property
    def per_image_ms(self) -> float:
        return self.median_ms / self.batch

    def summary(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "samples_ms"}
        out.update(median_ms=round(self.median_ms, 3), p90_ms=round(self.p90_ms, 3),
                   per_image_ms=round(self.per_image_ms, 4), samples=len(self.samples_ms))
        return out


@contextmanager
def torch_threads(n: int | None):
    """Use ``n`` intra-op threads inside the block, then restore the previous number."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sample(fn: Callable[[], object], *, warmup: int = 5, repeats: int = 50, max_seconds: float = 8.0,
           should_stop: Callable[[], bool] | None = None) -> list[float]:
    """Milliseconds per call of ``fn`` after ``warmup`` calls; stops at ``repeats`` or ``max_seconds``."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    deadline = time.perf_counter() + max_seconds
    while len(samples) < repeats and (len(samples) < 3 or time.perf_counter() < deadline):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000.0)
        if should_stop and should_stop():
            break
    return samples


def eager(model: nn.Module, name: str, *, batch: int = 1, image_size: int = 32, threads: int | None = None,
          **kw) -> Latency:
    model = model.eval().cpu()
    x = torch.randn(batch, 3, image_size, image_size)
    with torch_threads(threads), torch.inference_mode():
        samples = sample(lambda: model(x), **kw)
        used = torch.get_num_threads()
    return Latency(name, "eager", batch, used, samples)


def onnxruntime(sess, name: str, *, batch: int = 1, image_size: int = 32, threads: int | None = None, **kw) -> Latency:
    x = np.random.default_rng(0).standard_normal((batch, 3, image_size, image_size)).astype(np.float32)
    feed = {sess.get_inputs()[0].name: x}
    samples = sample(lambda: sess.run(None, feed), **kw)
    return Latency(name, "onnxruntime", batch, threads or 0, samples)
