"""Hyperparameter search for the KD + IG student with Optuna: T, α, p, λ, learning rate, weight decay.

Each trial is a distilled student (a run folder under ``trials/``) whose accuracy on images held out
of the training set is reported to Optuna after every epoch, so a pruner can end hopeless trials
early; the test split is never looked at while choosing. The study is stored in an Optuna storage:
by default a SQLite file in the search folder, or any database URL Optuna accepts (PostgreSQL lets
many workers on many machines share one search: start the same command on each).

A search folder (under ``<KDVIZ_HOME>/studies/`` beside the ablation studies)::

    search.json   base configuration, search space, storage (password hidden), status
    optuna.db     the default storage
    teacher/ igcache/   as in an ablation study (made once, reused)
    trials/trial-N/     one run folder per trial
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core import atomic
from ..core.lock import WriterLock
from ..data import Dataset
from ..training import DistillConfig, DistillRequest, distill_run
from ..training.loop import TrainEvent
from .ablation import StudyConfig, StudyError, StudyEvent, prepare_inputs

SEARCH = "search.json"
STUDY_NAME = "kdviz"


@dataclass
class SearchSpace:
    """Ranges searched (low, high); ``log`` ranges are sampled on a log scale."""

    temperature: tuple[float, float] = (1.5, 8.0)  # the paper's grid spans these
    alpha: tuple[float, float] = (0.0005, 0.9)  # log
    overlay_p: tuple[float, float] = (0.0, 0.5)
    overlay_lambda: tuple[float, float] = (0.1, 1.0)
    lr_factor: tuple[float, float] = (0.1, 3.0)  # log; times the base learning rate
    weight_decay: tuple[float, float] = (1e-6, 1e-2)  # log
    at_beta: tuple[float, float] = (0.05, 10.0)  # log; searched for the attention-transfer arms only

    LOG = ("alpha", "lr_factor", "weight_decay", "at_beta")

    def suggest(self, trial, base: DistillConfig) -> dict:
        """The trial's values, as DistillConfig fields (β only when the arm transfers attention)."""
        names = ["temperature", "alpha", "overlay_p", "overlay_lambda", "lr_factor", "weight_decay"]
        if base.uses_at:
            names.append("at_beta")
        values = {
            name: trial.suggest_float(name, *getattr(self, name), log=name in self.LOG) for name in names
        }
        values["lr"] = base.lr * values.pop("lr_factor")
        return values


@dataclass
class SearchConfig:
    """A search: the study it is based on (data, teacher, student, shared settings), its space and size."""

    base: StudyConfig = field(default_factory=StudyConfig)
    space: SearchSpace = field(default_factory=SearchSpace)
    arm: str = "kd+ig"
    trials: int = 20
    holdout: int = 200  # training images to validate on
    seed: int = 0  # the sampler's and every trial's seed
    startup_trials: int = 3  # the pruner waits for this many finished trials
    warmup_epochs: int = 1  # and prunes no trial before this many epochs

    def as_dict(self) -> dict:
        out = asdict(self)
        out["base"] = self.base.as_dict()
        return json.loads(json.dumps(out))

    @classmethod
    def from_dict(cls, obj: dict) -> SearchConfig:
        space = SearchSpace(**{k: tuple(v) for k, v in obj.get("space", {}).items()})
        rest = {k: v for k, v in obj.items() if k not in ("base", "space")}
        return cls(base=StudyConfig.from_dict(obj["base"]), space=space, **rest)

    def base_config(self) -> DistillConfig:
        cfg = self.base.run_config(self.arm, self.seed)
        cfg.holdout = self.holdout
        return cfg


def default_storage(folder: str | Path) -> str:
    return f"sqlite:///{Path(folder).resolve() / 'optuna.db'}"


def hide_password(url: str) -> str:
    """``postgresql://user:secret@host/db`` → ``postgresql://user:***@host/db`` (for search.json and
    the page)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def open_study(storage: str, *, seed: int = 0, startup_trials: int = 3, warmup_epochs: int = 1, pruner=None):
    """The Optuna study in ``storage`` (created when missing): maximise accuracy, TPE sampler, and the
    median pruner unless another Optuna pruner is given."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = pruner or optuna.pruners.MedianPruner(
        n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs
    )
    return optuna.create_study(
        storage=storage,
        study_name=STUDY_NAME,
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=pruner,
    )


class _Stopped(Exception):
    """Raised inside a trial when the person stops the search (the trial is marked failed)."""


def run_search(
    folder: str | Path,
    config: SearchConfig | None = None,
    *,
    storage: str | None = None,
    lock_description: str | None = None,
    **options: Any,
):
    """Run (or resume) the search in ``folder``; ``options`` are :func:`_run_search`'s.

    With its study in the folder (the default SQLite file) the search has one writer: another is
    refused (:class:`~kdviz.core.lock.LockHeld`). With ``storage`` elsewhere, many workers may share
    one study by design; each trial's run folder still has its own writer lock.
    """
    if storage is not None:
        return _run_search(folder, config, storage=storage, **options)
    with WriterLock(folder, lock_description):
        return _run_search(folder, config, **options)


def _run_search(
    folder: str | Path,
    config: SearchConfig | None = None,
    *,
    storage: str | None = None,
    data: Dataset | None = None,
    report: Callable[[StudyEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str = "cpu",
    pruner=None,
):
    """Run trials until ``config.trials`` have finished (complete or pruned); resumes a stopped search.

    ``storage`` is any Optuna storage URL (default: ``optuna.db`` in ``folder``); ``pruner`` any Optuna
    pruner (default: median). Returns the Optuna study.
    """
    import optuna

    folder = Path(folder)
    config = _open_or_create(folder, config, storage)
    storage = storage or default_storage(folder)
    report = report or (lambda e: None)
    stop = should_stop or (lambda: False)
    prepared = prepare_inputs(folder, config.base, data=data, report=report, should_stop=stop, device=device)
    study = open_study(
        storage,
        seed=config.seed,
        startup_trials=config.startup_trials,
        warmup_epochs=config.warmup_epochs,
        pruner=pruner,
    )
    if prepared is None:
        _set_status(folder, "stopped")
        return study
    teacher, _, train_data, store = prepared
    base = config.base_config()
    base.teacher = str(teacher.path)
    base.ig_cache = str(store.folder) if store is not None else ""
    _set_status(folder, "running")

    def finished() -> int:
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        return len(study.get_trials(deepcopy=False, states=states))

    def objective(trial) -> float:
        cfg = DistillConfig(**{**asdict(base), **config.space.suggest(trial, base)})
        name = f"trial-{trial.number}"
        done_before = finished()

        def on_event(e: TrainEvent) -> None:
            report(
                StudyEvent(
                    "run",
                    f"{name}: epoch {e.epoch}/{e.epochs}, step {e.step}/{e.steps}",
                    (done_before + e.fraction) / config.trials,
                    name,
                    list(e.history),
                )
            )
            if e.kind == "epoch" and e.record is not None:  # an epoch's event carries its record
                trial.report(e.record.test_acc, e.epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(
                        f"validation accuracy {e.record.test_acc:.4f} after epoch {e.epoch}"
                    )

        request = DistillRequest(
            name=name,
            arch=config.base.student,
            dataset=config.base.dataset,
            arch_kwargs=dict(config.base.student_kwargs),
            config=cfg,
        )
        _, result = distill_run(
            request,
            teacher,
            train_data,
            folder / "trials" / name,
            store=store,
            callback=on_event,
            should_stop=stop,
            device=device,
        )
        if result.stopped:
            raise _Stopped()
        trial.set_user_attr("run_dir", str(folder / "trials" / name))
        return result.history[-1].test_acc

    try:
        while finished() < config.trials and not stop():
            study.optimize(objective, n_trials=1, catch=())
    except _Stopped:
        pass
    status = "done" if finished() >= config.trials else "stopped"
    _set_status(folder, status)
    report(
        StudyEvent(
            "done" if status == "done" else "stopped",
            f"{finished()} of {config.trials} trials finished",
            min(1.0, finished() / max(config.trials, 1)),
        )
    )
    return study


def _open_or_create(folder: Path, config: SearchConfig | None, storage: str | None) -> SearchConfig:
    if (folder / SEARCH).is_file():
        state = json.loads((folder / SEARCH).read_text())
        stored = SearchConfig.from_dict(state["config"])
        if config is not None and config.as_dict() != stored.as_dict():
            trials_only = {**config.as_dict(), "trials": stored.trials} == stored.as_dict()
            if not trials_only:
                raise StudyError(
                    f"{folder} holds a search with other settings; choose another name or delete it"
                )
            state["config"] = config.as_dict()  # asking for more (or fewer) trials is allowed
            atomic.write_json(folder / SEARCH, state)
            return config
        return stored
    if config is None:
        raise StudyError(f"no search in {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_json(
        folder / SEARCH,
        {
            "config": config.as_dict(),
            "status": "created",
            "storage": hide_password(storage) if storage else None,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )
    return config


def _set_status(folder: Path, status: str) -> None:
    state = json.loads((folder / SEARCH).read_text())
    state["status"], state["updated"] = status, time.strftime("%Y-%m-%dT%H:%M:%S")
    atomic.write_json(folder / SEARCH, state)


# ---------------------------------------------------------------------------------- reading


@dataclass
class SearchView:
    folder: Path
    config: SearchConfig
    state: dict

    @property
    def name(self) -> str:
        return self.folder.name

    def study(self, storage: str | None = None):
        """The Optuna study, from ``storage``, else the one the search was made with, else ``optuna.db``."""
        import optuna

        url = storage or self.state.get("storage") or default_storage(self.folder)
        if "***" in url:
            raise StudyError(f"the search's storage {url} needs its password: pass the full URL")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return optuna.load_study(study_name=STUDY_NAME, storage=url)


def load_search(folder: str | Path) -> SearchView:
    folder = Path(folder)
    if not (folder / SEARCH).is_file():
        raise StudyError(f"{folder} is not a search folder (no {SEARCH})")
    state = json.loads((folder / SEARCH).read_text())
    return SearchView(folder, SearchConfig.from_dict(state["config"]), state)


def list_searches(root: str | Path | None = None) -> list[SearchView]:
    from .ablation import studies_root

    root = Path(root) if root is not None else studies_root()
    if not root.is_dir():
        return []
    found = [load_search(p) for p in root.iterdir() if (p / SEARCH).is_file()]
    return sorted(found, key=lambda s: (s.folder / SEARCH).stat().st_mtime, reverse=True)


def best_config(view: SearchView, study=None) -> DistillConfig:
    """The best trial's values on top of the base configuration, trained on every training image
    (nothing held out) and evaluated on the test split: the student to keep."""
    study = study or view.study()
    base = view.config.base_config()
    params = dict(study.best_trial.params)
    params["lr"] = base.lr * params.pop("lr_factor")
    return DistillConfig(**{**asdict(base), **params, "holdout": 0})


def figures(study) -> dict:
    """Optuna's own Plotly figures of the study: history, importances, parallel coordinates, learning curves.

    A figure that needs more finished trials than there are is left out.
    """
    import optuna.visualization as vis

    out = {}
    for title, make in (
        ("Optimisation history", vis.plot_optimization_history),
        ("Hyperparameter importances", vis.plot_param_importances),
        ("Parallel coordinates", vis.plot_parallel_coordinate),
        ("Validation accuracy per epoch (pruned trials stop early)", vis.plot_intermediate_values),
    ):
        try:
            out[title] = make(study)
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue
    return out


def train_best(
    view: SearchView,
    name: str,
    run_dir: str | Path,
    *,
    epochs: int | None = None,
    data: Dataset | None = None,
    callback: Callable[[TrainEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str = "cpu",
):
    """Distil a student with the best trial's hyperparameters into ``run_dir`` (a workspace run)."""
    cfg = best_config(view)
    if epochs:
        cfg.epochs = epochs
    prepared = prepare_inputs(
        view.folder, view.config.base, data=data, should_stop=should_stop, device=device
    )
    if prepared is None:
        return None
    teacher, _, train_data, store = prepared
    cfg.teacher = str(teacher.path)
    cfg.ig_cache = str(store.folder) if store is not None else ""
    request = DistillRequest(
        name=name,
        arch=view.config.base.student,
        dataset=view.config.base.dataset,
        arch_kwargs=dict(view.config.base.student_kwargs),
        config=cfg,
    )
    return distill_run(
        request,
        teacher,
        train_data,
        run_dir,
        store=store,
        callback=callback,
        should_stop=should_stop,
        device=device,
    )
