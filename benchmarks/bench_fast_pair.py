"""Latency of the fast-recipe teacher and its students: eager PyTorch, batch 1 and batch 64.

The ``airnet`` family is timed in turns (``kdviz.bench.latency.sample_interleaved``: teacher and
student call by call, so a drifting load hits both alike) and each student's speed-up over
``airnet_cifar`` is the ratio of the two medians. The fast family's teacher is also set against the
paper's MobileNet-V2 teacher: its training throughput (one forward, backward and SGD step at batch
64), the basis of the "time to the teacher's accuracy" comparison in the README.

    .venv/bin/python benchmarks/bench_fast_pair.py [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, write_results
from kdviz.bench.latency import sample_interleaved, torch_threads
from kdviz.models import channels_last, count_params, create_model, list_models

TEACHER = "airnet_cifar"


def train_rate(name: str, batch: int = 64, steps: int = 6) -> float:
    """Training images a second (forward, backward, SGD step), after two warm-up steps."""
    torch.manual_seed(0)
    model = channels_last(create_model(name)).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=min(2, torch.get_num_threads()))
    args = p.parse_args(argv)
    names = [s.name for s in list_models("airnet")]
    rows = []
    with torch_threads(args.threads), torch.no_grad():
        models = {n: channels_last(create_model(n)).eval() for n in names}
        for batch in (1, 64):
            x = torch.randn(batch, 3, 32, 32)
            for name in names[1:]:
                times = sample_interleaved(
                    {n: (lambda m=models[n], x=x: m(x)) for n in (TEACHER, name)},
                    repeats=200 if batch == 1 else 30,
                    max_seconds=20.0,
                )
                t, s = statistics.median(times[TEACHER]), statistics.median(times[name])
                rows.append(
                    {
                        "student": name,
                        "batch": batch,
                        "teacher ms": round(t, 3),
                        "student ms": round(s, 3),
                        "speed-up": round(t / s, 2),
                        "compression": round(count_params(models[TEACHER]) / count_params(models[name]), 2),
                    }
                )
                print(rows[-1], flush=True)
    with torch_threads(args.threads):
        rates = {n: round(train_rate(n), 1) for n in (TEACHER, "mobilenetv2_cifar")}
    write_results(
        "fast_pair", rows, machine() | {"threads used": args.threads, "training images/s at batch 64": rates}
    )
    print(f"training images/s at batch 64: {rates}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
