"""``attribute`` and ``ig-precompute``: one image's map, and the teacher's maps of a whole split."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from ..core import settings
from ..core.lock import check_free
from .common import (
    CLIError,
    add_image_size,
    check_sizes,
    emit,
    floats,
    load_data,
    resolve_weights,
    stop_on_sigint,
)


def _load_for_attribution(args: argparse.Namespace):
    """Model, card and normalisation for attribute / ig-precompute."""
    from ..data import IMAGENET_MEAN, IMAGENET_STD
    from ..models.checkpoints import load_model

    weights = resolve_weights(args.weights)
    data = load_data(args.data, image_size=args.image_size) if getattr(args, "data", None) else None
    num_classes = data.num_classes if data is not None else 10
    loaded = load_model(weights, args.arch, num_classes=num_classes)
    card = loaded.card
    from_card = card.source_file is None
    if from_card and args.image_size is not None and args.image_size != card.image_size:
        raise CLIError(
            f"{weights} takes {card.image_size}×{card.image_size} images (its card); "
            f"--image-size {args.image_size} does not fit it"
        )
    if not from_card:  # a file from elsewhere takes the size it is told, else its data's, else 32
        card.image_size = args.image_size or (data.image_size if data is not None else card.image_size)
    if data is not None:
        check_sizes(card, data)
    default_mean = card.mean if from_card else list(data.mean if data is not None else IMAGENET_MEAN)
    default_std = card.std if from_card else list(data.std if data is not None else IMAGENET_STD)
    mean = floats(args.mean, "--mean") or default_mean
    std = floats(args.std, "--std") or default_std
    loaded.model.to(args.device or settings.device())
    return loaded, data, mean, std


def cmd_attribute(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from ..attribution import DEFAULT_IG_STEPS, AttributionOptions, AttributionStopped, attribute
    from ..core import atomic
    from ..data.images import read_image
    from ..data.loader import normalize, to_float

    options = AttributionOptions(
        method=args.method,
        steps=DEFAULT_IG_STEPS if args.steps is None else args.steps,
        rule=args.rule,
        baseline=args.baseline,
        target=int(args.target) if args.target.isdigit() else args.target,
    )
    if options.target == "true":
        raise CLIError("--target true needs a label; give a class index or 'pred'")
    image_path = Path(args.image)
    if not image_path.is_file():
        raise CLIError(f"no such image: {image_path}")
    loaded, _, mean, std = _load_for_attribution(args)
    card = loaded.card
    image = read_image(image_path.read_bytes(), size=card.image_size, name=image_path.name)
    x = normalize(to_float(image.model_input[None]), mean, std)
    stop = stop_on_sigint("nothing is written")
    bar = tqdm(
        desc=f"{options.method} {card.image_size}×{card.image_size}",
        unit="eval",
        file=sys.stderr,
        disable=args.json or options.method != "ig",
        leave=False,
    )

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        result = attribute(
            loaded.model,
            x,
            options,
            mean=mean,
            std=std,
            cache=not args.no_cache,
            progress=progress,
            should_stop=lambda: stop["asked"],
        )
    except AttributionStopped:
        bar.close()
        return 130
    bar.close()
    target = int(result.target[0])
    names = card.class_names or [str(i) for i in range(card.num_classes)]
    probs = result.probs[0]
    top = np.argsort(-probs)[:5]
    out = {
        "target": target,
        "label": names[target] if target < len(names) else str(target),
        "score": float(result.logits[0, target]),
        "baseline_score": None if result.baseline_score is None else float(result.baseline_score[0]),
        "delta": None if result.delta is None else float(result.delta[0]),
        "relative_delta": None if result.relative_delta is None else float(result.relative_delta[0]),
        "method": options.method,
        "steps": options.steps,
        "rule": options.rule,
        "baseline": options.baseline,
        "shape": list(result.maps.shape[1:]),
        "top5": [
            {"class": int(k), "label": names[k] if k < len(names) else str(k), "probability": float(probs[k])}
            for k in top
        ],
        "image_notes": image.notes,
        "cached": bool(result.cached[0]),
    }
    if args.out:
        atomic.write_npy(args.out, result.maps[0].astype(np.float32))
        out["out"] = str(args.out)
    emit(out, args.json)
    return 0


def cmd_ig_precompute(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..attribution.igcache import precompute
    from ..training import ddp

    ctx = ddp.init_distributed(backend="gloo")  # IG's ranks only meet at barriers: gloo on any device
    rank, world = ctx.rank, ctx.world
    if rank == 0:
        check_free(args.out)  # a cache another process is making is refused before the bar is drawn
    loaded, data, mean, std = _load_for_attribution(args)
    bar = tqdm(desc=f"IG maps (rank {rank}/{world})", unit="img", file=sys.stderr, disable=args.json)
    stop = {"asked": False}

    def on_sigint(signum, frame):
        stop["asked"] = True
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    signal.signal(signal.SIGINT, on_sigint)

    def progress(done: int, total: int, rate: float) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix(img_per_s=f"{rate:.1f}")
        bar.refresh()

    started = __import__("time").perf_counter()
    store = precompute(
        loaded.model,
        data,
        args.out,
        mean=mean,
        std=std,
        split=args.split,
        steps=args.steps,
        rule=args.rule,
        baseline=args.baseline,
        batch_size=args.batch_size,
        limit=args.limit,
        teacher_name=str(args.weights),
        progress=progress,
        should_stop=lambda: stop["asked"],
        rank=rank,
        world=world,
        barrier=ctx.barrier,
        internal_batch_size=args.internal_batch_size,
    )
    bar.close()
    seconds = __import__("time").perf_counter() - started
    done = store.done
    ddp.shutdown(ctx)
    if rank == 0:
        size = sum(f.stat().st_size for f in Path(args.out).iterdir() if f.is_file())
        emit(
            {
                "out": str(args.out),
                "images": int(len(store)),
                "done": int(done.sum()),
                "complete": bool(done.all()),
                "seconds": round(seconds, 2),
                "bytes": size,
                "world_size": world,
            },
            args.json,
        )
    return 0 if done.all() else 130


def add_attribute(sub: argparse._SubParsersAction) -> None:
    at = sub.add_parser(
        "attribute", help="attribution map of one image (IG, Saliency, SmoothGrad, Grad-CAM, Occlusion)"
    )
    at.add_argument(
        "--weights", required=True, help="checkpoint folder or file, a run name, or an asset name"
    )
    at.add_argument("--arch", help="architecture, for a foreign file without a card")
    at.add_argument("--image", required=True, help="PNG, JPEG, WebP, BMP, GIF, TIFF; any size")
    at.add_argument(
        "--method", default="ig", choices=["ig", "saliency", "smoothgrad", "gradcam", "occlusion"]
    )
    at.add_argument(
        "--steps",
        type=int,
        help="IG steps (default: the fewest that keep the median completeness gap under 1 %%, "
        "see kdviz.attribution.DEFAULT_IG_STEPS)",
    )
    at.add_argument(
        "--rule",
        default="gausslegendre",
        choices=["gausslegendre", "riemann_trapezoid", "riemann_middle", "riemann_left", "riemann_right"],
    )
    at.add_argument("--baseline", default="zero", choices=["zero", "black", "blur", "noise", "mean", "multi"])
    at.add_argument("--target", default="pred", help="'pred' or a class index")
    at.add_argument("--data", help="data set whose normalisation a foreign file uses (default: ImageNet's)")
    add_image_size(at, "the image (a kdviz model's card gives it; a file from elsewhere: default 32)")
    at.add_argument("--mean")
    at.add_argument("--std")
    at.add_argument("--out", help="write the map (float32, channels × height × width) to this .npy")
    at.add_argument("--no-cache", action="store_true", help="neither read nor write the attribution cache")
    at.add_argument("--device")
    at.add_argument("--json", action="store_true")
    at.set_defaults(func=cmd_attribute)


def add_ig_precompute(sub: argparse._SubParsersAction) -> None:
    ig = sub.add_parser(
        "ig-precompute", help="the teacher's IG map of every image of a split (resumable; torchrun shards it)"
    )
    ig.add_argument(
        "--weights", required=True, help="the teacher: checkpoint folder or file, run or asset name"
    )
    ig.add_argument("--arch")
    ig.add_argument("--data", default="digits")
    add_image_size(ig, "the split (it must be the teacher's size, in its card)")
    ig.add_argument("--split", choices=["train", "test"], default="train")
    ig.add_argument("--out", required=True, help="cache folder (resumed if it exists)")
    ig.add_argument("--steps", type=int, default=32)
    ig.add_argument("--rule", default="gausslegendre")
    ig.add_argument("--baseline", default="zero", choices=["zero", "black", "blur", "noise", "mean"])
    ig.add_argument(
        "--batch-size", type=int, default=16, help="images per chunk (a chunk is the unit of resume)"
    )
    ig.add_argument("--internal-batch-size", type=int, help="IG's expanded inputs per forward pass")
    ig.add_argument("--limit", type=int, help="only the first N images of the split")
    ig.add_argument("--mean")
    ig.add_argument("--std")
    ig.add_argument("--device")
    ig.add_argument("--json", action="store_true")
    ig.set_defaults(func=cmd_ig_precompute)
