"""What each technique of the fast recipe buys: the recipe whole, then with each technique off.

Every variant is a full ``train_run`` of one model (default ``airnet_student_8x``: small enough that
eight variants fit in well under an hour on 2 cores) on all 50,000 CIFAR-10 training images, same
seed, same epochs; the table gives test accuracy, accuracy with test-time augmentation and the
training time, each against the whole recipe. ``--precision both`` adds the whole recipe in the
other precision, so float32 and bfloat16 are compared on one model in one run of this script.
Runs are resumable: start the command again after an interruption and finished variants are reused.

    .venv/bin/python benchmarks/bench_fast_techniques.py --epochs 6 --precision bfloat16
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, machine, write_results
from kdviz.data import load_dataset
from kdviz.training.workflows import FAST_TECHNIQUES, TrainRequest, fast_config, train_run
from kdviz.training.workspace import Workspace

CIFAR10 = ROOT.parent / "shared" / "data" / "cifar10"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="airnet_student_8x")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--precision", default="bfloat16", choices=["float32", "bfloat16", "both"])
    p.add_argument("--only", default="", help="comma-separated techniques (default: every one)")
    p.add_argument("--workspace", default=str(ROOT / "runs" / "bench-techniques"))
    args = p.parse_args(argv)
    if not CIFAR10.is_dir():
        print(f"skipped: {CIFAR10} not found (this benchmark needs the real CIFAR-10 folders)")
        return 0
    data = load_dataset(f"cifar10:{CIFAR10}")
    main_precision = "bfloat16" if args.precision == "both" else args.precision
    techniques = [t for t in args.only.split(",") if t] or list(FAST_TECHNIQUES)
    variants: list[tuple[str, tuple[str, ...], str]] = [("whole recipe", (), main_precision)]
    variants += [(f"without {t}", (t,), main_precision) for t in techniques]
    if args.precision == "both":
        variants.append(("whole recipe, float32", (), "float32"))
    ws = Workspace(args.workspace)
    rows = []
    for label, off, precision in variants:
        cfg = fast_config(args.epochs, precision=precision, off=off)
        name = f"{args.arch}-{args.epochs}ep-{precision}-" + ("-".join(off) or "all")
        request = TrainRequest(name=name, arch=args.arch, dataset=data.source, config=cfg)
        run_dir, result = train_run(request, workspace=ws, data=data)
        metrics = json.loads((run_dir / "card.json").read_text())["metrics"]
        rows.append(
            {
                "variant": label,
                "precision": precision,
                "test accuracy": metrics["test_accuracy"],
                "TTA accuracy": metrics.get("test_accuracy_tta"),
                "train minutes": round(metrics["train_seconds"] / 60, 2),
            }
        )
        print(rows[-1], flush=True)
    whole = rows[0]
    for r in rows:
        r["Δ accuracy, points"] = round(100 * (r["test accuracy"] - whole["test accuracy"]), 2)
        r["time × whole"] = round(r["train minutes"] / whole["train minutes"], 2)
    write_results(
        "fast_techniques",
        rows,
        machine()
        | {"arch": args.arch, "epochs": args.epochs, "data": "CIFAR-10 JPEG folders, 50,000 / 10,000"},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
