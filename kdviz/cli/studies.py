"""``ablate``, ``sweep`` and ``hpo``: the ablation study (whole, or in parts), the compression
sweep's costs and figure data, and the hyperparameter search."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ..core import settings
from ..core.lock import check_free
from .common import (
    DISTILL_FIELDS,
    CLIError,
    add_distill_settings,
    add_image_size,
    data_source,
    emit,
    json_arg,
    list_arg,
    resolve_weights,
    stop_on_sigint,
)


def _study_overrides(args: argparse.Namespace) -> dict:
    """The options ablate and hpo share, as keyword arguments of
    :func:`kdviz.experiments.presets.configure`."""
    out = {k: getattr(args, k) for k in DISTILL_FIELDS if getattr(args, k, None) is not None}
    if args.image_size is not None and not args.data:
        raise CLIError("--image-size needs --data: name the data set to read at that size")
    out.update(
        dataset=data_source(args.data, args.image_size) if args.data else None,
        teacher=str(resolve_weights(args.teacher)) if args.teacher else None,
        teacher_arch=args.teacher_arch,
        student=args.student,
        student_kwargs=json_arg(args.student_kwargs, "--student-kwargs"),
        arms=list_arg(args.arms),
        seeds=list_arg(args.seeds, int),
    )
    return out


def _study_progress(disable: bool):
    from tqdm import tqdm

    bar = tqdm(
        total=1000,
        desc="study",
        unit="‰",
        file=sys.stderr,
        disable=disable,
        bar_format="{l_bar}{bar}| {elapsed} {postfix}",
    )

    def report(event) -> None:
        bar.n = int(1000 * event.fraction)
        bar.set_postfix_str(event.message[:70])
        bar.refresh()

    return bar, report


def _ablate_target(args: argparse.Namespace):
    """(config, study folder, selection, summary folder or None, part name) from the command line."""
    from ..experiments.ablation import Selection, studies_root
    from ..experiments.plan import part as plan_part
    from ..experiments.presets import configure
    from ..experiments.summary import results_root

    selection = Selection(list_arg(args.only_arms), list_arg(args.only_seeds, int))
    if args.part:
        given = ("arms", "seeds", "student", "data", "only_arms", "only_seeds", "part_name", *DISTILL_FIELDS)
        if args.smoke or any(getattr(args, k, None) is not None for k in given):
            raise CLIError(
                "--part runs a part of the planned study as planned: drop --smoke, --arms, --seeds, "
                "--only-*, --epochs and other settings (or use --preset study with them)"
            )
        try:
            p = plan_part(args.part)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        folder = Path(args.out) if args.out else studies_root() / (args.name or p.study)
        summary = Path(args.summary) if args.summary else results_root() / p.study
        return p.config(), folder, p.selection(), summary, p.name
    config = configure(
        args.preset, smoke_images=args.smoke or None, finetune=not args.no_finetune, **_study_overrides(args)
    )
    name = args.name or (f"{args.preset}-smoke" if args.smoke else args.preset)
    folder = Path(args.out) if args.out else studies_root() / name
    return config, folder, selection, Path(args.summary) if args.summary else None, args.part_name or ""


def cmd_ablate(args: argparse.Namespace) -> int:
    from ..core.machine import PrecisionError
    from ..experiments.ablation import StudyError, markdown_table, run_study, summarise
    from ..experiments.plan import plan_table
    from ..experiments.summary import load_summary

    if args.plan:
        print(plan_table())
        return 0
    config, folder, selection, summary, part_name = _ablate_target(args)
    check_free(folder)  # a study another process is running is refused before its bar is drawn
    stop = stop_on_sigint()
    bar, report = _study_progress(args.json)
    try:
        study = run_study(
            folder,
            config,
            report=report,
            should_stop=lambda: stop["asked"],
            device=args.device or settings.device(),
            part=selection,
            summary=summary,
            part_name=part_name,
        )
    except (StudyError, PrecisionError) as exc:
        bar.close()
        raise CLIError(str(exc)) from None
    bar.close()
    shown = load_summary(summary) if summary is not None else study  # every part's runs, when summarised
    rows = summarise(shown)
    part_done = all(r.metrics is not None for r in study.runs if selection.covers(r.arm, r.seed))
    if args.json:
        print(
            json.dumps(
                {
                    "study": str(folder),
                    "summary": str(summary) if summary is not None else None,
                    "part": part_name or None,
                    "status": study.status,
                    "runs_done": shown.finished_runs,
                    "runs": len(shown.runs),
                    "teacher": study.state.get("teacher"),
                    "arms": rows,
                },
                default=str,
            )
        )
    else:
        print(f"study {folder}: {study.status}, {shown.finished_runs}/{len(shown.runs)} runs")
        if summary is not None:
            print(f"summary (every part so far): {summary}")
        teacher, student = study.state.get("teacher", {}), study.state.get("student", {})
        if teacher:
            print(
                f"teacher {teacher['arch']}: {teacher['params']:,} parameters, test accuracy "
                f"{100 * teacher['test_accuracy']:.2f} %, "
                f"{teacher.get('latency_ms', float('nan')):.2f} ms (batch 1); "
                f"student {student['arch']}: {student['params']:,} parameters, "
                f"{student.get('latency_ms', float('nan')):.2f} ms"
            )
        print(markdown_table(rows))
    return 0 if part_done and study.status in ("done", "partial") else 130


def cmd_sweep(args: argparse.Namespace) -> int:
    from ..experiments.sweep import STUDENTS, sweep_rows, write_sweep

    students = STUDENTS
    if args.students:
        wanted = list_arg(args.students) or []
        bad = [s for s in wanted if s not in STUDENTS]
        if bad:
            raise CLIError(f"unknown student(s) {', '.join(bad)}; the sweep has {', '.join(STUDENTS)}")
        students = {k: v for k, v in STUDENTS.items() if k in wanted}

    def measure(archs: Sequence[str]) -> dict[str, dict]:
        from ..experiments.sweep import measure_costs

        if not args.json:
            print(f"measuring {', '.join(archs)} in turns…", file=sys.stderr)
        return measure_costs(archs, seconds=args.seconds, threads=args.threads)

    costs: Callable[[Sequence[str]], dict[str, dict]] = measure
    timed_on = None
    if args.keep_costs:
        from ..experiments.sweep import load_sweep, stored_costs

        stored = load_sweep(args.out)
        if stored is None:
            raise CLIError(
                "--keep-costs: there is no stored sweep to keep the costs of; run `sweep` without it"
            )
        costs, timed_on = stored_costs(stored), stored.get("machine", {})
    try:
        rows = sweep_rows(args.results, measure=costs, students=students)
    except KeyError as e:
        raise CLIError(str(e.args[0])) from None
    path = write_sweep(rows, args.out, timed_on=timed_on) if not args.no_write else None
    emit(
        {"sweep": str(path) if path else None, "rows": rows}
        if args.json
        else {"sweep": path, "points": len(rows)},
        args.json,
    )
    return 0


def cmd_hpo(args: argparse.Namespace) -> int:
    from ..experiments.ablation import studies_root
    from ..experiments.hpo import SearchConfig, best_config, run_search, train_best
    from ..experiments.presets import configure
    from ..training.workspace import Workspace

    base = configure(
        args.preset, smoke_images=args.smoke or None, finetune=not args.no_finetune, **_study_overrides(args)
    )
    holdout = args.holdout or min(200, max(1, (base.train.get("subset") or 1000) // 5))
    if args.arm not in base.arms:
        base.arms = [args.arm]  # what the search prepares (an IG cache only for an IG arm)
    config = SearchConfig(base=base, arm=args.arm, trials=args.trials, holdout=holdout, seed=args.search_seed)
    name = args.name or f"hpo-{args.preset}" + ("-smoke" if args.smoke else "")
    folder = Path(args.out) if args.out else studies_root() / name
    if args.storage is None:  # a study of its own: one writer (a shared storage has many workers)
        check_free(folder)
    stop = stop_on_sigint()
    bar, report = _study_progress(args.json)
    device = args.device or settings.device()
    study = run_search(
        folder, config, storage=args.storage, report=report, should_stop=lambda: stop["asked"], device=device
    )
    bar.close()
    from ..experiments.hpo import load_search

    view = load_search(folder)
    states = [t.state.name for t in study.trials]
    out = {
        "search": str(folder),
        "status": view.state.get("status"),
        "complete": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"),
        "failed": states.count("FAIL"),
    }
    if states.count("COMPLETE"):
        out.update(
            best_value=study.best_value,
            best_trial=study.best_trial.number,
            best=asdict_public(best_config(view, study)),
        )
        if args.train_best:
            ws = Workspace()
            run_dir = ws.create(args.train_best, exist_ok=True)
            trained = train_best(
                view, args.train_best, run_dir, device=device, should_stop=lambda: stop["asked"]
            )
            if trained is not None:
                out["trained"] = {
                    "run": args.train_best,
                    "path": str(run_dir),
                    "test_accuracy": trained[1].history[-1].test_acc if trained[1].history else None,
                }
    emit(out, args.json)
    return 0 if view.state.get("status") == "done" else 130


def asdict_public(cfg) -> dict:
    from ..training import config_summary

    return {**config_summary(cfg), "lr": cfg.lr, "weight_decay": cfg.weight_decay}


def _add_study_options(s: argparse.ArgumentParser) -> None:
    """Options shared by ablate and hpo: a preset and what to change in it."""
    s.add_argument(
        "--preset",
        default="digits",
        choices=["digits", "cpu", "study", "paper"],
        help="digits: minutes on a CPU; cpu: CIFAR-10 in about an hour on 2 cores; study: the seven-arm "
        "CIFAR-10 study at paper accuracy (hours: run it in parts, see --plan); paper: CIFAR-10 on a GPU",
    )
    s.add_argument(
        "--name",
        help="folder name under KDVIZ_HOME/studies (default: the preset's name); the same name resumes",
    )
    s.add_argument("--out", help="study folder (instead of --name)")
    s.add_argument(
        "--smoke",
        type=int,
        nargs="?",
        const=256,
        default=0,
        metavar="N",
        help="check end to end at a tiny scale: N training images (default 256), 1 epoch, 2 seeds",
    )
    s.add_argument("--data", help="data source (default: the preset's)")
    add_image_size(s)
    s.add_argument("--teacher", help="teacher checkpoint, file, run or asset (default: the preset's)")
    s.add_argument("--teacher-arch", help="architecture of a foreign teacher file")
    s.add_argument(
        "--no-finetune", action="store_true", help="use the teacher as it is (no fine-tuning in the study)"
    )
    s.add_argument("--student", help="student architecture (default: the preset's)")
    s.add_argument("--student-kwargs", help="JSON, e.g. '{\"width_mult\": 0.5}'")
    s.add_argument("--arms", help="comma-separated: baseline,kd,ig,kd+ig,at,kd+at,kd+ig+at")
    s.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2")
    add_distill_settings(s)
    s.add_argument("--device")
    s.add_argument("--json", action="store_true")


def add_ablate(sub: argparse._SubParsersAction) -> None:
    ab = sub.add_parser(
        "ablate", help="ablation study: arms × seeds in one study folder, whole or in parts (resumable)"
    )
    _add_study_options(ab)
    ab.add_argument(
        "--part",
        metavar="NAME",
        help="run one part of the planned CIFAR-10 study or sweep (see --plan); its summary goes to "
        "docs/results/<study>",
    )
    ab.add_argument("--plan", action="store_true", help="print the plan's parts and expected minutes")
    ab.add_argument("--only-arms", help="run only these of the study's arms now (the rest stays pending)")
    ab.add_argument("--only-seeds", help="run only these of the study's seeds now")
    ab.add_argument(
        "--summary",
        metavar="DIR",
        help="write the study's summary (small JSON/CSV, no weights) into DIR after every run; "
        "parts run elsewhere into the same DIR meet in its table",
    )
    ab.add_argument("--part-name", help="what to call this part in the summary (with --only-*)")
    ab.set_defaults(func=cmd_ablate)


def add_sweep(sub: argparse._SubParsersAction) -> None:
    sw = sub.add_parser(
        "sweep",
        help="compression sweep: each student's parameters, MACs and latency (eager, ONNX Runtime; "
        "batch 1 and 64) with its accuracy from the committed summaries",
    )
    sw.add_argument("--results", help="where the study summaries are (default docs/results)")
    sw.add_argument("--out", help="where sweep.json goes (default docs/results/sweep)")
    sw.add_argument("--students", help="comma-separated ratios (default all: 4x,2x,8x,16x,32x,64x)")
    sw.add_argument(
        "--seconds",
        type=float,
        default=2.0,
        help="each model's seconds per runtime and batch (the models are timed in turns)",
    )
    sw.add_argument("--threads", type=int, help="intra-op threads (default: all cores)")
    sw.add_argument(
        "--keep-costs",
        action="store_true",
        help="keep the costs the stored sweep timed (and its machine); refresh only the accuracies, "
        "e.g. while another part trains on these cores",
    )
    sw.add_argument("--no-write", action="store_true", help="print only")
    sw.add_argument("--json", action="store_true")
    sw.set_defaults(func=cmd_sweep)


def add_hpo(sub: argparse._SubParsersAction) -> None:
    hp = sub.add_parser("hpo", help="Optuna search over T, alpha, p, lambda, lr and weight decay (resumable)")
    _add_study_options(hp)
    hp.add_argument("--trials", type=int, default=20, help="finished trials to reach (default 20)")
    hp.add_argument(
        "--arm",
        default="kd+ig",
        choices=["kd", "ig", "kd+ig", "at", "kd+at", "kd+ig+at"],
        help="the arm whose settings are searched (default kd+ig; AT arms search β too)",
    )
    hp.add_argument(
        "--storage",
        help="Optuna storage URL (default: sqlite file in the search folder; "
        "postgresql://... for many workers)",
    )
    hp.add_argument(
        "--holdout", type=int, help="training images held out to validate on (default: a fifth, at most 200)"
    )
    hp.add_argument("--search-seed", type=int, default=0, help="seed of the sampler and of every trial")
    hp.add_argument(
        "--train-best", metavar="NAME", help="then distil a student with the best values into run NAME"
    )
    hp.set_defaults(func=cmd_hpo)
