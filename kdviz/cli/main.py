"""``python -m kdviz``: the dashboard's work, headless.

Every failure a person can cause (a missing file, a file that is not a checkpoint, a hostile pickle,
an architecture that does not fit, a missing data set) ends with one line on stderr and a non-zero
exit, never a traceback (set ``KDVIZ_DEBUG=1`` to see one).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Sequence

from ..core.version import __version__
from ..core import settings


class CLIError(Exception):
    """A mistake in the command line or its inputs: printed as one line."""


# --------------------------------------------------------------------------- helpers


def _emit(obj: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj, default=str))
    else:
        for key, value in obj.items():
            print(f"{key:>18}: {value}")


def _tqdm_progress(desc: str):
    from tqdm import tqdm

    bar: dict = {}

    def progress(done: int, total: int) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, desc=desc, unit="img", leave=False, file=sys.stderr)
        bar["bar"].n = done
        bar["bar"].refresh()
        if done >= total:
            bar["bar"].close()

    return progress


def _load_data(source: str, download: bool = False):
    from ..data import load_dataset

    return load_dataset(source, download=download, progress=_tqdm_progress(f"decoding {source}"))


def resolve_weights(spec: str) -> Path:
    """A path, or the name of a run in the workspace, or of a model in ``assets/``."""
    from ..training.workspace import NAME_RE, Workspace, asset_models

    path = Path(spec).expanduser()
    if path.exists():
        return path
    if NAME_RE.match(spec):
        ws = Workspace()
        if ws.exists(spec):
            return ws.path(spec)
        for asset in asset_models():
            if asset.name == spec:
                return asset.path
    raise CLIError(f"no such file, run or asset: {spec}")


def _floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise CLIError(f"{what} must be three numbers, e.g. 0.485,0.456,0.406") from None
    if len(values) != 3:
        raise CLIError(f"{what} must be three numbers (one per colour channel), got {len(values)}")
    return values


# --------------------------------------------------------------------------- commands


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
    data = _load_data(args.source, download=args.download)
    summary = data.summary()
    summary["train_per_class"] = [int((data.train.labels == c).sum()) for c in range(data.num_classes)]
    _emit(summary, args.json)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from ..models import create_model, list_models, model_stats

    rows = []
    for spec in list_models():
        stats = model_stats(create_model(spec.name, num_classes=args.num_classes))
        rows.append({"name": spec.name, "family": spec.family, "params": stats.params,
                     "macs": stats.macs, "size_bytes": stats.size_bytes, "description": spec.description,
                     "arguments": spec.signature()})
    if args.json:
        print(json.dumps(rows))
    else:
        print(f"{'name':<22}{'params':>12}{'MMACs':>10}  description")
        for r in rows:
            print(f"{r['name']:<22}{r['params']:>12,}{r['macs'] / 1e6:>10.1f}  {r['description']}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..training.workflows import TrainRequest, defaults_for, train_run
    from ..training.workspace import Workspace, now

    arch, arch_kwargs, cfg = defaults_for(args.data, args.role)
    if args.arch:
        arch, arch_kwargs = args.arch, {}
    if args.arch_kwargs:
        try:
            arch_kwargs.update(json.loads(args.arch_kwargs))
        except json.JSONDecodeError as exc:
            raise CLIError(f"--arch-kwargs is not JSON ({exc}); example: '{{\"width_mult\": 0.5}}'") from None
    for field_name in ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "warmup_epochs",
                       "label_smoothing", "seed", "crop_padding", "train_limit", "eval_limit"):
        value = getattr(args, field_name)
        if value is not None:
            setattr(cfg, field_name, value)
    if args.no_flip:
        cfg.hflip = False
    if args.no_augment:
        cfg.hflip, cfg.crop_padding = False, 0
    ws = Workspace()
    name = args.name or ws.unique_name(f"{args.role}-{arch}-{now()}")
    data = _load_data(args.data)
    request = TrainRequest(name=name, arch=arch, dataset=args.data, arch_kwargs=arch_kwargs,
                           role=args.role, config=cfg)

    stop = {"asked": False}

    def on_sigint(signum, frame):  # first Ctrl-C: finish cleanly; second: default behaviour
        stop["asked"] = True
        print("\nstopping after this step; the last finished epoch is kept (run again to resume)", file=sys.stderr)
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    signal.signal(signal.SIGINT, on_sigint)
    bar = tqdm(total=cfg.epochs, desc=name, unit="epoch", file=sys.stderr, disable=args.json)
    bars: dict = {}

    def callback(event) -> None:
        if event.kind == "step":
            if "steps" not in bars:
                bars["steps"] = tqdm(total=event.steps, desc=f"epoch {event.epoch}", leave=False, file=sys.stderr,
                                     disable=args.json)
            bars["steps"].update(1)
            bars["steps"].set_postfix(loss=f"{event.loss:.3f}")
        elif event.kind == "epoch":
            bars.pop("steps").close() if "steps" in bars else None
            r = event.record
            bar.n = r.epoch
            bar.set_postfix(test_acc=f"{r.test_acc:.4f}", loss=f"{r.train_loss:.3f}")
            bar.refresh()

    run_dir, result = train_run(request, workspace=ws, data=data, callback=callback,
                                should_stop=lambda: stop["asked"], device=args.device or settings.device(),
                                resume=not args.no_resume)
    bar.close()
    last = result.history[-1] if result.history else None
    out = {"run": name, "path": str(run_dir), "epochs_done": len(result.history), "stopped": result.stopped,
           "resumed_from": result.resumed_from, "test_accuracy": last.test_acc if last else None,
           "train_seconds": sum(r.seconds for r in result.history)}
    _emit(out, args.json)
    return 130 if result.stopped else 0


def cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from ..models.checkpoints import load_any
    from ..models.evaluate import predict

    weights = resolve_weights(args.weights)
    data = _load_data(args.data)
    loaded = load_any(weights, args.arch, num_classes=data.num_classes)
    card = loaded.card
    if card.num_classes != data.num_classes:
        raise CLIError(f"{weights} predicts {card.num_classes} classes but {args.data} has {data.num_classes}")
    from_card = card.source_file is None  # a kdviz checkpoint knows its normalisation
    mean = _floats(args.mean, "--mean") or (card.mean if from_card else list(data.mean))
    std = _floats(args.std, "--std") or (card.std if from_card else list(data.std))
    split = data.split(args.split)
    preds = predict(loaded.model, split, mean=mean, std=std, batch_size=args.batch_size, limit=args.limit,
                    device=args.device or settings.device(), progress=None if args.json else _tqdm_progress("eval"))
    out = {"accuracy": preds.accuracy, "n": int(len(preds.labels)), "correct": int((preds.predicted == preds.labels).sum()),
           "weights": str(weights), "arch": card.arch, "data": args.data, "split": args.split,
           "mean": list(mean), "std": list(std),
           "per_class_accuracy": {name: (None if np.isnan(a) else round(float(a), 4))
                                  for name, a in zip(data.class_names, preds.per_class_accuracy(data.num_classes))}}
    _emit(out, args.json)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from ..training.workspace import Workspace

    ws = Workspace()
    if args.action == "list":
        rows = [{"name": r.name, "arch": r.card.arch if r.card else None, "status": r.status,
                 "dataset": r.card.dataset if r.card else None,
                 "test_accuracy": (r.card.metrics or {}).get("test_accuracy") if r.card else None}
                for r in ws.list()]
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
    """Train the default teacher and student on the built-in data set into ``assets/``."""
    import shutil
    import tempfile

    from ..training.workflows import TrainRequest, defaults_for, train_run
    from ..training.workspace import Workspace

    out = Path(args.out)
    data = _load_data("digits")
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(tmp)
        for role in ("teacher", "student"):
            arch, kwargs, cfg = defaults_for("digits", role)
            cfg.seed = args.seed
            name = f"digits_{role}"
            request = TrainRequest(name=name, arch=arch, dataset="digits", arch_kwargs=kwargs, role=role,
                                   config=cfg)
            run_dir, result = train_run(request, workspace=ws, data=data, resume=False)
            print(f"{name}: {arch} {kwargs} test accuracy {result.history[-1].test_acc:.4f} "
                  f"in {sum(r.seconds for r in result.history):.0f} s", file=sys.stderr)
            target = out / name
            if target.exists():
                shutil.rmtree(target)
            target.mkdir(parents=True)
            for f in ("model.safetensors", "card.json", "history.json"):
                shutil.copy2(run_dir / f, target / f)
    print(out)
    return 0


def _load_for_attribution(args: argparse.Namespace):
    """Model, card and normalisation for attribute / ig-precompute."""
    from ..models.checkpoints import load_any
    from ..data import IMAGENET_MEAN, IMAGENET_STD

    weights = resolve_weights(args.weights)
    data = _load_data(args.data) if getattr(args, "data", None) else None
    num_classes = data.num_classes if data is not None else 10
    loaded = load_any(weights, args.arch, num_classes=num_classes)
    card = loaded.card
    from_card = card.source_file is None
    default_mean = card.mean if from_card else list(data.mean if data is not None else IMAGENET_MEAN)
    default_std = card.std if from_card else list(data.std if data is not None else IMAGENET_STD)
    mean = _floats(args.mean, "--mean") or default_mean
    std = _floats(args.std, "--std") or default_std
    loaded.model.to(args.device or settings.device())
    return loaded, data, mean, std


def cmd_attribute(args: argparse.Namespace) -> int:
    import numpy as np

    from ..core import atomic
    from ..attribution import DEFAULT_IG_STEPS, AttributionOptions, attribute
    from ..data.loader import normalize, to_float
    from ..data.images import read_image

    options = AttributionOptions(method=args.method, steps=DEFAULT_IG_STEPS if args.steps is None else args.steps, rule=args.rule, baseline=args.baseline,
                                 target=int(args.target) if args.target.isdigit() else args.target)
    if options.target == "true":
        raise CLIError("--target true needs a label; give a class index or 'pred'")
    image_path = Path(args.image)
    if not image_path.is_file():
        raise CLIError(f"no such image: {image_path}")
    loaded, _, mean, std = _load_for_attribution(args)
    card = loaded.card
    image = read_image(image_path.read_bytes(), size=card.image_size, name=image_path.name)
    x = normalize(to_float(image.model_input[None]), mean, std)
    result = attribute(loaded.model, x, options, mean=mean, std=std, cache=not args.no_cache)
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
        "method": options.method, "steps": options.steps, "rule": options.rule, "baseline": options.baseline,
        "shape": list(result.maps.shape[1:]),
        "top5": [{"class": int(k), "label": names[k] if k < len(names) else str(k), "probability": float(probs[k])} for k in top],
        "image_notes": image.notes,
        "cached": bool(result.cached[0]),
    }
    if args.out:
        with atomic.atomic_path(args.out) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, result.maps[0].astype(np.float32))
        out["out"] = str(args.out)
    _emit(out, args.json)
    return 0


def cmd_ig_precompute(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..attribution.igcache import precompute
    from ..training import ddp

    ctx = ddp.init_distributed(backend="gloo")  # IG's ranks only meet at barriers: gloo on any device
    rank, world = ctx.rank, ctx.world
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
    store = precompute(loaded.model, data, args.out, mean=mean, std=std, split=args.split, steps=args.steps,
                       rule=args.rule, baseline=args.baseline, batch_size=args.batch_size, limit=args.limit,
                       teacher_name=str(args.weights), progress=progress, should_stop=lambda: stop["asked"],
                       rank=rank, world=world, barrier=ctx.barrier, internal_batch_size=args.internal_batch_size)
    bar.close()
    seconds = __import__("time").perf_counter() - started
    done = store.done
    ddp.shutdown(ctx)
    if rank == 0:
        size = sum(f.stat().st_size for f in Path(args.out).iterdir() if f.is_file())
        _emit({"out": str(args.out), "images": int(len(store)), "done": int(done.sum()), "complete": bool(done.all()),
               "seconds": round(seconds, 2), "bytes": size, "world_size": world}, args.json)
    return 0 if done.all() else 130


def _stop_on_sigint() -> dict:
    """First Ctrl-C asks the work to stop after the current step; a second one kills."""
    stop = {"asked": False}

    def on_sigint(signum, frame):
        stop["asked"] = True
        print("\nstopping after this step; finished work is kept (run the same command to resume)", file=sys.stderr)
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    signal.signal(signal.SIGINT, on_sigint)
    return stop


def _json_arg(text: str | None, what: str) -> dict | None:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(f"{what} is not JSON ({exc}); example: '{{\"width_mult\": 0.5}}'") from None


def _list_arg(text: str | None, cast=str) -> list | None:
    if text is None:
        return None
    try:
        return [cast(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise CLIError(f"cannot read the list {text!r}") from None


DISTILL_FIELDS = ("epochs", "batch_size", "optimizer", "lr", "weight_decay", "warmup_epochs", "seed", "crop_padding",
                  "train_limit", "eval_limit", "temperature", "alpha", "overlay_p", "overlay_lambda", "overlay_mode",
                  "subset", "subset_seed", "ig_steps")


def cmd_distill(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..models import get_spec
    from ..training import DistillConfig, DistillRequest, ddp, defaults_for, distill_student, load_teacher
    from ..training.workspace import Workspace, now

    ctx = ddp.init_distributed()
    if ctx.world > 1 and not args.name:
        raise CLIError("under torchrun, name the run (--name) so that every process writes to the same one")
    device = ddp.local_device(args.device or settings.device(), ctx)
    arch, arch_kwargs, base = defaults_for(args.data, "student")
    if args.arch:
        arch, arch_kwargs = args.arch, {}
    arch_kwargs.update(_json_arg(args.arch_kwargs, "--arch-kwargs") or {})
    get_spec(arch)  # a mistake in the command is reported before any long work
    values = {**base.as_dict(), **{k: getattr(args, k) for k in DISTILL_FIELDS if getattr(args, k) is not None}}
    cfg = DistillConfig(**{**values, "arm": args.arm, "hflip": base.hflip and not args.no_flip})
    ws = Workspace()
    name = args.name or ws.unique_name(f"student-{args.arm.replace('+', '-')}-{arch}-{now()}")
    ws.path(name)  # a bad name is refused before the data set and the teacher are loaded
    teacher_path = resolve_weights(args.teacher)
    data = _load_data(args.data)
    teacher = load_teacher(teacher_path, data, args.teacher_arch)
    stop = _stop_on_sigint()
    bars: dict = {}

    def ig_bar():
        if "ig" not in bars:
            bars["ig"] = tqdm(desc="teacher IG maps", unit="img", file=sys.stderr, disable=args.json or not ctx.is_writer)
        return bars["ig"]

    def ig_progress(done: int, total: int, rate: float) -> None:
        bar = ig_bar()
        bar.total = total
        bar.update(done - bar.n)

    def callback(event) -> None:
        if event.kind == "step":
            if "bar" not in bars:
                bars["bar"] = tqdm(total=event.steps, desc=f"{name} epoch {event.epoch}/{event.epochs}", leave=False,
                                   file=sys.stderr, disable=args.json)
            bars["bar"].update(1)
            bars["bar"].set_postfix(loss=f"{event.loss:.3f}")
        elif event.kind == "epoch" and "bar" in bars:
            bars.pop("bar").close()
            print(f"epoch {event.epoch}/{event.epochs}: test accuracy {event.record.test_acc:.4f}", file=sys.stderr)

    request = DistillRequest(name=name, arch=arch, dataset=args.data, arch_kwargs=arch_kwargs, config=cfg)
    outcome = distill_student(request, teacher, data, workspace=ws, ig_cache=args.ig_cache, ig_progress=ig_progress,
                              ig_done=lambda store: ig_bar().close(), callback=callback,
                              should_stop=lambda: stop["asked"], device=device, resume=not args.no_resume, ctx=ctx)
    if outcome.result is None:  # stopped while the teacher's IG cache was being made
        return 130
    model, result, run_dir = outcome.model, outcome.result, outcome.run_dir
    checksums = ddp.replica_checksums(model, ctx, device)
    ddp.shutdown(ctx)
    if ctx.is_writer:
        last = result.history[-1] if result.history else None
        _emit({"run": name, "path": str(run_dir), "arm": cfg.arm, "epochs_done": len(result.history),
               "stopped": result.stopped, "resumed_from": result.resumed_from,
               "test_accuracy": last.test_acc if last else None, "world_size": ctx.world,
               "replica_checksums": checksums, "ig_cache": cfg.ig_cache or None}, args.json)
    return 130 if result.stopped else 0


def _study_overrides(args: argparse.Namespace) -> dict:
    """The options ablate and hpo share, as keyword arguments of :func:`kdviz.presets.configure`."""
    out = {k: getattr(args, k) for k in DISTILL_FIELDS if getattr(args, k, None) is not None}
    out.update(dataset=args.data, teacher=str(resolve_weights(args.teacher)) if args.teacher else None,
               teacher_arch=args.teacher_arch, student=args.student,
               student_kwargs=_json_arg(args.student_kwargs, "--student-kwargs"),
               arms=_list_arg(args.arms), seeds=_list_arg(args.seeds, int))
    return out


def _study_progress(disable: bool):
    from tqdm import tqdm

    bar = tqdm(total=1000, desc="study", unit="‰", file=sys.stderr, disable=disable,
               bar_format="{l_bar}{bar}| {elapsed} {postfix}")

    def report(event) -> None:
        bar.n = int(1000 * event.fraction)
        bar.set_postfix_str(event.message[:70])
        bar.refresh()

    return bar, report


def cmd_ablate(args: argparse.Namespace) -> int:
    from ..experiments.ablation import markdown_table, run_study, studies_root, summarise
    from ..experiments.presets import configure

    config = configure(args.preset, smoke_images=args.smoke or None, finetune=not args.no_finetune,
                       **_study_overrides(args))
    name = args.name or (f"{args.preset}-smoke" if args.smoke else args.preset)
    folder = Path(args.out) if args.out else studies_root() / name
    stop = _stop_on_sigint()
    bar, report = _study_progress(args.json)
    study = run_study(folder, config, report=report, should_stop=lambda: stop["asked"],
                      device=args.device or settings.device())
    bar.close()
    rows = summarise(study)
    if args.json:
        print(json.dumps({"study": str(folder), "status": study.status, "runs_done": study.finished_runs,
                          "runs": len(study.runs), "teacher": study.state.get("teacher"), "arms": rows}, default=str))
    else:
        print(f"study {folder}: {study.status}, {study.finished_runs}/{len(study.runs)} runs")
        teacher, student = study.state.get("teacher", {}), study.state.get("student", {})
        if teacher:
            print(f"teacher {teacher['arch']}: {teacher['params']:,} parameters, test accuracy "
                  f"{100 * teacher['test_accuracy']:.2f} %, {teacher.get('latency_ms', float('nan')):.2f} ms (batch 1); "
                  f"student {student['arch']}: {student['params']:,} parameters, "
                  f"{student.get('latency_ms', float('nan')):.2f} ms")
        print(markdown_table(rows))
    return 0 if study.status == "done" else 130


def cmd_hpo(args: argparse.Namespace) -> int:
    from ..experiments.ablation import studies_root
    from ..experiments.hpo import SearchConfig, best_config, run_search, train_best
    from ..experiments.presets import configure
    from ..training.workspace import Workspace

    base = configure(args.preset, smoke_images=args.smoke or None, finetune=not args.no_finetune,
                     **_study_overrides(args))
    holdout = args.holdout or min(200, max(1, (base.train.get("subset") or 1000) // 5))
    config = SearchConfig(base=base, trials=args.trials, holdout=holdout, seed=args.search_seed)
    name = args.name or f"hpo-{args.preset}" + ("-smoke" if args.smoke else "")
    folder = Path(args.out) if args.out else studies_root() / name
    stop = _stop_on_sigint()
    bar, report = _study_progress(args.json)
    device = args.device or settings.device()
    study = run_search(folder, config, storage=args.storage, report=report, should_stop=lambda: stop["asked"],
                       device=device)
    bar.close()
    from ..experiments.hpo import load_search

    view = load_search(folder)
    states = [t.state.name for t in study.trials]
    out = {"search": str(folder), "status": view.state.get("status"), "complete": states.count("COMPLETE"),
           "pruned": states.count("PRUNED"), "failed": states.count("FAIL")}
    if states.count("COMPLETE"):
        out.update(best_value=study.best_value, best_trial=study.best_trial.number,
                   best=asdict_public(best_config(view, study)))
        if args.train_best:
            ws = Workspace()
            run_dir = ws.create(args.train_best, exist_ok=True)
            trained = train_best(view, args.train_best, run_dir, device=device, should_stop=lambda: stop["asked"])
            if trained is not None:
                out["trained"] = {"run": args.train_best, "path": str(run_dir),
                                  "test_accuracy": trained[1].history[-1].test_acc if trained[1].history else None}
    _emit(out, args.json)
    return 0 if view.state.get("status") == "done" else 130


def asdict_public(cfg) -> dict:
    from ..training import config_summary

    return {**config_summary(cfg), "lr": cfg.lr, "weight_decay": cfg.weight_decay}


def _add_study_options(s: argparse.ArgumentParser) -> None:
    """Options shared by ablate and hpo: a preset and what to change in it."""
    s.add_argument("--preset", default="digits", choices=["digits", "cpu", "paper"],
                   help="digits: minutes on a CPU; cpu: CIFAR-10 in about an hour on 2 cores; paper: CIFAR-10 on a GPU")
    s.add_argument("--name", help="folder name under KDVIZ_HOME/studies (default: the preset's name); the same name resumes")
    s.add_argument("--out", help="study folder (instead of --name)")
    s.add_argument("--smoke", type=int, nargs="?", const=256, default=0, metavar="N",
                   help="check end to end at a tiny scale: N training images (default 256), 1 epoch, 2 seeds")
    s.add_argument("--data", help="data source (default: the preset's)")
    s.add_argument("--teacher", help="teacher checkpoint, file, run or asset (default: the preset's)")
    s.add_argument("--teacher-arch", help="architecture of a foreign teacher file")
    s.add_argument("--no-finetune", action="store_true", help="use the teacher as it is (no fine-tuning in the study)")
    s.add_argument("--student", help="student architecture (default: the preset's)")
    s.add_argument("--student-kwargs", help='JSON, e.g. \'{"width_mult": 0.5}\'')
    s.add_argument("--arms", help="comma-separated: baseline,kd,ig,kd+ig")
    s.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2")
    _add_distill_settings(s)
    s.add_argument("--device")
    s.add_argument("--json", action="store_true")


def _add_schedule_settings(s: argparse.ArgumentParser) -> None:
    """The optimiser and schedule options that `train` and the distilling commands share."""
    s.add_argument("--epochs", type=int)
    s.add_argument("--batch-size", type=int)
    s.add_argument("--optimizer", choices=["sgd", "adamw"])
    s.add_argument("--lr", type=float)
    s.add_argument("--weight-decay", type=float)
    s.add_argument("--warmup-epochs", type=float)
    s.add_argument("--seed", type=int)
    s.add_argument("--crop-padding", type=int, help="random-crop padding in pixels (0: no crop)")
    s.add_argument("--train-limit", type=int, help="train on a fixed random subset of N training images")
    s.add_argument("--eval-limit", type=int, help="evaluate each epoch on N test images spread evenly over the split")


def _add_distill_settings(s: argparse.ArgumentParser) -> None:
    _add_schedule_settings(s)
    s.add_argument("--temperature", "-T", type=float, help="KD temperature T")
    s.add_argument("--alpha", type=float, help="weight of the KD term against the cross-entropy")
    s.add_argument("--overlay-p", "-p", type=float, help="probability of the IG overlay per image")
    s.add_argument("--overlay-lambda", "--lam", type=float, help="overlay strength λ (0.5: the paper's half-and-half)")
    s.add_argument("--overlay-mode", choices=["blend", "emphasis"], help="blend (the paper's) or multiplicative emphasis")
    s.add_argument("--subset", type=int, help="a fixed random subset of N training images (the IG cache covers them)")
    s.add_argument("--subset-seed", type=int)
    s.add_argument("--ig-steps", type=int, help="IG steps of a teacher IG cache made on the way")


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kdviz", description="kdviz: knowledge distillation made visible.")
    p.add_argument("--version", action="version", version=f"kdviz {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("data", help="list data sources, or load one and summarise it")
    d.add_argument("source", nargs="?", help="digits, cifar10, cifar10:PATH or an image folder")
    d.add_argument("--download", action="store_true", help="download CIFAR-10 through torchvision if not found")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_data)

    m = sub.add_parser("models", help="list the registered architectures with their cost")
    m.add_argument("--num-classes", type=int, default=10)
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_models)

    t = sub.add_parser("train", help="train a teacher or a plain student into the workspace")
    t.add_argument("--data", default="digits", help="data source (default: digits)")
    t.add_argument("--role", choices=["teacher", "student"], default="teacher")
    t.add_argument("--arch", help="registered architecture (default: the data set's default for the role)")
    t.add_argument("--arch-kwargs", help='JSON, e.g. \'{"width_mult": 0.5}\'')
    t.add_argument("--name", help="run name (default: made from role, arch and time)")
    _add_schedule_settings(t)
    t.add_argument("--momentum", type=float)
    t.add_argument("--label-smoothing", type=float)
    t.add_argument("--no-flip", action="store_true", help="no random horizontal flip")
    t.add_argument("--no-augment", action="store_true", help="neither crop nor flip")
    t.add_argument("--no-resume", action="store_true", help="fail instead of resuming an existing run")
    t.add_argument("--device", help="cpu, cuda, cuda:1 (default: CUDA if present)")
    t.add_argument("--json", action="store_true", help="print the result as one JSON object")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="accuracy of a checkpoint on a data set")
    e.add_argument("--weights", required=True, help="checkpoint folder or file, a run name, or an asset name")
    e.add_argument("--arch", help="architecture, for a foreign file without a card")
    e.add_argument("--data", default="digits")
    e.add_argument("--split", choices=["train", "test"], default="test")
    e.add_argument("--mean", help="normalisation mean, three numbers (foreign files default to the data set's)")
    e.add_argument("--std", help="normalisation std, three numbers")
    e.add_argument("--limit", type=int, help="evaluate N images spread evenly over the split (every class)")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--device")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_eval)

    r = sub.add_parser("runs", help="list, rename or delete runs in the workspace (KDVIZ_HOME)")
    r.add_argument("action", choices=["list", "rename", "delete"])
    r.add_argument("name", nargs="?")
    r.add_argument("new", nargs="?")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_runs)

    at = sub.add_parser("attribute", help="attribution map of one image (IG, Saliency, SmoothGrad, Grad-CAM, Occlusion)")
    at.add_argument("--weights", required=True, help="checkpoint folder or file, a run name, or an asset name")
    at.add_argument("--arch", help="architecture, for a foreign file without a card")
    at.add_argument("--image", required=True, help="PNG, JPEG, WebP, BMP, GIF, TIFF; any size")
    at.add_argument("--method", default="ig", choices=["ig", "saliency", "smoothgrad", "gradcam", "occlusion"])
    at.add_argument("--steps", type=int,
                    help="IG steps (default: the fewest that keep the median completeness gap under 1 %%, "
                         "see kdviz.attribution.DEFAULT_IG_STEPS)")
    at.add_argument("--rule", default="gausslegendre",
                    choices=["gausslegendre", "riemann_trapezoid", "riemann_middle", "riemann_left", "riemann_right"])
    at.add_argument("--baseline", default="zero", choices=["zero", "black", "blur", "noise", "mean", "multi"])
    at.add_argument("--target", default="pred", help="'pred' or a class index")
    at.add_argument("--data", help="data set whose normalisation a foreign file uses (default: ImageNet's)")
    at.add_argument("--mean")
    at.add_argument("--std")
    at.add_argument("--out", help="write the map (float32, channels × height × width) to this .npy")
    at.add_argument("--no-cache", action="store_true", help="neither read nor write the attribution cache")
    at.add_argument("--device")
    at.add_argument("--json", action="store_true")
    at.set_defaults(func=cmd_attribute)

    ig = sub.add_parser("ig-precompute", help="the teacher's IG map of every image of a split (resumable; torchrun shards it)")
    ig.add_argument("--weights", required=True, help="the teacher: checkpoint folder or file, run or asset name")
    ig.add_argument("--arch")
    ig.add_argument("--data", default="digits")
    ig.add_argument("--split", choices=["train", "test"], default="train")
    ig.add_argument("--out", required=True, help="cache folder (resumed if it exists)")
    ig.add_argument("--steps", type=int, default=32)
    ig.add_argument("--rule", default="gausslegendre")
    ig.add_argument("--baseline", default="zero", choices=["zero", "black", "blur", "noise", "mean"])
    ig.add_argument("--batch-size", type=int, default=16, help="images per chunk (a chunk is the unit of resume)")
    ig.add_argument("--internal-batch-size", type=int, help="IG's expanded inputs per forward pass")
    ig.add_argument("--limit", type=int, help="only the first N images of the split")
    ig.add_argument("--mean")
    ig.add_argument("--std")
    ig.add_argument("--device")
    ig.add_argument("--json", action="store_true")
    ig.set_defaults(func=cmd_ig_precompute)

    ds = sub.add_parser("distill", help="distil a student from a teacher: baseline, KD, IG overlays or both (torchrun: DDP)")
    ds.add_argument("--teacher", required=True, help="teacher checkpoint folder or file, run or asset name")
    ds.add_argument("--teacher-arch", help="architecture of a foreign teacher file (e.g. resnet56)")
    ds.add_argument("--data", default="digits")
    ds.add_argument("--arch", help="student architecture (default: the data set's default student)")
    ds.add_argument("--arch-kwargs", help='JSON, e.g. \'{"width_mult": 0.5}\'')
    ds.add_argument("--arm", default="kd+ig", choices=["baseline", "kd", "ig", "kd+ig"])
    ds.add_argument("--ig-cache", help="the teacher's IG cache folder (default: made once under KDVIZ_CACHE)")
    ds.add_argument("--name", help="run name (required under torchrun; an existing run is resumed)")
    ds.add_argument("--no-flip", action="store_true")
    ds.add_argument("--no-resume", action="store_true", help="fail instead of resuming an existing run")
    _add_distill_settings(ds)
    ds.add_argument("--device")
    ds.add_argument("--json", action="store_true")
    ds.set_defaults(func=cmd_distill)

    ab = sub.add_parser("ablate", help="ablation study: the four arms × N seeds, one study folder (resumable)")
    _add_study_options(ab)
    ab.set_defaults(func=cmd_ablate)

    hp = sub.add_parser("hpo", help="Optuna search over T, alpha, p, lambda, lr and weight decay (resumable)")
    _add_study_options(hp)
    hp.add_argument("--trials", type=int, default=20, help="finished trials to reach (default 20)")
    hp.add_argument("--storage", help="Optuna storage URL (default: sqlite file in the search folder; "
                                      "postgresql://... for many workers)")
    hp.add_argument("--holdout", type=int, help="training images held out to validate on (default: a fifth, at most 200)")
    hp.add_argument("--search-seed", type=int, default=0, help="seed of the sampler and of every trial")
    hp.add_argument("--train-best", metavar="NAME", help="then distil a student with the best values into run NAME")
    hp.set_defaults(func=cmd_hpo)

    a = sub.add_parser("make-assets", help="train the default teacher and student for the built-in data set")
    a.add_argument("--out", default=str(settings.assets_dir()))
    a.add_argument("--seed", type=int, default=0)
    a.set_defaults(func=cmd_make_assets)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "action", None) in ("rename", "delete") and not args.name:
        print("kdviz: error: name the run", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("kdviz: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for a person; KDVIZ_DEBUG=1 for the traceback
        if os.environ.get("KDVIZ_DEBUG"):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"kdviz: error: {message}", file=sys.stderr)
        return 1
