"""Seconds per training epoch of every kind of run the issue-12 study makes, to size its parts.

For each airnet student of the study and the sweep, trains one short epoch on a slice of the real
CIFAR-10 training images (default 4,096; the study uses all 50,000) with the study's settings
(:data:`kdviz.experiments.presets.STUDY_TRAIN`, bfloat16) for the arms that cost differently: the
baseline (no teacher), KD (teacher forward each step), and for the 4× student IG (overlays), AT (the
teacher's unfused forward with a hook) and AT reading a teacher cache another arm wrote. Also the
teacher's IG-cache rate (images per second, 16 steps). Scaled to 50,000 images these give the plan's
expected minutes (:mod:`kdviz.experiments.plan`). Writes ``benchmarks/results/study_plan.json``.

    nice -n 10 .venv/bin/python benchmarks/bench_study_plan.py --images 4096
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, machine, write_results
from kdviz.attribution.igcache import precompute
from kdviz.data import load_dataset
from kdviz.experiments.presets import STUDY_TRAIN
from kdviz.models.checkpoints import load_model
from kdviz.training import DistillConfig, DistillRequest, distill_run, subset_dataset

CIFAR10 = ROOT.parent / "shared" / "data" / "cifar10"
STUDENTS = ("airnet_student_4x", "airnet_student_2x", "airnet_student_8x", "airnet_student_16x",
            "airnet_student_32x", "airnet_student_64x")  # fmt: skip


def epoch_seconds(arm, student, teacher, data, store, work: Path, cache: Path | None, block) -> float:
    cfg = DistillConfig(**{**STUDY_TRAIN, "epochs": 1, "eval_limit": 256, "arm": arm, "seed": 0})
    run = work / f"{student}-{arm.replace('+', '-')}-{time.monotonic_ns()}"
    request = DistillRequest(name=run.name, arch=student, dataset=data.source, config=cfg)
    _, result = distill_run(
        request, teacher, data, run, store=store, teacher_cache=cache, attention_block=block
    )
    return result.history[-1].seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--students", default=",".join(STUDENTS))
    args = parser.parse_args()
    if not CIFAR10.is_dir():
        sys.exit(f"{CIFAR10} not found: this benchmark needs ../shared/data (see README)")
    data = subset_dataset(load_dataset(str(CIFAR10)), args.images, 0)
    teacher = load_model(ROOT / "assets" / "cifar10_teacher", data=data)
    work = Path(tempfile.mkdtemp(prefix="kdviz-plan-"))
    rows = []
    try:
        t0 = time.perf_counter()
        n_ig = min(512, args.images)
        ig_data = subset_dataset(data, n_ig, 0)
        store = precompute(teacher.model, ig_data, work / "ig", mean=teacher.card.mean, std=teacher.card.std,
                           split="train", steps=16, rule="gausslegendre", baseline="zero")  # fmt: skip
        ig_rate = n_ig / (time.perf_counter() - t0)
        rows.append({"what": "teacher IG cache, 16 steps", "images/s": round(ig_rate, 1),
                     "minutes for 50,000": round(50_000 / ig_rate / 60, 1)})  # fmt: skip
        full_store = None
        for student in args.students.split(","):
            arms = ["baseline", "kd"] + (
                ["ig", "at", "at (cached teacher)"] if student.endswith("_4x") else []
            )
            for arm in arms:
                cache = work / f"cache-{student}" if arm.startswith("at") or arm == "kd" else None
                real = arm.split(" ")[0]
                store = None
                if real in ("ig", "kd+ig"):
                    if full_store is None:
                        full_store = precompute(teacher.model, data, work / "ig-all", mean=teacher.card.mean,
                                                std=teacher.card.std, split="train", steps=2)  # fmt: skip
                    store = full_store
                if arm == "at":
                    shutil.rmtree(work / f"cache-{student}", ignore_errors=True)  # compute, not read
                secs = epoch_seconds(real, student, teacher, data, store, work, cache, -1)
                per_50k = round(secs * 50_000 / args.images, 1)
                rows.append(
                    {
                        "what": f"{student} {arm}",
                        "seconds per epoch": round(secs, 2),
                        "images/s": round(args.images / secs, 1),
                        "seconds per 50,000-image epoch": per_50k,
                    }
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_results("study_plan", rows, {**machine(), "images": args.images, "precision": "bfloat16"})


if __name__ == "__main__":
    main()
