"""kdviz.bench.latency: how a measurement spends its budget, and what it reports.

Timing is driven by a fake clock, so the tests assert on the rules (how many calls, when to stop),
never on how fast this machine is: speed is measured in benchmarks/bench_latency.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kdviz.bench import latency
from kdviz.bench.latency import Latency, relative_spread, sample, torch_threads


class FakeClock:
    """A clock that only moves when the measured function runs (``cost`` seconds a call)."""

    def __init__(self, cost: float) -> None:
        self.now, self.cost, self.calls = 0.0, cost, 0

    def __call__(self) -> float:
        return self.now

    def work(self) -> None:
        self.calls += 1
        self.now += self.cost


def test_sample_takes_warmup_then_repeats_when_the_budget_allows():
    clock = FakeClock(0.01)
    samples = sample(clock.work, warmup=4, repeats=10, max_seconds=100, clock=clock)
    assert clock.calls == 4 + 10
    assert samples == pytest.approx([10.0] * 10)  # milliseconds


def test_sample_keeps_within_the_budget_warmup_included():
    clock = FakeClock(1.0)
    samples = sample(clock.work, warmup=5, repeats=50, max_seconds=8, clock=clock)
    # warm-up stops once it has used a quarter of the budget (2 calls), timing fills the rest
    assert clock.calls == 8 and len(samples) == 6
    assert clock.now <= 8


def test_sample_starts_no_call_that_would_end_past_the_budget():
    clock = FakeClock(1.5)
    samples = sample(clock.work, warmup=5, repeats=50, max_seconds=8, clock=clock)
    # warm-up to 3.0 s, samples end at 4.5, 6.0, 7.5; a fourth would end at 9.0
    assert len(samples) == 3 and clock.now == 7.5


def test_sample_takes_a_minimum_of_samples_from_a_model_slower_than_the_budget():
    clock = FakeClock(10.0)
    samples = sample(clock.work, warmup=5, repeats=50, max_seconds=4, clock=clock)
    assert len(samples) == latency.MIN_SAMPLES
    assert clock.calls == 1 + latency.MIN_SAMPLES  # one warm-up call already used the warm-up share


def test_sample_stops_when_asked():
    clock = FakeClock(0.001)
    samples = sample(
        clock.work, warmup=0, repeats=50, max_seconds=100, clock=clock, should_stop=lambda: clock.calls >= 2
    )
    assert len(samples) == 2


def test_the_defaults_keep_one_model_within_ten_seconds():
    """Batch 1 and one larger batch, in eager and ONNX Runtime: four measurements of a model share the
    page's default budget; each overruns it by at most one call."""
    from kdviz.ui.benchmark import LatencySettings

    s = LatencySettings(
        batch=64,
        threads=2,
        warmup=latency.WARMUP,
        repeats=latency.REPEATS,
        seconds_per_model=latency.SECONDS_PER_MODEL,
        runtimes=["eager", "onnxruntime"],
    )
    clock = FakeClock(0.05)  # a 50 ms call, like a teacher's batch of 64
    for _ in range(len(s.batches) * len(s.runtimes)):
        sample(
            clock.work, warmup=s.warmup, repeats=s.repeats, max_seconds=s.seconds_per_measurement, clock=clock
        )
    assert clock.now <= 10
    assert s.seconds_per_measurement == pytest.approx(latency.SECONDS_PER_MODEL / 4)


def test_latency_statistics():
    m = Latency("student", "eager", batch=4, threads=2, samples_ms=[1.0, 2.0, 3.0, 4.0, 100.0])
    assert m.median_ms == 3.0  # the outlier does not move the median
    assert m.p90_ms == pytest.approx(np.percentile([1, 2, 3, 4, 100], 90))
    assert m.per_image_ms == pytest.approx(0.75)
    summary = m.summary()
    assert "samples_ms" not in summary
    assert summary["samples"] == 5 and summary["median_ms"] == 3.0 and summary["runtime"] == "eager"


def test_relative_spread():
    assert relative_spread(10.0, 11.0) == pytest.approx(0.1)
    assert relative_spread(11.0, 10.0) == pytest.approx(0.1)
    assert relative_spread(5.0, 5.0) == 0.0


def test_torch_threads_restores_the_setting_even_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), torch_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("stop")
    assert torch.get_num_threads() == before


class ShapeRecorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.shapes: list[tuple] = []
        self.grad_enabled: list[bool] = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        self.grad_enabled.append(torch.is_grad_enabled())
        return self.linear(x.mean((2, 3)))


def test_eager_runs_the_model_on_the_asked_batch_in_inference_mode():
    model = ShapeRecorder()
    m = latency.eager(model, "tiny", batch=5, image_size=16, threads=1, warmup=2, repeats=4, max_seconds=60)
    assert (m.runtime, m.batch, m.threads, m.name) == ("eager", 5, 1, "tiny")
    assert len(m.samples_ms) == 4 and len(model.shapes) == 6
    assert set(model.shapes) == {(5, 3, 16, 16)}
    assert not any(model.grad_enabled) and not model.training


class FakeSession:
    """The two methods of an ONNX Runtime session that ``latency.onnxruntime`` uses."""

    class _Input:
        name = "images"

    def __init__(self) -> None:
        self.feeds: list[dict] = []

    def get_inputs(self):
        return [self._Input()]

    def run(self, outputs, feed):
        self.feeds.append(feed)
        return [np.zeros((len(feed["images"]), 10), np.float32)]


def test_onnxruntime_feeds_float32_images_of_the_asked_batch():
    sess = FakeSession()
    m = latency.onnxruntime(sess, "s", batch=3, image_size=8, threads=2, warmup=1, repeats=2, max_seconds=60)
    assert (m.runtime, m.batch, m.threads) == ("onnxruntime", 3, 2)
    assert len(sess.feeds) == 3
    x = sess.feeds[0]["images"]
    assert x.dtype == np.float32 and x.shape == (3, 3, 8, 8)


def test_sample_interleaved_takes_turns_within_one_budget():
    clock = FakeClock(0.0)
    order: list[str] = []

    def call(name: str, cost: float):
        def fn():
            order.append(name)
            clock.now += cost

        return fn

    samples = latency.sample_interleaved(
        {"teacher": call("teacher", 0.5), "student": call("student", 0.25)},
        warmup=1,
        repeats=100,
        max_seconds=6,
        clock=clock,
    )
    assert order[:6] == ["teacher", "student"] * 3  # warm-up, then turns
    # a turn takes 0.75 s: one of warm-up, then turns while time is left (starting at 0.75, ..., 5.25)
    assert samples["teacher"] == pytest.approx([500.0] * 7) and samples["student"] == pytest.approx(
        [250.0] * 7
    )
    assert clock.now == 6.0


def test_eager_in_turns_times_every_model_once_per_turn_and_says_how():
    """The several-model twin of ``eager``: one sample per model per turn, each labelled with its own
    name and runtime, a bigger model slower than a smaller one measured beside it."""
    small = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    big = nn.Sequential(nn.Conv2d(3, 64, 3), nn.Conv2d(64, 64, 3), nn.Flatten())
    got = latency.eager_in_turns({"small": small, "big": big}, batch=8, threads=1, repeats=20, max_seconds=5)
    assert {n: (m.name, m.runtime, m.batch, m.threads) for n, m in got.items()} == {
        "small": ("small", "eager", 8, 1),
        "big": ("big", "eager", 8, 1),
    }
    assert len(got["small"].samples_ms) == len(got["big"].samples_ms) == 20
    assert got["big"].median_ms > got["small"].median_ms


def test_busy_message_only_when_the_load_exceeds_the_cores(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setattr("os.getloadavg", lambda: (1.5, 1.0, 1.0))
    assert latency.busy_message() is None
    monkeypatch.setattr("os.getloadavg", lambda: (7.04, 5.0, 3.0))
    message = latency.busy_message()
    assert message.startswith("This machine is busy (load 7.0 on 2 cores)")
