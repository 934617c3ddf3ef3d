"""The fast CPU recipe on real CIFAR-10: accuracy against training wall time, epoch by epoch.

Trains one model with ``kdviz.recipes.fast_config`` through kdviz's own workflow (``train_run``:
the same code as ``python -m kdviz train --recipe fast`` and the Models page) on the JPEG folders
in ``../shared/data/cifar10``, all 50,000 training and 10,000 test images, and records after every
epoch the summed training seconds (evaluation excluded) and the test accuracy, then the
test-time-augmented accuracy. ``--off`` switches techniques off one at a time to measure what each
buys; ``--train-limit`` shortens a run for such comparisons. The run folder is resumable: start the
same command again after an interruption.

Writes ``benchmarks/results/fast_recipe_<label>.json`` and ``fast_recipe.html`` (every label's
accuracy-against-time curve in one Plotly figure).

    .venv/bin/python benchmarks/bench_fast_recipe.py --arch airnet_cifar --epochs 10 --label teacher-fp32
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, ROOT, machine, write_results
from kdviz.data import load_dataset
from kdviz.training.workflows import FAST_TECHNIQUES, TrainRequest, fast_config, train_run
from kdviz.training.workspace import Workspace

CIFAR10 = ROOT.parent / "shared" / "data" / "cifar10"


def figure(results: Path = RESULTS) -> Path:
    """One Plotly figure: test accuracy against training minutes, one line per measured label."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for path in sorted(results.glob("fast_recipe_*.json")):
        doc = json.loads(path.read_text())
        rows = doc["rows"]
        fig.add_scatter(
            x=[r["train minutes"] for r in rows],
            y=[100 * r["test accuracy"] for r in rows],
            mode="lines+markers",
            name=doc["machine"].get("label", path.stem),
        )
    fig.update_layout(
        title="Fast recipe on CIFAR-10 (JPEG test folder, 10,000 images)",
        xaxis_title="training wall time, minutes (evaluation excluded)",
        yaxis_title="test accuracy, %",
        template="plotly_white",
    )
    out = results / "fast_recipe.html"
    fig.write_html(out, include_plotlyjs="cdn")
    return out


def _overrides(pairs: list[str]) -> dict:
    """``["optimizer=muon", "lookahead=false"]`` → ``{"optimizer": "muon", "lookahead": False}``."""
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare word: a string field's value
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="airnet_cifar")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    p.add_argument(
        "--off", default="", help=f"techniques to switch off, comma-separated: {', '.join(FAST_TECHNIQUES)}"
    )
    p.add_argument("--train-limit", type=int, default=None, help="train on a fixed subset of N images")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any other TrainConfig field, the value read as JSON (optimizer=muon, lookahead=false)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", required=True, help="names the results file and the run folder")
    p.add_argument("--workspace", default=str(ROOT / "runs" / "bench"), help="where the run folder goes")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if not CIFAR10.is_dir():
        print(f"skipped: {CIFAR10} not found (this benchmark needs the real CIFAR-10 folders)")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    off = tuple(t for t in args.off.split(",") if t)
    cfg = fast_config(
        args.epochs,
        args.batch_size,
        precision=args.precision,
        off=off,
        train_limit=args.train_limit,
        seed=args.seed,
        **_overrides(args.set),
    )
    data = load_dataset(f"cifar10:{CIFAR10}")
    request = TrainRequest(name=f"fast-{args.label}", arch=args.arch, dataset=data.source, config=cfg)

    def progress(event) -> None:
        if event.kind == "epoch" and event.record is not None:
            r = event.record
            print(
                f"epoch {r.epoch}/{event.epochs}: test {r.test_acc:.4f}  loss {r.train_loss:.3f}  "
                f"{r.seconds:.0f} s  {r.images_per_second:.0f} img/s",
                flush=True,
            )

    t0 = time.perf_counter()
    run_dir, result = train_run(request, workspace=Workspace(args.workspace), data=data, callback=progress)
    wall = time.perf_counter() - t0
    card = json.loads((run_dir / "card.json").read_text())
    rows, total = [], 0.0
    for r in result.history:
        total += r.seconds
        rows.append(
            {
                "epoch": r.epoch,
                "train minutes": round(total / 60, 2),
                "test accuracy": r.test_acc,
                "train loss": round(r.train_loss, 4),
                "images/s": round(r.images_per_second, 1),
            }
        )
    metrics = card["metrics"]
    extra = machine() | {
        "label": args.label,
        "arch": args.arch,
        "precision": args.precision,
        "off": list(off),
        "set": _overrides(args.set),
        "epochs": args.epochs,
        "train_limit": args.train_limit,
        "seed": args.seed,
        "test accuracy": metrics.get("test_accuracy"),
        "test accuracy, TTA": metrics.get("test_accuracy_tta"),
        "train minutes": round(metrics.get("train_seconds", 0.0) / 60, 2),
        "wall minutes of this call (evaluation included)": round(wall / 60, 2),
        "run": str(run_dir),
    }
    write_results(f"fast_recipe_{args.label}", rows, extra)
    print(
        f"final: {metrics.get('test_accuracy'):.4f}, with TTA {metrics.get('test_accuracy_tta')}; "
        f"{extra['train minutes']} min of training → {figure()}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
