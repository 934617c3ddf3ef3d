"""int8 against float ONNX on the shipped CIFAR-10 student: accuracy change on CIFAR-10's test images
and speed-up at batch 1 and 64, for ONNX Runtime's dynamic and static (QDQ) quantisation.

The student is exported and quantised exactly as ``python -m kdviz export --int8`` does
(:func:`kdviz.bench.deploy.export_model`): the float graph is checked against PyTorch on real
images first, static quantisation is calibrated on 32 training images, float and int8 are timed in
turns (:func:`kdviz.bench.latency.sample_interleaved`) so the machine's drift falls on both.

Run alone: ``.venv/bin/python benchmarks/bench_int8.py [--quick] [--threads 2]``; needs
``../shared/data/cifar10`` (skipped with a reason when absent).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, write_results
from kdviz.bench.deploy import export_model
from kdviz.core import settings
from kdviz.core.machine import describe
from kdviz.data import load_dataset
from kdviz.models import load_model

ROOT = Path(__file__).resolve().parents[1]
STUDENT = ROOT / "assets" / "cifar10_student"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1,000 test images and 4 s of timing per batch size")
    p.add_argument("--threads", type=int, default=min(2, torch.get_num_threads()))
    args = p.parse_args(argv)
    cifar = settings.data_root() / "cifar10"
    if not cifar.is_dir():
        print(f"skipped: {cifar} not found (the int8 benchmark needs CIFAR-10's test images)")
        return 0
    data = load_dataset(f"cifar10:{cifar}")
    loaded = load_model(STUDENT, data=data)
    limit = 1000 if args.quick else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("static", "dynamic"):
            start = time.perf_counter()
            report = export_model(
                loaded,
                Path(tmp) / f"student-{method}.onnx",
                data,
                int8=method,
                eval_limit=limit,
                threads=args.threads,
                timing_seconds=4.0 if args.quick else 15.0,
                progress=lambda m: print(m, flush=True),
            )
            q = report.int8
            ms = q["latency_ms"]
            rows.append(
                {
                    "model": f"{loaded.card.arch} (assets/cifar10_student)",
                    "int8 method": method,
                    "test images": q["images"],
                    "float accuracy": round(q["accuracy_float"], 4),
                    "int8 accuracy": round(q["accuracy_int8"], 4),
                    "change (points)": round(q["accuracy_change"] * 100, 2),
                    "same prediction": round(q["agreement"], 4),
                    "float ms b1": round(ms["float_batch1"], 3),
                    "int8 ms b1": round(ms["int8_batch1"], 3),
                    "speed-up b1": round(q["speedup_batch1"], 2),
                    "float ms b64": round(ms["float_batch64"], 2),
                    "int8 ms b64": round(ms["int8_batch64"], 2),
                    "speed-up b64": round(q["speedup_batch64"], 2),
                    "float MB": round(report.size_bytes / 1e6, 2),
                    "int8 MB": round(q["size_bytes"] / 1e6, 2),
                    "opset": report.opset,
                    "threads": args.threads,
                    "seconds": round(time.perf_counter() - start, 1),
                }
            )
    write_results("int8", rows, {**machine(), "describe": describe(), "quick": args.quick})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
