"""``data`` and ``models``: what this machine can load and which architectures there are."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..core import settings
from .common import CLIError, add_image_size, emit, load_data


def cmd_data(args: argparse.Namespace) -> int:
    from ..data import available_sources

    if not args.source:
        sources = available_sources()
        if args.json:
            print(json.dumps({"sources": sources, "data_root": str(settings.data_root())}))
        else:
            print(f"data root (KDVIZ_DATA): {settings.data_root()}")
            for s in sources:
                print(f"  {s['source']:<10} {s['where']}")
        return 0
    data = load_data(args.source, download=args.download, image_size=args.image_size)
    summary = data.summary()
    summary["train_per_class"] = [int((data.train.labels == c).sum()) for c in range(data.num_classes)]
    emit(summary, args.json)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from ..data import DataError, check_image_size
    from ..models import create_model, list_models, model_stats

    try:
        check_image_size(args.image_size)
    except DataError as exc:
        raise CLIError(f"--image-size: {exc}") from None
    if args.students_of:
        return _students(args)
    if args.search is not None:
        from ..models.library import search

        hits = search(args.search, limit=args.limit)
        print(json.dumps(hits) if args.json else "\n".join(hits))
        return 0 if hits else 1

    rows: list[dict[str, Any]] = []
    for spec in list_models():
        stats = model_stats(create_model(spec.name, num_classes=args.num_classes), args.image_size)
        rows.append(
            {
                "name": spec.name,
                "family": spec.family,
                "params": stats.params,
                "macs": stats.macs,
                "image_size": args.image_size,
                "size_bytes": stats.size_bytes,
                "description": spec.description,
                "arguments": spec.signature(),
            }
        )
    if args.json:
        print(json.dumps(rows))
    else:
        print(f"{'name':<22}{'params':>12}{'MMACs':>10}  description (MACs at {args.image_size} px)")
        for r in rows:
            print(f"{r['name']:<22}{r['params']:>12,}{r['macs'] / 1e6:>10.1f}  {r['description']}")
    return 0


def _students(args: argparse.Namespace) -> int:
    """Students derived from a teacher by its library's width or depth knob, with measured compression."""
    from ..models.derive import derived_students
    from .common import CLIError, json_arg

    kwargs = json_arg(args.arch_kwargs, "--arch-kwargs") or {}
    found = derived_students(args.students_of, kwargs, ratio=args.ratio, num_classes=args.num_classes)
    if not found:
        raise CLIError(f"kdviz knows no width or depth knob of {args.students_of}: name a student yourself")
    if args.json:
        print(json.dumps([s.as_dict() for s in found]))
        return 0
    order = f", nearest {args.ratio:g}x first" if args.ratio else ""
    print(f"students of {args.students_of} (measured parameter compression{order}):")
    print(f"{'architecture':<38}{'arguments':<22}{'knob':<8}{'params':>12}{'compression':>13}")
    for s in found:
        extra = json.dumps(s.arch_kwargs) if s.arch_kwargs else ""
        print(f"{s.arch:<38}{extra:<22}{s.knob:<8}{s.params:>12,}{s.compression:>12.2f}x")
    return 0


def add_data(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("data", help="list data sources, or load one and summarise it")
    d.add_argument("source", nargs="?", help="digits, shapes, cifar10, cifar10:PATH or an image folder")
    add_image_size(d)
    d.add_argument(
        "--download", action="store_true", help="download CIFAR-10 through torchvision if not found"
    )
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_data)


def add_models(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser(
        "models",
        help="list the registered architectures with their cost, search torchvision's and timm's, "
        "or derive students from a teacher",
    )
    m.add_argument("--num-classes", type=int, default=10)
    m.add_argument(
        "--image-size",
        type=int,
        default=32,
        metavar="PX",
        help="count multiply-adds at PX×PX inputs (default 32); every registered model takes any size",
    )
    m.add_argument(
        "--search",
        metavar="WORDS",
        help="torchvision:/timm: names containing the words (e.g. 'timm mobilenetv3')",
    )
    m.add_argument("--limit", type=int, default=50, help="at most this many search results")
    m.add_argument(
        "--students-of",
        metavar="ARCH",
        help="students derived from this teacher through its width or depth knob, with measured compression",
    )
    m.add_argument("--arch-kwargs", help="JSON: the teacher's arguments, e.g. '{\"width_mult\": 1.0}'")
    m.add_argument("--ratio", type=float, help="with --students-of: the wanted compression (nearest first)")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_models)
