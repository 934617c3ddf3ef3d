"""Training throughput (images/s) of the paper's teacher and each registered MobileNet-V2 student.

Each model is trained by kdviz's own loop (``kdviz.training.train``: augmentation, SGD, loss and
backward, the optimizer step) on CIFAR-10 from ``../shared/data`` where it exists (else the
built-in digits, shown as 32×32 like CIFAR), batch 64. The first steps are warm-up; the rate is
images over the time of the steps after them, read from the loop's own progress callback, and the
run is stopped through ``should_stop`` (the loop's stop), so no evaluation is timed.

Run alone: ``.venv/bin/python benchmarks/bench_train.py [--quick] [--threads N]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, machine, write_results
from kdviz.bench.latency import torch_threads
from kdviz.data import load_dataset
from kdviz.models import count_params, create_model, list_models
from kdviz.training.loop import TrainConfig, train

CIFAR10 = ROOT.parent / "shared" / "data" / "cifar10"
TEACHER = "mobilenetv2_cifar"
BATCH = 64


def models(quick: bool) -> list[str]:
    if quick:
        return [TEACHER, "mnv2_student_4x", "mnv2_student_4x_edge"]
    return [s.name for s in list_models("mobilenetv2") if s.name != "mobilenetv2_cifar_cut"]


def images_per_second(name: str, data, warmup: int, steps: int) -> tuple[float, float]:
    """Images/s over ``steps`` training steps after ``warmup`` steps, and the seconds they took."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=data.num_classes)
    stamps: list[float] = []

    def on_event(event) -> None:
        if event.kind == "step":
            stamps.append(time.perf_counter())

    cfg = TrainConfig(epochs=1, batch_size=BATCH, train_limit=BATCH * (warmup + steps + 1), eval_limit=BATCH)
    train(model, data, cfg, callback=on_event, should_stop=lambda: len(stamps) >= warmup + steps, write=False)
    seconds = stamps[-1] - stamps[warmup - 1]
    return BATCH * steps / seconds, seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the teacher and two 4× students, fewer steps")
    p.add_argument("--threads", type=int, default=min(2, torch.get_num_threads()))
    args = p.parse_args(argv)
    source = f"cifar10:{CIFAR10}" if CIFAR10.is_dir() else "digits"
    data = load_dataset(source)
    warmup, steps = (2, 4) if args.quick else (3, 10)
    rows = []
    with torch_threads(args.threads):
        for name in models(args.quick):
            rate, seconds = images_per_second(name, data, warmup, steps)
            rows.append(
                {
                    "model": name,
                    "parameters": count_params(create_model(name)),
                    "data": data.name,
                    "batch": BATCH,
                    "timed steps": steps,
                    "seconds": round(seconds, 2),
                    "images/s": round(rate, 1),
                }
            )
            print(rows[-1], flush=True)
    teacher = next(r for r in rows if r["model"] == TEACHER)["images/s"]
    for r in rows:
        r["× teacher's rate"] = round(r["images/s"] / teacher, 2)
        r["one CIFAR-10 epoch, min"] = round(50_000 / r["images/s"] / 60, 1)
    write_results("train", rows, machine() | {"threads used": args.threads, "data": source})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
