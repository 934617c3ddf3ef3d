"""Integrated Gradients: throughput against the roofline, steps against completeness, upload latency,
and the cost of the whole-CIFAR-10 IG cache.

Roofline: IG's work is one forward and one backward pass (to the input) per step and image, so the
best IG rate a machine can reach is the model's best forward-and-backward throughput over batch
sizes, divided by the steps. ``ig-precompute`` is measured against it (target: at least 0.9), and
against a plain per-image Captum loop. It runs the teacher folded and channels-last, so the roofline
is that network's; the plain model's is reported beside it.

Run alone: ``.venv/bin/python benchmarks/bench_attribution.py [--quick]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, median_of, write_results
from kdviz.attribution import DEFAULT_IG_STEPS, AttributionOptions, attribute, throughput
from kdviz.attribution.igcache import precompute
from kdviz.data import IMAGENET_MEAN, IMAGENET_STD, load_dataset
from kdviz.data.loader import normalize, to_float
from kdviz.models import load_model, pretrained_path
from kdviz.models.speedups import fused_for_inference

ROOT = Path(__file__).resolve().parents[1]
STEPS = 32


def roofline(model, image_size: int, batches=(8, 16, 32, 64, 128, 256)) -> tuple[float, int, dict]:
    rates = {b: throughput(model, b, image_size, repeats=3) for b in batches}
    best = max(rates, key=rates.get)
    return rates[best], best, rates


def precompute_rate(model, data, mean, std, n: int, steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        precompute(model, data, tmp, mean=mean, std=std, limit=n, steps=steps, batch_size=16)
        return n / (time.perf_counter() - start)


def captum_loop_rate(model, data, mean, std, n: int, steps: int) -> float:
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(model)
    x = normalize(to_float(data.train.images[:n]), mean, std)
    y = torch.as_tensor(data.train.labels[:n])
    start = time.perf_counter()
    for i in range(n):
        ig.attribute(x[i : i + 1], baselines=torch.zeros_like(x[i : i + 1]), target=int(y[i]), n_steps=steps)
    return n / (time.perf_counter() - start)


def throughput_rows(name, model, data, mean, std, n: int) -> list[dict]:
    """``ig-precompute`` runs the teacher folded and channels-last (kdviz.models.speedups), so its roofline is
    that network's; the model as loaded gives the plain roofline and the per-image Captum loop."""
    x = normalize(to_float(data.train.images[:8]), mean, std)
    fast = fused_for_inference(model, x)
    best, best_batch, rates = roofline(fast, data.image_size)
    plain_best, _, _ = roofline(model, data.image_size)
    ig_roof = best / STEPS
    fastest = precompute_rate(model, data, mean, std, n, STEPS)
    loop = captum_loop_rate(model, data, mean, std, max(4, n // 4), STEPS)
    return [
        {
            "model": name,
            "steps": STEPS,
            "fwd+bwd img/s (best, folded)": round(best, 1),
            "best batch": best_batch,
            "roofline IG img/s": round(ig_roof, 2),
            "ig-precompute img/s": round(fastest, 2),
            "share of roofline": round(fastest / ig_roof, 3),
            "plain model's roofline IG img/s": round(plain_best / STEPS, 2),
            "per-image Captum loop img/s (plain model)": round(loop, 2),
            "speed-up over loop": round(fastest / loop, 2),
            "fwd+bwd img/s by batch": {str(k): round(v, 1) for k, v in rates.items()},
        }
    ]


def steps_rows(name, model, x, mean, std, steps_list) -> list[dict]:
    rows = []
    for rule in ("gausslegendre", "riemann_trapezoid"):
        for steps in steps_list:
            opts = AttributionOptions(method="ig", steps=steps, rule=rule, baseline="zero")
            r = attribute(model, x, opts, mean=mean, std=std, cache=False)
            rel = r.relative_delta
            rows.append(
                {
                    "model": name,
                    "rule": rule,
                    "steps": steps,
                    "median |delta| / |F(x)-F(b)|": round(float(np.median(rel)), 4),
                    "p90": round(float(np.percentile(rel, 90)), 4),
                    "images": len(rel),
                }
            )
    return rows


def fewest_steps(rows: list[dict], bar: float = 0.01) -> list[dict]:
    """Per model and rule, the fewest steps from which the median relative gap stays under ``bar`` at
    every larger step count measured: the default's basis. "Stays" because the gap does not fall
    step by step (quadrature error oscillates), and one lucky count must not set the default."""
    out = []
    for key in sorted({(r["model"], r["rule"]) for r in rows}):
        gaps = sorted(
            (r["steps"], r["median |delta| / |F(x)-F(b)|"]) for r in rows if (r["model"], r["rule"]) == key
        )
        fewest = None
        for steps, gap in reversed(gaps):
            if gap >= bar:
                break
            fewest = steps
        out.append(
            {
                "model": key[0],
                "rule": key[1],
                "fewest steps with median gap < 1 %": fewest,
                "kdviz default": DEFAULT_IG_STEPS,
            }
        )
    return out


def upload_rows(quick: bool) -> list[dict]:
    """Time from the bytes of an upload to both maps (default teacher and student), cache off."""
    import io

    from PIL import Image

    from kdviz.data.images import read_image

    teacher = load_model(ROOT / "assets" / "digits_teacher")
    student = load_model(ROOT / "assets" / "digits_student")
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)).save(buf, "JPEG")
    data = buf.getvalue()
    opts = AttributionOptions()

    def once():
        img = read_image(data, size=32)
        for lm in (teacher, student):
            x = lm.preprocess(img.model_input)
            attribute(lm.model, x, opts, mean=lm.card.mean, std=lm.card.std, cache=False)

    med, samples = median_of(once, repeats=3 if quick else 10, warmup=1)
    return [
        {
            "what": "upload (640×480 JPEG) → teacher and student IG maps",
            "steps": opts.steps,
            "median s": round(med, 3),
            "target s": 1.5,
            "runs": len(samples),
        }
    ]


def cache_cost_rows(quick: bool) -> list[dict]:
    """The whole CIFAR-10 training set through the ResNet-56 teacher: a slice measured, the rest
    extrapolated."""
    path = pretrained_path("resnet56")
    if not path.exists():
        print(f"skip IG-cache cost: {path} not found")
        return []
    model = load_model(path, "resnet56").model.eval()
    data = load_dataset("cifar10")
    n = 32 if quick else 96
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        precompute(
            model, data, tmp, mean=IMAGENET_MEAN, std=IMAGENET_STD, limit=n, steps=STEPS, batch_size=16
        )
        seconds = time.perf_counter() - start
        per_map = (Path(tmp) / "maps.npy").stat().st_size / n
    total = len(data.train)
    return [
        {
            "teacher": "resnet56 (pretrained)",
            "steps": STEPS,
            "slice": n,
            "slice s": round(seconds, 1),
            "img/s": round(n / seconds, 2),
            "whole train set (50,000) hours on this machine": round(total / (n / seconds) / 3600, 2),
            "disk MB": round(per_map * total / 1e6, 1),
        }
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    digits = load_dataset("digits")
    teacher = load_model(ROOT / "assets" / "digits_teacher")
    n = 32 if args.quick else 96
    rows = throughput_rows(
        "digits teacher (mobilenetv2_cifar ×0.5)",
        teacher.model,
        digits,
        teacher.card.mean,
        teacher.card.std,
        n,
    )
    r56 = pretrained_path("resnet56")
    if r56.exists():
        cifar = load_dataset("cifar10")
        rows += throughput_rows(
            "resnet56 (pretrained)",
            load_model(r56, "resnet56").model.eval(),
            cifar,
            IMAGENET_MEAN,
            IMAGENET_STD,
            n // 2,
        )
    write_results("attribution_throughput", rows, machine())

    steps_list = [8, 16, 32, 64] if args.quick else [8, 16, 24, 32, 48, 64, 72, 80, 96, 128]
    srows = []
    r20 = pretrained_path("resnet20")
    if r20.exists():
        cifar = load_dataset("cifar10")
        idx = np.linspace(0, len(cifar.test) - 1, 16 if args.quick else 48).round().astype(int)
        x = normalize(to_float(cifar.test.images[idx]), IMAGENET_MEAN, IMAGENET_STD)
        srows += steps_rows(
            "resnet20 on CIFAR-10 test",
            load_model(r20, "resnet20").model.eval(),
            x,
            IMAGENET_MEAN,
            IMAGENET_STD,
            steps_list,
        )
    x = normalize(
        to_float(digits.test.images[:: max(1, len(digits.test) // 48)][:48]),
        teacher.card.mean,
        teacher.card.std,
    )
    srows += steps_rows("digits teacher", teacher.model, x, teacher.card.mean, teacher.card.std, steps_list)
    write_results("attribution_steps", srows, machine())
    write_results("attribution_default_steps", fewest_steps(srows), machine())
    write_results("attribution_upload", upload_rows(args.quick), machine())
    write_results("attribution_cache_cost", cache_cost_rows(args.quick), machine())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
