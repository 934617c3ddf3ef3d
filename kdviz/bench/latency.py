"""Latency of a model on this machine, in eager PyTorch or ONNX Runtime: median, p90, distribution.

A measurement warms up, then repeats until it has ``repeats`` samples or ``max_seconds`` have
passed; the budget covers the warm-up too, so a slow model (a big batch) cannot stall the page. The
median of many short runs is stable where a mean would follow the slowest outlier. The defaults let
one model be measured (batch 1 and one larger batch) within 10 s on 2 cores:
``benchmarks/bench_latency.py`` checks that and how far two runs' medians lie apart.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

#: Warm-up calls, timed calls and seconds per measurement (warm-up included) unless told otherwise. Fast
#: models stop at REPEATS: a millisecond model gets 500 samples, whose median drifts less between runs.
WARMUP, REPEATS, MAX_SECONDS = 3, 500, 4.0
#: A model's budget on the Benchmark page: batch 1 and one larger batch in both runtimes fit in 10 s.
SECONDS_PER_MODEL = 8.0
#: Timed calls taken even past the budget, so a median exists for a model slower than the budget.
MIN_SAMPLES = 3
#: The share of the budget warm-up may use before timing starts.
WARMUP_SHARE = 0.25


@dataclass
class Latency:
    """The samples of one measurement (one model, runtime, batch and thread count), in milliseconds."""

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
        out.update(
            median_ms=round(self.median_ms, 3),
            p90_ms=round(self.p90_ms, 3),
            per_image_ms=round(self.per_image_ms, 4),
            samples=len(self.samples_ms),
        )
        return out


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` intra-op threads inside the block, then restore the previous number."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sample(
    fn: Callable[[], object],
    *,
    warmup: int = WARMUP,
    repeats: int = REPEATS,
    max_seconds: float = MAX_SECONDS,
    should_stop: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Milliseconds per call of ``fn``: up to ``warmup`` untimed calls (stopping early once they
    have used a quarter of ``max_seconds``), then timed calls until ``repeats``, or until the next
    call (as long as the last) would end past the budget (at least :data:`MIN_SAMPLES` are taken),
    or until ``should_stop()`` says so."""
    start = clock()
    for _ in range(warmup):
        fn()
        if clock() - start >= WARMUP_SHARE * max_seconds:
            break
    deadline = start + max_seconds
    samples: list[float] = []
    while len(samples) < repeats and (len(samples) < MIN_SAMPLES or clock() + samples[-1] / 1000 <= deadline):
        t0 = clock()
        fn()
        samples.append((clock() - t0) * 1000.0)
        if should_stop and should_stop():
            break
    return samples


def sample_interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    warmup: int = WARMUP,
    repeats: int = REPEATS,
    max_seconds: float = MAX_SECONDS,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Milliseconds per call of each function, taking turns call by call.

    On a shared machine the load drifts; measured in turns, every model sees the same drift, so a
    ratio of two medians stays fair where back-to-back measurements would not. ``max_seconds``
    bounds all of them together, as in :func:`sample` (warm-up included, at least
    :data:`MIN_SAMPLES` turns, no turn started that would end past it).
    """
    start = clock()
    for _ in range(warmup):
        for fn in fns.values():
            fn()
        if clock() - start >= WARMUP_SHARE * max_seconds:
            break
    deadline = start + max_seconds
    samples: dict[str, list[float]] = {name: [] for name in fns}
    turns, last_turn = 0, 0.0
    while turns < repeats and (turns < MIN_SAMPLES or clock() + last_turn <= deadline):
        turn_start = clock()
        for name, fn in fns.items():
            t0 = clock()
            fn()
            samples[name].append((clock() - t0) * 1000.0)
        turns, last_turn = turns + 1, clock() - turn_start
    return samples


def busy_message() -> str | None:
    """A warning when other work holds the cores (1-minute load above their number), else None.

    Timings then swing by orders of magnitude, worst with several threads: a thread that loses its
    core stalls every layer's parallel section. The page says so rather than show numbers as if
    they were steady.
    """
    if not hasattr(os, "getloadavg"):
        return None
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load <= cores:
        return None
    return (
        f"This machine is busy (load {load:.1f} on {cores} cores): timings will swing, most with more "
        "than one thread. Measure again when it is quiet, or use 1 thread; ratios of medians hold up best."
    )


def relative_spread(a: float, b: float) -> float:
    """How far two medians lie apart, as a share of the smaller: 0.1 means 10 %."""
    return abs(a - b) / min(a, b)


def eager(
    model: nn.Module, name: str, *, batch: int = 1, image_size: int = 32, threads: int | None = None, **kw
) -> Latency:
    """Latency of ``model`` in eager PyTorch (inference mode, CPU) on random ``batch`` images."""
    model = model.eval().cpu()
    x = torch.randn(batch, 3, image_size, image_size)
    with torch_threads(threads), torch.inference_mode():
        samples = sample(lambda: model(x), **kw)
        used = torch.get_num_threads()
    return Latency(name, "eager", batch, used, samples)


def onnxruntime(
    sess, name: str, *, batch: int = 1, image_size: int = 32, threads: int | None = None, **kw
) -> Latency:
    """Latency of an ONNX Runtime session (its threads are set where it is made:
    :func:`kdviz.bench.export.session`)."""
    x = np.random.default_rng(0).standard_normal((batch, 3, image_size, image_size)).astype(np.float32)
    feed = {sess.get_inputs()[0].name: x}
    samples = sample(lambda: sess.run(None, feed), **kw)
    return Latency(name, "onnxruntime", batch, threads or 0, samples)


def eager_in_turns(
    models: dict[str, nn.Module], *, batch: int = 1, image_size: int = 32, threads: int | None = None, **kw
) -> dict[str, Latency]:
    """:func:`eager` for several models timed in turns (:func:`sample_interleaved`), so that their
    ratios hold on a machine whose load drifts; ``max_seconds`` bounds them all together."""
    x = torch.randn(batch, 3, image_size, image_size)
    fns: dict[str, Callable[[], object]] = {
        n: functools.partial(m.eval().cpu(), x) for n, m in models.items()
    }
    with torch_threads(threads), torch.inference_mode():
        samples = sample_interleaved(fns, **kw)
        used = torch.get_num_threads()
    return {name: Latency(name, "eager", batch, used, ms) for name, ms in samples.items()}


def onnxruntime_in_turns(
    sessions: dict[str, Any], *, batch: int = 1, image_size: int = 32, threads: int | None = None, **kw
) -> dict[str, Latency]:
    """:func:`onnxruntime` for several sessions timed in turns (make them with ``spin=False``:
    :func:`kdviz.bench.export.session` says why)."""
    x = np.random.default_rng(0).standard_normal((batch, 3, image_size, image_size)).astype(np.float32)
    fns: dict[str, Callable[[], object]] = {
        n: functools.partial(s.run, None, {s.get_inputs()[0].name: x}) for n, s in sessions.items()
    }
    samples = sample_interleaved(fns, **kw)
    return {name: Latency(name, "onnxruntime", batch, threads or 0, ms) for name, ms in samples.items()}
