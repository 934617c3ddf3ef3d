"""Integrated Gradients at 224 px for a MobileNet-V3-small-sized model: time per image at kdviz's
default steps on 2 cores, and the internal batch size (the chunk of the steps Captum runs at once)
that gives it.

Random weights (the cost does not depend on them): ``timm:mobilenetv3_small_100`` and torchvision's
``mobilenet_v3_small``, one 224-px image at a time through :func:`kdviz.attribution.attribute`
(the path the Attributions page and ``python -m kdviz attribute`` take), zero baseline.

Run alone: ``.venv/bin/python benchmarks/bench_ig224.py [--quick] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, median_of, write_results
from kdviz.attribution import DEFAULT_IG_STEPS, AttributionOptions, attribute
from kdviz.core.machine import describe
from kdviz.models import count_params, create_model

SIZE = 224
MODELS = ("timm:mobilenetv3_small_100", "torchvision:mobilenet_v3_small")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the timm model, three batch sizes, one timing each")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=DEFAULT_IG_STEPS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    batches = (12, 24, 72) if args.quick else (6, 12, 18, 24, 36, 72)
    options = AttributionOptions(method="ig", steps=args.steps)
    rows = []
    for arch in MODELS[:1] if args.quick else MODELS:
        torch.manual_seed(0)
        model = create_model(arch, num_classes=1000).eval()
        x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
        for batch in batches:

            def once(batch=batch, model=model, x=x):
                attribute(
                    model, x, options, mean=[0.5] * 3, std=[0.5] * 3, cache=False, internal_batch_size=batch
                )

            seconds, samples = median_of(once, repeats=1 if args.quick else 3, warmup=1)
            rows.append(
                {
                    "model": arch,
                    "params": count_params(model),
                    "image px": SIZE,
                    "IG steps": args.steps,
                    "internal batch": batch,
                    "s per image": round(seconds, 3),
                    "images per s": round(1 / seconds, 3),
                    "threads": args.threads,
                    "samples s": [round(s, 3) for s in samples],
                }
            )
            print(rows[-1], flush=True)
    for arch in {r["model"] for r in rows}:
        best = min((r for r in rows if r["model"] == arch), key=lambda r: r["s per image"])
        best["fastest for this model"] = True
    write_results("ig224", rows, {**machine(), "describe": describe(), "quick": args.quick})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
