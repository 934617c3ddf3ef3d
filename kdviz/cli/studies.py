"""``ablate`` and ``hpo``: the paper's ablation study and the hyperparameter search."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..core import settings
from ..core.lock import check_free
from .common import (
    DISTILL_FIELDS,
    add_distill_settings,
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
    out.update(
        dataset=args.data,
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


def cmd_ablate(args: argparse.Namespace) -> int:
    from ..experiments.ablation import markdown_table, run_study, studies_root, summarise
    from ..experiments.presets import configure

    config = configure(
        args.preset, smoke_images=args.smoke or None, finetune=not args.no_finetune, **_study_overrides(args)
    )
    name = args.name or (f"{args.preset}-smoke" if args.smoke else args.preset)
    folder = Path(args.out) if args.out else studies_root() / name
    check_free(folder)  # a study another process is running is refused before its bar is drawn
    stop = stop_on_sigint()
    bar, report = _study_progress(args.json)
    study = run_study(
        folder,
        config,
        report=report,
        should_stop=lambda: stop["asked"],
        device=args.device or settings.device(),
    )
    bar.close()
    rows = summarise(study)
    if args.json:
        print(
            json.dumps(
                {
                    "study": str(folder),
                    "status": study.status,
                    "runs_done": study.finished_runs,
                    "runs": len(study.runs),
                    "teacher": study.state.get("teacher"),
                    "arms": rows,
                },
                default=str,
            )
        )
    else:
        print(f"study {folder}: {study.status}, {study.finished_runs}/{len(study.runs)} runs")
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
    return 0 if study.status == "done" else 130


def cmd_hpo(args: argparse.Namespace) -> int:
    from ..experiments.ablation import studies_root
    from ..experiments.hpo import SearchConfig, best_config, run_search, train_best
    from ..experiments.presets import configure
    from ..training.workspace import Workspace

    base = configure(
        args.preset, smoke_images=args.smoke or None, finetune=not args.no_finetune, **_study_overrides(args)
    )
    holdout = args.holdout or min(200, max(1, (base.train.get("subset") or 1000) // 5))
    config = SearchConfig(base=base, trials=args.trials, holdout=holdout, seed=args.search_seed)
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
        choices=["digits", "cpu", "paper"],
        help="digits: minutes on a CPU; cpu: CIFAR-10 in about an hour on 2 cores; paper: CIFAR-10 on a GPU",
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
    s.add_argument("--teacher", help="teacher checkpoint, file, run or asset (default: the preset's)")
    s.add_argument("--teacher-arch", help="architecture of a foreign teacher file")
    s.add_argument(
        "--no-finetune", action="store_true", help="use the teacher as it is (no fine-tuning in the study)"
    )
    s.add_argument("--student", help="student architecture (default: the preset's)")
    s.add_argument("--student-kwargs", help="JSON, e.g. '{\"width_mult\": 0.5}'")
    s.add_argument("--arms", help="comma-separated: baseline,kd,ig,kd+ig")
    s.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2")
    add_distill_settings(s)
    s.add_argument("--device")
    s.add_argument("--json", action="store_true")


def add_ablate(sub: argparse._SubParsersAction) -> None:
    ab = sub.add_parser(
        "ablate", help="ablation study: the four arms × N seeds, one study folder (resumable)"
    )
    _add_study_options(ab)
    ab.set_defaults(func=cmd_ablate)


def add_hpo(sub: argparse._SubParsersAction) -> None:
    hp = sub.add_parser("hpo", help="Optuna search over T, alpha, p, lambda, lr and weight decay (resumable)")
    _add_study_options(hp)
    hp.add_argument("--trials", type=int, default=20, help="finished trials to reach (default 20)")
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
