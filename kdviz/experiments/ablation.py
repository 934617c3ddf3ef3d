"""Ablation studies: the paper's four arms (baseline, KD, IG, KD + IG) and the extended paper's
attention-transfer arms (AT, KD + AT, KD + IG + AT), each with several seeds, in one folder.

A study folder holds everything it needs and made, so the dashboard and the CLI read the same::

    study.json              configuration, arms, seeds, status of every run (rewritten atomically)
    teacher/                the teacher, when the study trained or fine-tuned it (a normal run folder)
    igcache/                the teacher's IG maps of the training images (IG arms only)
    teacher_predictions.npy the teacher's test-set predictions (for the agreement metric)
    probe_indices.npy       the fixed test images whose attributions are compared
    teacher_probe_maps.npy  the teacher's IG maps of them
    teacher_cache/s<seed>-<view>/  the teacher's logits and attention maps of every view the arms of a
                            seed share (kdviz.training.teacher_cache; removed when the seed is done)
    runs/<arm>-s<seed>/     one normal run folder per arm and seed (card, weights, history, resume
                            state), plus metrics.json and probe_maps.npy once it is finished

The arms of a seed are paired: the same initial weights (the seed), the same batches, crops and
flips (kdviz.training.batches), so they are compared seed by seed (:mod:`.stats`). A study can be
run in parts (:class:`Selection`: some arms, some seeds), each finishing in one working session,
and its small summary (:mod:`.summary`) written where it can be committed.

Interrupted, a study resumes where it stopped: a run with ``metrics.json`` is never redone, an
unfinished run resumes from its last finished epoch (kdviz.training's resume), the IG cache from its
last finished chunk.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ..attribution import AttributionOptions
from ..attribution.comparison import compare
from ..attribution.igcache import INDEX, IGMapStore
from ..core import atomic, settings
from ..core.integrity import read_checked_npy, write_checked_npy
from ..core.lock import WriterLock
from ..core.machine import check_precision, cpu_name
from ..core.version import __version__
from ..data import Dataset, load_dataset
from ..models import create_model, model_stats
from ..models.checkpoints import CARD, LoadedModel, load_model
from ..models.evaluate import Predictions, predict, spread_indices
from ..training import (
    ARMS,
    CORE_ARMS,
    DistillConfig,
    DistillRequest,
    distill_run,
    ensure_ig_cache,
    subset_dataset,
)
from ..training.loop import EpochRecord, TrainConfig, TrainEvent, read_history, train
from ..training.workflows import TrainRequest, card_for
from .stats import NAN, comparisons, describe

STUDY = "study.json"
METRICS = "metrics.json"
PROBE_MAPS = "probe_maps.npy"
AGREEMENT_METRICS = ("spearman", "cosine", "top_k_iou", "ssim")


def studies_root() -> Path:
    """Where studies live: ``<KDVIZ_HOME>/studies`` (the page and the CLI share it)."""
    return settings.home() / "studies"


@dataclass
class TeacherConfig(TrainConfig):
    """Training of the teacher inside a study; ``init_from`` names the weights it was fine-tuned from."""

    init_from: str = ""


@dataclass
class StudyConfig:
    """What a study compares and how; stored in ``study.json`` and checked when a study resumes."""

    dataset: str = "digits"
    teacher: str = ""  # checkpoint folder or foreign file; empty: train ``teacher_arch`` from scratch
    teacher_arch: str | None = None  # for a foreign file, or the architecture to train
    teacher_arch_kwargs: dict = field(default_factory=dict)
    teacher_train: dict | None = None  # TrainConfig fields: fine-tune (or train) the teacher in the study
    student: str = "mnv2_student_4x"
    student_kwargs: dict = field(default_factory=dict)
    arms: list[str] = field(default_factory=lambda: list(CORE_ARMS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    train: dict = field(default_factory=dict)  # DistillConfig fields shared by every run
    probe: int = 32  # test images whose IG maps are compared with the teacher's
    probe_steps: int = 16  # IG steps for those maps
    test_limit: int | None = None  # final accuracy on N test images spread over the split (all by default)
    latency_seconds: float = 2.0  # time spent measuring each model's latency (0: not measured)

    def __post_init__(self) -> None:
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms:
            raise ValueError(
                f"unknown arm(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(ARMS)}"
            )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}")
        if not self.teacher and not self.teacher_arch:
            raise ValueError(
                "a study needs a teacher: a checkpoint (teacher) or an architecture to train (teacher_arch)"
            )
        self.run_config("baseline", self.seeds[0])  # checks the shared training settings now, not mid-study
        # every setting spelled out, a later one at its default: a study stored before a setting
        # existed ran as its default does, so it compares equal to the same study asked for today
        defaults = {k: v for k, v in asdict(DistillConfig()).items() if k not in ("arm", "seed")}
        self.train = json.loads(json.dumps({**defaults, **self.train}))

    def run_config(self, arm: str, seed: int) -> DistillConfig:
        known = {f.name for f in fields(DistillConfig)}
        bad = sorted(set(self.train) - known)
        if bad:
            raise ValueError(f"unknown training setting(s): {', '.join(bad)}")
        return DistillConfig(**{**self.train, "arm": arm, "seed": seed})

    def as_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))  # plain JSON types, so a stored config compares equal

    @property
    def attention_block(self) -> int | None:
        """The block every teacher call reports attention at when some arm transfers it (else None),
        so the arms of one view share one cache of teacher outputs."""
        if not any(DistillConfig(arm=a).uses_at for a in self.arms):
            return None
        return int(self.train.get("at_block", DistillConfig().at_block))

    @classmethod
    def from_dict(cls, obj: dict) -> StudyConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in known})


@dataclass
class Selection:
    """The part of a study to run now: some of its arms and seeds (None: all). The rest stays pending."""

    arms: list[str] | None = None
    seeds: list[int] | None = None

    def check(self, config: StudyConfig) -> None:
        bad = [a for a in self.arms or [] if a not in config.arms]
        bad += [str(s) for s in self.seeds or [] if s not in config.seeds]
        if bad:
            raise StudyError(
                f"{', '.join(bad)} not in the study (arms {', '.join(config.arms)}; "
                f"seeds {', '.join(map(str, config.seeds))})"
            )

    def covers(self, arm: str, seed: int) -> bool:
        return (self.arms is None or arm in self.arms) and (self.seeds is None or seed in self.seeds)


def run_name(arm: str, seed: int) -> str:
    """A folder name for an arm and seed (``kd+ig`` → ``kd-ig-s0``)."""
    return f"{arm.replace('+', '-')}-s{seed}"


@dataclass
class StudyEvent:
    """What a study reports while it works: for a progress bar and live curves."""

    stage: str  # "teacher", "igcache", "reference", "run", "metrics", "done", "stopped"
    message: str
    fraction: float
    run: str | None = None
    history: list[EpochRecord] = field(default_factory=list)


class StudyError(Exception):
    """A study that cannot start or resume as asked; the message says why."""


# ---------------------------------------------------------------------------------- running


def _write_state(folder: Path, state: dict) -> None:
    state["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    atomic.write_json(folder / STUDY, state)


def open_or_create(folder: str | Path, config: StudyConfig | None) -> tuple[Path, StudyConfig, dict]:
    """Load the study in ``folder``, or start one with ``config``; a different config is refused."""
    folder = Path(folder)
    atomic.remove_leftovers(folder)  # a study killed while writing study.json left its temporary file
    if (folder / STUDY).is_file():
        state = json.loads((folder / STUDY).read_text())
        stored = StudyConfig.from_dict(state["config"])
        if config is not None and config.as_dict() != stored.as_dict():
            diff = [k for k, v in config.as_dict().items() if state["config"].get(k) != v]
            raise StudyError(
                f"{folder} holds a study with other settings ({', '.join(diff)}); "
                "choose another name or delete it"
            )
        return folder, stored, state
    if config is None:
        raise StudyError(f"no study in {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "config": config.as_dict(),
        "status": "created",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "kdviz_version": __version__,
        "runs": [
            {"name": run_name(a, s), "arm": a, "seed": s, "status": "pending"}
            for s in config.seeds
            for a in config.arms
        ],
    }
    _write_state(folder, state)
    return folder, config, state


def teacher_path(spec: str) -> Path:
    """A study's teacher: a path, or one relative to the project (``assets/cifar10_teacher``), so a
    study's configuration is the same on every machine that runs a part of it."""
    path = Path(spec).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return settings.PROJECT_ROOT / path


def prepare_teacher(
    folder: Path,
    config: StudyConfig,
    data: Dataset,
    *,
    callback: Callable[[TrainEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str = "cpu",
) -> LoadedModel | None:
    """The study's teacher: the given checkpoint, or one trained or fine-tuned into ``folder/teacher``.

    Returns None when stopped before the teacher was finished (it resumes next time).
    """
    if not config.teacher_train:
        return load_model(teacher_path(config.teacher), config.teacher_arch, data=data)
    tdir = folder / "teacher"
    if (tdir / CARD).is_file() and json.loads((tdir / CARD).read_text()).get("metrics", {}).get("complete"):
        return load_model(tdir)
    tcfg = TeacherConfig(**{**config.teacher_train, "init_from": config.teacher})
    if config.teacher:
        base = load_model(teacher_path(config.teacher), config.teacher_arch, data=data)
        model, arch, kwargs = base.model, base.card.arch, dict(base.card.arch_kwargs)
    else:
        torch.manual_seed(tcfg.seed)
        assert config.teacher_arch is not None  # StudyConfig asks for a teacher or an architecture
        arch, kwargs = config.teacher_arch, dict(config.teacher_arch_kwargs)
        model = create_model(arch, num_classes=data.num_classes, **kwargs)
    card = card_for(
        TrainRequest(
            name="teacher", arch=arch, dataset=data.source, arch_kwargs=kwargs, role="teacher", config=tcfg
        ),
        data,
        model,
    )
    result = train(
        model, data, tcfg, run_dir=tdir, card=card, callback=callback, should_stop=should_stop, device=device
    )
    return None if result.stopped else load_model(tdir)


def prepare_inputs(
    folder: Path,
    config: StudyConfig,
    *,
    data: Dataset | None = None,
    report: Callable[[StudyEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str = "cpu",
    with_ig_cache: bool | None = None,
) -> tuple[LoadedModel, Dataset, Dataset, IGMapStore | None] | None:
    """Teacher, full data, training data (the subset) and IG cache of a study or a search (None: stopped).

    The IG cache is built when ``with_ig_cache`` (None: when an arm of the study uses IG); a caller
    that may not need it passes False and asks :func:`study_ig_cache` later.
    """
    report = report or (lambda e: None)
    data = data or load_dataset(config.dataset)

    def teacher_event(e: TrainEvent) -> None:
        report(
            StudyEvent(
                "teacher",
                f"teacher: epoch {e.epoch}/{e.epochs}, step {e.step}/{e.steps}",
                0.0,
                "teacher",
                list(e.history),
            )
        )

    report(StudyEvent("teacher", "preparing the teacher…", 0.0))
    teacher = prepare_teacher(
        folder, config, data, callback=teacher_event, should_stop=should_stop, device=device
    )
    if teacher is None:
        return None
    shared = config.run_config(config.arms[0], config.seeds[0])
    train_data = subset_dataset(data, shared.subset, shared.subset_seed)
    store = None
    if with_ig_cache is None:
        with_ig_cache = any(DistillConfig(arm=a).uses_ig for a in config.arms)
    if with_ig_cache:
        store = study_ig_cache(folder, config, teacher, train_data, report=report, should_stop=should_stop)
        if store is None:
            return None
    return teacher, data, train_data, store


def study_ig_cache(
    folder: Path,
    config: StudyConfig,
    teacher: LoadedModel,
    train_data: Dataset,
    *,
    report: Callable[[StudyEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> IGMapStore | None:
    """The teacher's IG maps of the study's training images, built or resumed (None: stopped first).

    Another study beside this one (the sweep's studies and the main one share a teacher and images),
    or a ``distill`` run's cache, may have made the same maps: a finished one is shared, not redone.
    """
    report = report or (lambda e: None)

    computed: list[int] = []

    def ig_progress(done: int, total: int, rate: float) -> None:
        computed.append(done)
        report(StudyEvent("igcache", f"teacher IG maps: {done}/{total} ({rate:.0f} images/s)", 0.0))

    cache = folder / "igcache"
    new = not (cache / INDEX).is_file()
    store = ensure_ig_cache(
        teacher,
        train_data,
        cache,
        steps=config.run_config(config.arms[0], config.seeds[0]).ig_steps,
        progress=ig_progress,
        should_stop=should_stop,
        share=_other_ig_caches(folder),
    )
    if new and store.complete and not computed:
        report(StudyEvent("igcache", f"teacher IG maps: {len(store)} shared with another study", 0.0))
    return store if store.complete else None


def _other_ig_caches(folder: Path) -> list[Path]:
    """IG cache folders that may hold a study's maps already: its sibling studies', then the
    per-teacher caches of ``distill`` runs (``KDVIZ_CACHE/igcache``)."""
    siblings = sorted(p / "igcache" for p in folder.parent.glob("*") if p.is_dir() and p != folder)
    runs = settings.cache_dir() / "igcache"
    return siblings + (sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else [])


def _reference(
    folder: Path, config: StudyConfig, state: dict, teacher: LoadedModel, data: Dataset, device: str
) -> np.ndarray:
    """Teacher predictions, probe images and model costs: computed once per study, then read."""
    pred_file = folder / "teacher_predictions.npy"
    cached = read_checked_npy(pred_file)  # a damaged file is deleted here, and recomputed below
    if cached is not None and cached.shape == spread_indices(len(data.test), config.test_limit).shape:
        return cached
    preds = _test_predictions(teacher, data, config, device)
    student = create_model(config.student, num_classes=data.num_classes, **config.student_kwargs)
    t_stats, s_stats = model_stats(teacher.model, data.image_size), model_stats(student, data.image_size)
    state["teacher"] = {
        "path": str(teacher.path),
        "arch": teacher.card.arch,
        "test_accuracy": preds.accuracy,
        **t_stats.as_dict(),
    }
    state["student"] = {"arch": config.student, "arch_kwargs": config.student_kwargs, **s_stats.as_dict()}
    state["compression"] = t_stats.params / max(s_stats.params, 1)
    if config.latency_seconds > 0:
        from ..bench.latency import eager

        kw: dict[str, Any] = dict(warmup=2, repeats=30, max_seconds=config.latency_seconds)
        t_ms = eager(teacher.model, "teacher", image_size=data.image_size, **kw).median_ms
        s_ms = eager(student, "student", image_size=data.image_size, **kw).median_ms
        state["teacher"]["latency_ms"], state["student"]["latency_ms"] = t_ms, s_ms
        teacher.model.to(device)
    atomic.write_npy(folder / "probe_indices.npy", spread_indices(len(data.test), config.probe))
    _write_state(folder, state)
    write_checked_npy(pred_file, preds.predicted)  # last: its presence means the reference is complete
    return preds.predicted


def _test_predictions(loaded: LoadedModel, data: Dataset, config: StudyConfig, device: str) -> Predictions:
    """A model's predictions on the study's test images: teacher and students are judged alike."""
    return predict(
        loaded.model,
        data.test,
        mean=loaded.card.mean,
        std=loaded.card.std,
        limit=config.test_limit,
        device=device,
    )


def evaluate_run(
    folder: Path,
    run_dir: Path,
    config: StudyConfig,
    teacher: LoadedModel,
    data: Dataset,
    teacher_pred: np.ndarray,
    device: str = "cpu",
    extra: dict | None = None,
) -> dict:
    """A finished run's metrics: test accuracy, agreement with the teacher's predictions and with its maps."""
    student = load_model(run_dir, map_location=device)
    preds = _test_predictions(student, data, config, device)
    probe = np.load(folder / "probe_indices.npy", allow_pickle=False)
    options = AttributionOptions(method="ig", steps=config.probe_steps, target="true")
    student.model.cpu()
    teacher.model.cpu()
    cmp = compare(teacher, student, data.test, probe, options)
    teacher.model.to(device)
    t_maps = folder / "teacher_probe_maps.npy"
    if not t_maps.is_file():
        atomic.write_npy(t_maps, cmp.teacher_maps.astype(np.float32))
    atomic.write_npy(run_dir / PROBE_MAPS, cmp.student_maps.astype(np.float32))
    history = read_history(run_dir)
    card = student.card
    metrics = {
        "arm": card.train_config.get("arm"),
        "seed": card.train_config.get("seed"),
        "test_accuracy": preds.accuracy,
        "test_images": int(len(preds.labels)),
        "teacher_agreement": float((preds.predicted == teacher_pred).mean()),
        "attribution": {k: float(np.nanmean(v)) for k, v in cmp.agreement.items()},
        "attribution_per_image": {k: [float(x) for x in v] for k, v in cmp.agreement.items()},
        "probe_predictions": [int(p) for p in cmp.student_pred],
        "epochs": len(history),
        "train_seconds": sum(r.seconds for r in history),
        "params": card.stats.get("params"),
        "macs": card.stats.get("macs"),
        **(extra or {}),
    }
    atomic.write_json(run_dir / METRICS, metrics)
    return metrics


def summarised_runs(summary: str | Path | None, config: StudyConfig) -> set[str]:
    """The runs a committed summary of this same study already holds: a part interrupted in one
    session goes on in the next, on any machine, without redoing the runs whose numbers are kept
    (their weights stay where they were made). A summary of other settings holds none of ours."""
    if summary is None:
        return set()
    from .summary import load_summary

    try:
        view = load_summary(summary)
    except StudyError:
        return set()
    if view.config.as_dict() != config.as_dict():
        return set()
    return {r.name for r in view.runs if r.metrics is not None}


def run_study(
    folder: str | Path,
    config: StudyConfig | None = None,
    *,
    lock_description: str | None = None,
    **options: Any,
) -> StudyView:
    """Run (or resume) the study in ``folder`` as its one writer: another is refused
    (:class:`~kdviz.core.lock.LockHeld`); ``options`` are :func:`_run_study`'s."""
    with WriterLock(folder, lock_description):
        return _run_study(folder, config, **options)


def _run_study(
    folder: str | Path,
    config: StudyConfig | None = None,
    *,
    data: Dataset | None = None,
    report: Callable[[StudyEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str = "cpu",
    part: Selection | None = None,
    summary: str | Path | None = None,
    part_name: str = "",
    keep_teacher_cache: bool = False,
) -> StudyView:
    """Run (or resume) the study in ``folder``; returns what it holds when it ends or is stopped.

    ``part`` runs only some arms and seeds (the others stay pending, for another session); with
    ``summary`` the study's small summary (:func:`.summary.write_summary`) is rewritten there after
    every finished run, recorded as part ``part_name``. The teacher caches of the part's seeds are
    deleted when it finishes (they are large; the next part may run elsewhere) unless
    ``keep_teacher_cache``; an interrupted part keeps them for its resume.
    """
    folder, config, state = open_or_create(folder, config)
    part = part or Selection()
    part.check(config)
    # before the hours of set-up (the teacher's IG cache): a bfloat16 study on a CPU without native
    # bfloat16 would otherwise build it and only then be refused by the first run's training loop
    for train_fields in (config.train, config.teacher_train or {}):
        check_precision(  # "train in float32" would make another study, not this one
            str(train_fields.get("precision", "float32")),
            advice=f"study {folder.name!r} trains in bfloat16, and every run and part of a study shares "
            "its recipe: run it on a CPU with AVX-512 BF16 or AMX (a float32 study is another study, "
            "under another name)",
        )
    report = report or (lambda e: None)
    stop = should_stop or (lambda: False)
    state["status"] = "running"
    _write_state(folder, state)
    try:
        summarised = summarised_runs(summary, config)
        runs = _part_runs(state, part)
        # the IG cache (the teacher's IG maps of every training image: the longest set-up) is built
        # only when a run still to do needs it, and those runs go last: the others finish first
        prepared = prepare_inputs(
            folder, config, data=data, report=report, should_stop=stop, device=device, with_ig_cache=False
        )
        if prepared is None:
            return _stopped(folder, state, report)
        teacher, data, train_data, store = prepared
        state["subset_size"] = len(train_data.train)
        report(StudyEvent("reference", "teacher predictions, probe images, latency…", 0.0))
        teacher_pred = _reference(folder, config, state, teacher, data, device)
        started = time.perf_counter()
        for i, entry in enumerate(runs):
            run_dir = folder / "runs" / entry["name"]
            if (run_dir / METRICS).is_file():
                entry["status"] = "done"
                continue
            if entry["name"] in summarised:  # finished in an earlier session, maybe on another machine
                entry["status"] = "summarised"
                continue
            entry["status"] = "running"
            _write_state(folder, state)

            def on_event(e: TrainEvent, i: int = i, name: str = entry["name"]) -> None:
                report(
                    StudyEvent(
                        "run",
                        f"{name} ({i + 1}/{len(runs)}): epoch {e.epoch}/{e.epochs}, step {e.step}/{e.steps}",
                        (i + e.fraction) / len(runs),
                        name,
                        list(e.history),
                    )
                )

            cfg = config.run_config(entry["arm"], entry["seed"])
            ig_cache_seconds = 0.0
            if cfg.uses_ig and store is None:
                cache_started = time.perf_counter()
                store = study_ig_cache(folder, config, teacher, train_data, report=report, should_stop=stop)
                if store is None:
                    entry["status"] = "pending"
                    return _stopped(folder, state, report)
                state["ig_cache"] = str(store.folder)
                ig_cache_seconds = time.perf_counter() - cache_started
            # the run's own clock starts after the cache: the cache serves every IG run of the
            # study and is counted once, in the record of the run that waited for it
            run_started = time.perf_counter()
            cfg.teacher = str(teacher.path)
            cfg.ig_cache = str(store.folder) if (store is not None and cfg.uses_ig) else ""
            view_dir = teacher_cache_dir(folder, cfg.seed, cfg.uses_ig)
            cached_epochs = len(list(view_dir.glob("epoch-*.safetensors"))) if cfg.uses_teacher else 0
            request = DistillRequest(
                name=entry["name"],
                arch=config.student,
                dataset=config.dataset,
                arch_kwargs=dict(config.student_kwargs),
                config=cfg,
            )
            _, result = distill_run(
                request,
                teacher,
                train_data,
                run_dir,
                store=store,
                callback=on_event,
                should_stop=stop,
                device=device,
                teacher_cache=view_dir,
                attention_block=config.attention_block,
            )
            if result.stopped:
                entry["status"] = "stopped"
                return _stopped(folder, state, report)
            report(
                StudyEvent(
                    "metrics",
                    f"{entry['name']}: accuracy and attribution agreement…",
                    (i + 1) / len(runs),
                    entry["name"],
                )
            )
            evaluate_run(
                folder,
                run_dir,
                config,
                teacher,
                data,
                teacher_pred,
                device,
                extra={
                    "wall_seconds": time.perf_counter() - run_started,
                    "ig_cache_seconds": ig_cache_seconds,
                    "resumed_from_epoch": result.resumed_from,
                    "teacher_epochs_from_cache": min(cached_epochs, cfg.epochs) if cfg.uses_teacher else 0,
                    "part": part_name,
                    # parts of one study run on machines of one name and different speeds: a run's
                    # wall time is read against the machine and the day it was measured on
                    "machine": f"{cpu_name()}, {os.cpu_count()} cores",
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                },
            )
            entry["status"] = "done"
            _drop_finished_caches(folder, state, int(entry["seed"]))
            _write_state(folder, state)
            if summary is not None:
                from .summary import write_summary

                write_summary(load_study(folder), summary, part=part_name)
            if stop():
                return _stopped(folder, state, report)
        if not keep_teacher_cache:
            for seed in {int(e["seed"]) for e in runs}:
                for ig_view in (False, True):
                    shutil.rmtree(teacher_cache_dir(folder, seed, ig_view), ignore_errors=True)
        state.setdefault("parts", {})[part_name or "all"] = {
            "arms": part.arms,
            "seeds": part.seeds,
            "wall_seconds_last_session": time.perf_counter() - started,
        }
    except BaseException as exc:
        state["status"], state["error"] = "failed", f"{type(exc).__name__}: {exc}"
        _write_state(folder, state)
        raise
    summarised = summarised_runs(summary, config)
    complete = all(
        (folder / "runs" / e["name"] / METRICS).is_file() or e["name"] in summarised for e in state["runs"]
    )
    state["status"] = "done" if complete else "partial"
    state.pop("error", None)
    _write_state(folder, state)
    if summary is not None:
        from .summary import write_summary

        write_summary(load_study(folder), summary, part=part_name)
    report(StudyEvent("done", "study finished" if complete else "this part finished", 1.0))
    return load_study(folder)


def _part_runs(state: dict, part: Selection) -> list[dict]:
    """The part's runs in the order they run: those that need no IG cache first, then those that do;
    within each, the study's order (so an arm that reads a teacher view follows the one that writes it)."""
    runs = [e for e in state["runs"] if part.covers(e["arm"], int(e["seed"]))]
    return sorted(runs, key=lambda e: DistillConfig(arm=e["arm"]).uses_ig)


def teacher_cache_dir(folder: Path, seed: int, ig_view: bool) -> Path:
    """The cache of the teacher's outputs shared by one seed's arms that see one view."""
    return folder / "teacher_cache" / f"s{seed}-{'ig' if ig_view else 'plain'}"


def _drop_finished_caches(folder: Path, state: dict, seed: int) -> None:
    """A seed whose every run is finished needs its teacher caches no more (they are large)."""
    mine = [e for e in state["runs"] if int(e["seed"]) == seed]
    if all((folder / "runs" / e["name"] / METRICS).is_file() for e in mine):
        for ig_view in (False, True):
            shutil.rmtree(teacher_cache_dir(folder, seed, ig_view), ignore_errors=True)


def _stopped(folder: Path, state: dict, report: Callable[[StudyEvent], None]) -> StudyView:
    state["status"] = "stopped"
    _write_state(folder, state)
    report(
        StudyEvent(
            "stopped",
            "stopped; run it again to resume",
            sum(r["status"] == "done" for r in state["runs"]) / len(state["runs"]),
        )
    )
    return load_study(folder)


# ---------------------------------------------------------------------------------- reading


@dataclass
class RunView:
    name: str
    arm: str
    seed: int
    folder: Path
    status: str
    metrics: dict | None
    history: list[EpochRecord]


@dataclass
class StudyView:
    """A study folder as read from disk (finished or not): what the page and the CLI show."""

    folder: Path
    config: StudyConfig
    state: dict
    runs: list[RunView]
    summary: bool = False  # read from a committed summary (:mod:`.summary`): numbers only, no weights

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def status(self) -> str:
        return self.state.get("status", "?")

    @property
    def finished_runs(self) -> int:
        return sum(r.metrics is not None for r in self.runs)

    def probe(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The probe images' indices into the test split and the teacher's maps of them (None before)."""
        if self.summary:
            return None
        idx, maps = self.folder / "probe_indices.npy", self.folder / "teacher_probe_maps.npy"
        if not (idx.is_file() and maps.is_file()):
            return None
        return np.load(idx, allow_pickle=False), np.load(maps, allow_pickle=False)

    def probe_maps(self, run: RunView) -> np.ndarray | None:
        path = run.folder / PROBE_MAPS
        return np.load(path, allow_pickle=False) if path.is_file() else None


def load_study(folder: str | Path) -> StudyView:
    folder = Path(folder)
    if not (folder / STUDY).is_file():
        raise StudyError(f"{folder} is not a study folder (no {STUDY})")
    try:
        state = json.loads((folder / STUDY).read_text())
        config = StudyConfig.from_dict(state["config"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise StudyError(f"{folder / STUDY} cannot be read ({exc})") from None
    runs = []
    for entry in state.get("runs", []):
        run_dir = folder / "runs" / entry["name"]
        metrics = json.loads((run_dir / METRICS).read_text()) if (run_dir / METRICS).is_file() else None
        status = "done" if metrics is not None else entry.get("status", "pending")
        runs.append(
            RunView(
                entry["name"],
                entry["arm"],
                int(entry["seed"]),
                run_dir,
                status,
                metrics,
                read_history(run_dir),
            )
        )
    return StudyView(folder, config, state, runs)


def list_studies(root: str | Path | None = None) -> list[StudyView]:
    """The readable studies under ``root`` (default :func:`studies_root`), newest first."""
    root = Path(root) if root is not None else studies_root()
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if (path / STUDY).is_file():
            try:
                found.append(load_study(path))
            except StudyError:
                continue
    return sorted(found, key=lambda s: (s.folder / STUDY).stat().st_mtime, reverse=True)


# ---------------------------------------------------------------------------------- the table


def _mean_std(values: list[float]) -> tuple[float, float]:
    summary = describe(values)
    return summary.mean, summary.sd


#: the reference arms every other arm is compared with, seed by seed
REFERENCES = ("baseline", "kd")


def summarise(study: StudyView) -> list[dict]:
    """One row per arm: accuracy mean ± sd and its 95 % interval over seeds; the paired difference to
    the baseline and to KD with its interval, paired t-test p (raw and Holm-corrected over every
    comparison of the study) and Cohen's d_z; share of the teacher's accuracy kept, agreement with the
    teacher, cost and wall time. The page, the CLI's ``--json`` and the committed summary all show it."""
    teacher = study.state.get("teacher", {})
    student = study.state.get("student", {})
    by_arm = {arm: [r for r in study.runs if r.arm == arm and r.metrics] for arm in study.config.arms}
    accuracy = {
        arm: {r.seed: cast(dict, r.metrics)["test_accuracy"] for r in runs} for arm, runs in by_arm.items()
    }
    compared = {(c.arm, c.reference): c for c in comparisons(accuracy, REFERENCES)}
    rows = []
    for arm, runs in by_arm.items():
        done = [cast(dict, r.metrics) for r in runs]
        acc = describe([m["test_accuracy"] for m in done])
        row: dict[str, Any] = {
            "arm": arm,
            "what": ARMS[arm],
            "seeds done": len(done),
            "of": len(study.config.seeds),
            "seeds": sorted(accuracy[arm]),
            "accuracy": acc.mean,
            "accuracy std": acc.sd,
            "accuracy ci low": acc.ci_low,
            "accuracy ci high": acc.ci_high,
        }
        for ref in REFERENCES:
            c = compared.get((arm, ref))
            same = arm == ref and bool(done)
            row[f"Δ vs {ref}"] = 0.0 if same else (c.diff if c else NAN)
            row[f"Δ vs {ref} ci low"] = c.ci_low if c else NAN
            row[f"Δ vs {ref} ci high"] = c.ci_high if c else NAN
            row[f"p vs {ref}"] = c.p if c else NAN
            row[f"p vs {ref} (Holm)"] = c.p_holm if c else NAN
            row[f"d_z vs {ref}"] = c.effect_dz if c else NAN
        t_acc = teacher.get("test_accuracy")
        row["teacher's accuracy kept"] = acc.mean / t_acc if t_acc and done else NAN
        row["agreement with teacher"], row["agreement std"] = _mean_std(
            [m["teacher_agreement"] for m in done]
        )
        for k in AGREEMENT_METRICS:
            row[f"IG {k}"] = _mean_std([m["attribution"][k] for m in done])[0]
        row["compression ×"] = study.state.get("compression", NAN)
        row["latency ms"] = student.get("latency_ms", NAN)
        row["speed-up ×"] = (
            teacher["latency_ms"] / student["latency_ms"]
            if teacher.get("latency_ms") and student.get("latency_ms")
            else NAN
        )
        row["wall minutes per run"] = _mean_std(
            [m["wall_seconds"] / 60 for m in done if "wall_seconds" in m]
        )[0]
        rows.append(row)
    return rows


def _num(v: float | None, fmt: str, scale: float = 1.0) -> str:
    return "–" if v is None or v != v else format(scale * v, fmt)


def _interval(row: dict, key: str, fmt: str = ".2f", scale: float = 100.0) -> str:
    low, high = row[f"{key} ci low"], row[f"{key} ci high"]
    return "–" if low != low else f"[{_num(low, fmt, scale)}, {_num(high, fmt, scale)}]"


#: the published table's columns: (heading, cell of a row)
TABLE_COLUMNS: list[tuple[str, Callable[[dict], str]]] = [
    ("arm", lambda r: r["arm"]),
    ("seeds", lambda r: f"{r['seeds done']}/{r['of']}"),
    (
        "accuracy % (mean ± sd)",
        lambda r: f"{_num(r['accuracy'], '.2f', 100)} ± {_num(r['accuracy std'], '.2f', 100)}",
    ),
    ("95 % CI", lambda r: _interval(r, "accuracy")),
    ("Δ vs baseline (points)", lambda r: _num(r["Δ vs baseline"], "+.2f", 100)),
    ("its 95 % CI", lambda r: _interval(r, "Δ vs baseline", "+.2f")),
    ("p (paired t)", lambda r: _num(r["p vs baseline"], ".3f")),
    ("p Holm", lambda r: _num(r["p vs baseline (Holm)"], ".3f")),
    ("d_z", lambda r: _num(r["d_z vs baseline"], "+.2f")),
    ("Δ vs KD (points)", lambda r: _num(r["Δ vs kd"], "+.2f", 100)),
    ("its 95 % CI", lambda r: _interval(r, "Δ vs kd", "+.2f")),
    ("p Holm vs KD", lambda r: _num(r["p vs kd (Holm)"], ".3f")),
    ("agreement with teacher %", lambda r: _num(r["agreement with teacher"], ".2f", 100)),
    ("IG Spearman with teacher", lambda r: _num(r["IG spearman"], ".3f")),
    ("compression ×", lambda r: _num(r["compression ×"], ".2f")),
    ("latency ms (batch 1)", lambda r: _num(r["latency ms"], ".2f")),
    ("minutes per run", lambda r: _num(r["wall minutes per run"], ".1f")),
]


def markdown_table(rows: list[dict]) -> str:
    """The summary as a Markdown table (for docs/results, the CLI and the page's download)."""
    lines = ["| " + " | ".join(h for h, _ in TABLE_COLUMNS) + " |", "|" + " --- |" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(cell(r) for _, cell in TABLE_COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


#: the CSV's columns: every number of a row, unrounded (the Markdown table shows them rounded)
CSV_COLUMNS = (
    "arm", "seeds done", "of", "accuracy", "accuracy std", "accuracy ci low", "accuracy ci high",
    *(f"{k} vs {ref}{tail}" for ref in REFERENCES for k, tail in (
        ("Δ", ""), ("Δ", " ci low"), ("Δ", " ci high"), ("p", ""), ("p", " (Holm)"), ("d_z", ""))),
    "teacher's accuracy kept", "agreement with teacher", "agreement std",
    *(f"IG {k}" for k in AGREEMENT_METRICS),
    "compression ×", "latency ms", "speed-up ×", "wall minutes per run",
)  # fmt: skip


def csv_table(rows: list[dict]) -> str:
    """The summary as CSV, every number as computed (NaN: not defined, e.g. one seed)."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow(["" if (isinstance(v := r[c], float) and v != v) else v for c in CSV_COLUMNS])
    return out.getvalue()
