"""``train``, ``eval``, ``runs`` and ``make-assets``: plain training runs and the workspace they live in."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

from ..core import settings
from .common import (
    CLIError,
    StepBar,
    add_image_size,
    add_recipe_settings,
    add_schedule_settings,
    check_sizes,
    data_source,
    emit,
    floats,
    list_arg,
    load_data,
    recipe_config,
    resolve_weights,
    stop_on_sigint,
    tqdm_progress,
)


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..training.workflows import TrainRequest, defaults_for, train_run
    from ..training.workspace import Workspace, now

    arch, arch_kwargs, cfg = defaults_for(args.data, args.role, args.recipe)
    cfg = recipe_config(cfg, args)
    if args.arch:
        arch, arch_kwargs = args.arch, {}
    if args.arch_kwargs:
        try:
            arch_kwargs.update(json.loads(args.arch_kwargs))
        except json.JSONDecodeError as exc:
            raise CLIError(f"--arch-kwargs is not JSON ({exc}); example: '{{\"width_mult\": 0.5}}'") from None
    for field_name in (
        "epochs",
        "batch_size",
        "optimizer",
        "lr",
        "momentum",
        "weight_decay",
        "warmup_epochs",
        "label_smoothing",
        "seed",
        "crop_padding",
        "train_limit",
        "eval_limit",
    ):
        value = getattr(args, field_name)
        if value is not None:
            setattr(cfg, field_name, value)
    if args.no_flip:
        cfg.hflip = False
    if args.no_augment:
        cfg.hflip, cfg.crop_padding = False, 0
    ws = Workspace()
    name = args.name or ws.unique_name(f"{args.role}-{arch}-{now()}")
    source = data_source(args.data, args.image_size)
    ws.check_free(name)  # a run another process is writing is refused at once, before any bar is drawn
    data = load_data(source)
    request = TrainRequest(
        name=name,
        arch=arch,
        dataset=source,
        arch_kwargs=arch_kwargs,
        role=args.role,
        config=cfg,
        pretrained=args.pretrained,
    )
    stop = stop_on_sigint("the last finished epoch is kept (run again to resume)")
    bars: dict = {}  # the epoch bar opens with the first step: a failure before it is one clean line
    steps = StepBar(disable=args.json)

    def epoch_bar():
        if "epochs" not in bars:
            bars["epochs"] = tqdm(
                total=cfg.epochs, desc=name, unit="epoch", file=sys.stderr, disable=args.json
            )
        return bars["epochs"]

    def callback(event) -> None:
        bar = epoch_bar()
        if event.kind == "step":
            steps.step(event, f"epoch {event.epoch}")
        elif event.kind == "epoch":
            steps.close()
            r = event.record
            bar.n = r.epoch
            bar.set_postfix(test_acc=f"{r.test_acc:.4f}", loss=f"{r.train_loss:.3f}")
            bar.refresh()

    run_dir, result = train_run(
        request,
        workspace=ws,
        data=data,
        callback=callback,
        should_stop=lambda: stop["asked"],
        device=args.device or settings.device(),
        resume=not args.no_resume,
    )
    if "epochs" in bars:
        bars["epochs"].close()
    last = result.history[-1] if result.history else None
    out = {
        "run": name,
        "path": str(run_dir),
        "epochs_done": len(result.history),
        "stopped": result.stopped,
        "resumed_from": result.resumed_from,
        "test_accuracy": last.test_acc if last else None,
        "train_seconds": sum(r.seconds for r in result.history),
    }
    emit(out, args.json)
    return 130 if result.stopped else 0


def cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from ..models.checkpoints import load_model
    from ..models.evaluate import predict

    weights = resolve_weights(args.weights)
    data = load_data(args.data, image_size=args.image_size)
    # a kdviz checkpoint knows its normalisation; a file from elsewhere gets the data set's
    loaded = load_model(weights, args.arch, data=data)
    card = loaded.card
    check_sizes(card, data)
    mean = floats(args.mean, "--mean") or card.mean
    std = floats(args.std, "--std") or card.std
    split = data.split(args.split)
    run = functools.partial(
        predict,
        loaded.model,
        split,
        mean=mean,
        std=std,
        batch_size=args.batch_size,
        limit=args.limit,
        device=args.device or settings.device(),
    )
    preds = run(progress=None if args.json else tqdm_progress("eval"))
    tta = None
    if args.tta:  # a separate figure, never mixed with the plain accuracy
        tta = run(
            tta=True, progress=None if args.json else tqdm_progress("eval, test-time augmented")
        ).accuracy
    out = {
        "accuracy": preds.accuracy,
        "accuracy_tta": tta,
        "n": int(len(preds.labels)),
        "correct": int((preds.predicted == preds.labels).sum()),
        "weights": str(weights),
        "arch": card.arch,
        "data": args.data,
        "image_size": data.image_size,
        "split": args.split,
        "mean": list(mean),
        "std": list(std),
        "per_class_accuracy": {
            name: (None if np.isnan(a) else round(float(a), 4))
            for name, a in zip(data.class_names, preds.per_class_accuracy(data.num_classes), strict=True)
        },
    }
    emit(out, args.json)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from ..training.workspace import Workspace

    ws = Workspace()
    if args.action == "list":
        rows = [
            {
                "name": r.name,
                "arch": r.card.arch if r.card else None,
                "status": r.status,
                "dataset": r.card.dataset if r.card else None,
                "test_accuracy": r.card.test_accuracy if r.card else None,
            }
            for r in ws.list()
        ]
        if args.json:
            print(json.dumps(rows))
        else:
            print(f"workspace (KDVIZ_HOME): {ws.root}")
            for r in rows:
                acc = f"{r['test_accuracy']:.4f}" if r["test_accuracy"] is not None else "-"
                print(f"  {r['name']:<40} {r['arch'] or '?':<20} {acc:>8}  {r['status']}")
        return 0
    if args.action == "rename":
        if not args.new:
            raise CLIError("usage: python -m kdviz runs rename OLD NEW")
        print(ws.rename(args.name, args.new))
        return 0
    if args.action == "delete":
        ws.delete(args.name)
        print(f"deleted {args.name}")
        return 0
    raise CLIError(f"unknown action {args.action}")


def cmd_make_assets(args: argparse.Namespace) -> int:
    """Train the default teacher and student for digits or CIFAR-10 into ``assets/``."""
    from ..core.machine import check_precision
    from ..training.assets import make_assets

    source = "digits" if args.data == "digits" else args.data
    precision = args.precision or "float32"
    check_precision(precision)
    epochs = tuple(list_arg(args.epochs, int) or []) or None
    if epochs is not None and len(epochs) != 2:
        raise CLIError("--epochs takes two numbers: the teacher's and the student's, e.g. 10,8")
    data = load_data(source, image_size=args.image_size)
    bar = {"last": ""}

    def callback(name: str, event) -> None:
        if event.kind == "epoch" and event.record is not None:
            r = event.record
            print(
                f"{name} epoch {r.epoch}/{event.epochs}: test accuracy {r.test_acc:.4f} "
                f"({r.seconds:.0f} s, {r.images_per_second:.0f} img/s)",
                file=sys.stderr,
            )
            bar["last"] = name

    reports = make_assets(
        data, Path(args.out), seed=args.seed, precision=precision, epochs=epochs, callback=callback
    )  # type: ignore[arg-type]
    for rep in reports:
        tta = f", {rep.test_accuracy_tta:.4f} with TTA" if rep.test_accuracy_tta is not None else ""
        print(
            f"{rep.name}: test accuracy {rep.test_accuracy:.4f}{tta} in {rep.train_seconds:.0f} s",
            file=sys.stderr,
        )
    print(Path(args.out))
    return 0


def add_train(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a teacher or a plain student into the workspace")
    t.add_argument("--data", default="digits", help="data source (default: digits)")
    add_image_size(t, "the data set (the size is recorded in the model card)")
    t.add_argument("--role", choices=["teacher", "student"], default="teacher")
    t.add_argument("--arch", help="registered architecture (default: the data set's default for the role)")
    t.add_argument("--arch-kwargs", help="JSON, e.g. '{\"width_mult\": 0.5}'")
    t.add_argument("--name", help="run name (default: made from role, arch and time)")
    add_recipe_settings(t)
    add_schedule_settings(t)
    t.add_argument("--momentum", type=float)
    t.add_argument("--label-smoothing", type=float)
    t.add_argument("--no-flip", action="store_true", help="no random horizontal flip")
    t.add_argument("--no-augment", action="store_true", help="neither crop nor flip")
    t.add_argument("--no-resume", action="store_true", help="fail instead of resuming an existing run")
    t.add_argument("--device", help="cpu, cuda, cuda:1 (default: CUDA if present)")
    t.add_argument("--json", action="store_true", help="print the result as one JSON object")
    t.set_defaults(func=cmd_train)


def add_eval(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("eval", help="accuracy of a checkpoint on a data set")
    e.add_argument("--weights", required=True, help="checkpoint folder or file, a run name, or an asset name")
    e.add_argument("--arch", help="architecture, for a foreign file without a card")
    e.add_argument("--data", default="digits")
    add_image_size(e, "the data set (it must be the model's size, in its card)")
    e.add_argument("--split", choices=["train", "test"], default="test")
    e.add_argument(
        "--mean", help="normalisation mean, three numbers (foreign files default to the data set's)"
    )
    e.add_argument("--std", help="normalisation std, three numbers")
    e.add_argument("--limit", type=int, help="evaluate N images spread evenly over the split (every class)")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument(
        "--tta",
        action="store_true",
        help="also report test-time-augmented accuracy (flips and 1-px shifts), beside the plain one",
    )
    e.add_argument("--device")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_eval)


def add_runs(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("runs", help="list, rename or delete runs in the workspace (KDVIZ_HOME)")
    r.add_argument("action", choices=["list", "rename", "delete"])
    r.add_argument("name", nargs="?")
    r.add_argument("new", nargs="?")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_runs)


def add_make_assets(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser(
        "make-assets", help="train the shipped teacher and student (digits, or CIFAR-10: fast recipe)"
    )
    a.add_argument("--data", default="digits", help="digits (default) or cifar10 / cifar10:PATH")
    add_image_size(a)
    a.add_argument("--precision", choices=["float32", "bfloat16"], help="CIFAR-10: bfloat16 where native")
    a.add_argument(
        "--epochs", help="CIFAR-10: teacher and student epochs, e.g. 30,14 (default: per precision)"
    )
    a.add_argument("--out", default=str(settings.assets_dir()))
    a.add_argument("--seed", type=int, default=0)
    a.set_defaults(func=cmd_make_assets)
