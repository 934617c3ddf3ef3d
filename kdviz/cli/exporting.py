"""``export``: a checkpoint as an ONNX file for a device (and optionally its int8 copy), checked first."""

from __future__ import annotations

import argparse
import sys

from .common import CLIError, emit, load_data, resolve_weights


def cmd_export(args: argparse.Namespace) -> int:
    from ..bench.deploy import export_model
    from ..models import load_model, read_card

    weights = resolve_weights(args.weights)
    card = read_card(weights)
    source = args.data or card.dataset
    if not source:
        raise CLIError(
            f"{weights}'s card names no data set: pass --data (the export is checked on its images)"
        )
    try:
        data = load_data(source)
    except Exception as exc:  # noqa: BLE001 - any reason the data set is not here reads the same
        raise CLIError(
            f"the model's data set {source!r} cannot be loaded here ({exc}); the export is checked on "
            "real images: pass --data"
        ) from None
    loaded = load_model(weights, data=data)

    def say(message: str) -> None:
        if not args.json:
            print(message, file=sys.stderr)

    report = export_model(
        loaded,
        args.out,
        data,
        int8=args.int8,
        eval_limit=args.eval_limit or None,
        threads=args.threads,
        progress=say,
    )
    out = report.as_dict()
    if report.int8 and not args.json:
        q = report.int8
        out.pop("int8")
        out.update(
            int8=q["path"],
            int8_method=q["method"],
            accuracy_float=f"{q['accuracy_float']:.4f}",
            accuracy_int8=f"{q['accuracy_int8']:.4f} "
            f"({q['accuracy_change'] * 100:+.2f} points, {q['images']} images)",
            speedup=f"{q['speedup_batch1']:.2f}x at batch 1, {q['speedup_batch64']:.2f}x at batch 64",
        )
    emit(out, args.json)
    return 0


def add_export(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "export",
        help="export a model to ONNX for a device (checked against PyTorch on real images), optionally int8",
    )
    e.add_argument("--weights", required=True, help="run name, asset name or checkpoint folder/file")
    e.add_argument("--out", required=True, help="the .onnx file to write (its card goes beside it as .json)")
    e.add_argument(
        "--int8",
        nargs="?",
        const="auto",
        choices=["auto", "dynamic", "static"],
        help="also write FILE.int8.onnx, its accuracy and latency against float measured: ONNX "
        "Runtime's dynamic quantisation, or static QDQ calibrated on 32 training images; auto "
        "(default): static for a convnet (dynamic int8 convolutions run slower than float), else dynamic",
    )
    e.add_argument("--data", help="the data set to check on (default: the card's)")
    e.add_argument(
        "--eval-limit", type=int, default=2000, help="test images for the int8 accuracy (0: the whole split)"
    )
    e.add_argument("--threads", type=int, help="ONNX Runtime threads for the timing (default: all cores)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_export)
