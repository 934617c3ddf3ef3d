"""``distill``: one student from a teacher, in one process or under torchrun."""

from __future__ import annotations

import argparse
import sys

from ..core import settings
from .common import (
    DISTILL_FIELDS,
    CLIError,
    StepBar,
    add_distill_settings,
    add_image_size,
    add_recipe_settings,
    check_sizes,
    data_source,
    emit,
    json_arg,
    load_data,
    recipe_config,
    resolve_weights,
    stop_on_sigint,
)


def cmd_distill(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..models import get_spec, load_model
    from ..training import DistillConfig, DistillRequest, ddp, defaults_for, distill_student
    from ..training.workspace import Workspace, now

    ctx = ddp.init_distributed()
    if ctx.world > 1 and not args.name:
        raise CLIError("under torchrun, name the run (--name) so that every process writes to the same one")
    device = ddp.local_device(args.device or settings.device(), ctx)
    arch, arch_kwargs, base = defaults_for(args.data, "student", args.recipe)
    if args.arch and args.student_ratio:
        raise CLIError("name the student (--arch) or derive it (--student-ratio), not both")
    if args.arch:
        arch, arch_kwargs = args.arch, {}
    if args.student_ratio:
        arch, arch_kwargs = _derived_student(args)
    arch_kwargs.update(json_arg(args.arch_kwargs, "--arch-kwargs") or {})
    get_spec(arch)  # a mistake in the command is reported before any long work
    values = {
        **base.as_dict(),
        **{k: getattr(args, k) for k in DISTILL_FIELDS if getattr(args, k) is not None},
    }
    cfg = DistillConfig(**{**values, "arm": args.arm, "hflip": base.hflip and not args.no_flip})
    cfg = recipe_config(cfg, args)
    ws = Workspace()
    name = args.name or ws.unique_name(f"student-{args.arm.replace('+', '-')}-{arch}-{now()}")
    ws.path(name)  # a bad name is refused before the data set and the teacher are loaded
    ws.check_free(name)  # and so is a run another process is writing (one line, no bar drawn)
    teacher_path = resolve_weights(args.teacher)
    source = data_source(args.data, args.image_size)
    data = load_data(source)
    teacher = load_model(teacher_path, args.teacher_arch, data=data)
    check_sizes(teacher.card, data, "the teacher")
    stop = stop_on_sigint()
    bars: dict = {}

    def ig_bar():
        if "ig" not in bars:
            bars["ig"] = tqdm(
                desc="teacher IG maps", unit="img", file=sys.stderr, disable=args.json or not ctx.is_writer
            )
        return bars["ig"]

    def ig_progress(done: int, total: int, rate: float) -> None:
        bar = ig_bar()
        bar.total = total
        bar.update(done - bar.n)

    steps = StepBar(disable=args.json)

    def callback(event) -> None:
        if event.kind == "step":
            steps.step(event, f"{name} epoch {event.epoch}/{event.epochs}")
        elif event.kind == "epoch" and steps.close():
            print(
                f"epoch {event.epoch}/{event.epochs}: test accuracy {event.record.test_acc:.4f}",
                file=sys.stderr,
            )

    request = DistillRequest(
        name=name,
        arch=arch,
        dataset=source,
        arch_kwargs=arch_kwargs,
        config=cfg,
        pretrained=args.pretrained,
    )
    outcome = distill_student(
        request,
        teacher,
        data,
        workspace=ws,
        ig_cache=args.ig_cache,
        ig_progress=ig_progress,
        ig_done=lambda store: ig_bar().close(),
        callback=callback,
        should_stop=lambda: stop["asked"],
        device=device,
        resume=not args.no_resume,
        ctx=ctx,
    )
    if outcome.model is None or outcome.result is None:  # stopped while the teacher's IG cache was made
        return 130
    model, result, run_dir = outcome.model, outcome.result, outcome.run_dir
    checksums = ddp.replica_checksums(model, ctx, device)
    ddp.shutdown(ctx)
    if ctx.is_writer:
        last = result.history[-1] if result.history else None
        emit(
            {
                "run": name,
                "path": str(run_dir),
                "arm": cfg.arm,
                "epochs_done": len(result.history),
                "stopped": result.stopped,
                "resumed_from": result.resumed_from,
                "test_accuracy": last.test_acc if last else None,
                "world_size": ctx.world,
                "replica_checksums": checksums,
                "ig_cache": cfg.ig_cache or None,
            },
            args.json,
        )
    return 130 if result.stopped else 0


def _derived_student(args: argparse.Namespace) -> tuple[str, dict]:
    """The student nearest ``--student-ratio`` among those derived from the teacher's architecture."""
    from ..models import read_card
    from ..models.derive import nearest

    path = resolve_weights(args.teacher)
    teacher_arch = args.teacher_arch
    teacher_kwargs: dict = {}
    if not teacher_arch:
        card = read_card(path)
        teacher_arch, teacher_kwargs = card.arch, card.arch_kwargs
    try:
        student = nearest(teacher_arch, args.student_ratio, teacher_kwargs)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    print(
        f"student: {student.arch} {student.arch_kwargs or ''} "
        f"({student.compression:.2f}x fewer parameters than {teacher_arch})",
        file=sys.stderr,
    )
    return student.arch, dict(student.arch_kwargs)


def add_distill(sub: argparse._SubParsersAction) -> None:
    ds = sub.add_parser(
        "distill", help="distil a student from a teacher: baseline, KD, IG overlays or both (torchrun: DDP)"
    )
    ds.add_argument("--teacher", required=True, help="teacher checkpoint folder or file, run or asset name")
    ds.add_argument("--teacher-arch", help="architecture of a foreign teacher file (e.g. resnet56)")
    ds.add_argument("--data", default="digits")
    add_image_size(ds, "the data set (the teacher's size; the student's card records it)")
    ds.add_argument("--arch", help="student architecture (default: the data set's default student)")
    ds.add_argument("--arch-kwargs", help="JSON, e.g. '{\"width_mult\": 0.5}'")
    ds.add_argument(
        "--student-ratio",
        type=float,
        help="derive the student from the teacher's architecture: the width or depth variant whose "
        "measured parameter compression is nearest this (see `models --students-of`)",
    )
    ds.add_argument(
        "--arm", default="kd+ig", choices=["baseline", "kd", "ig", "kd+ig", "at", "kd+at", "kd+ig+at"]
    )
    ds.add_argument("--ig-cache", help="the teacher's IG cache folder (default: made once under KDVIZ_CACHE)")
    ds.add_argument("--name", help="run name (required under torchrun; an existing run is resumed)")
    ds.add_argument("--no-flip", action="store_true")
    ds.add_argument("--no-resume", action="store_true", help="fail instead of resuming an existing run")
    add_recipe_settings(ds)
    add_distill_settings(ds)
    ds.add_argument("--device")
    ds.add_argument("--json", action="store_true")
    ds.set_defaults(func=cmd_distill)
