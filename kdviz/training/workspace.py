"""The workspace: one folder per run (card, weights, history, resume state), and the shipped assets.

Run names are checked before they touch the disk: letters, digits, ``.``, ``_`` and ``-`` only, so a
name can never climb out of the workspace (``../x``, absolute paths, hidden files).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..core import atomic, settings
from ..core.lock import Holder, check_free, live_holder
from ..data.size import DEFAULT_IMAGE_SIZE, split_size
from ..models.checkpoints import CARD, RESUME, CheckpointError, ModelCard, checkpoint_problem, read_card

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
#: Folders of the workspace that are not runs: ablation studies and searches live in ``studies/``.
RESERVED = ("studies",)


class RunNameError(ValueError):
    pass


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not NAME_RE.match(name) or ".." in name:
        raise RunNameError(
            f"invalid run name {name!r}: use 1–80 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if name in RESERVED:
        raise RunNameError(
            f"{name!r} is reserved: the workspace keeps its studies there; choose another run name"
        )
    return name


@dataclass
class RunInfo:
    name: str
    path: Path
    card: ModelCard | None
    modified: float
    origin: str  # "workspace" or "assets"
    card_error: str | None = None  # why card.json could not be read, when it could not

    @property
    def problem(self) -> str | None:
        """Why this run cannot be used as a model (a broken card or weights), or None.

        A run without a card yet (training its first epoch, or stopped before one) is not broken.
        """
        problem = self.card_error or (checkpoint_problem(self.path) if self.card is not None else None)
        # the run's name is shown beside the reason: its folder need not be repeated
        return problem.replace(f"{self.path}: ", "").replace(f"{self.path}/", "") if problem else None

    @property
    def status(self) -> str:
        if self.problem:
            return "unusable"
        if self.card is None:
            return "resumable" if (self.path / RESUME).is_file() else "empty"
        metrics = self.card.metrics or {}
        if metrics.get("complete", True):
            return "complete"
        return f"stopped at epoch {metrics.get('epochs_done', '?')}/{metrics.get('epochs', '?')}"

    @property
    def label(self) -> str:
        return f"{self.name} · asset" if self.origin == "assets" else self.name


class Workspace:
    """Runs under ``root`` (``KDVIZ_HOME``, default ``./runs``): list, create, rename, delete."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).resolve() if root is not None else settings.home()

    def path(self, name: str) -> Path:
        path = (self.root / check_name(name)).resolve()
        if path.parent != self.root:
            raise RunNameError(f"run name {name!r} escapes the workspace")
        return path

    def exists(self, name: str) -> bool:
        return self.path(name).is_dir()

    def create(self, name: str, *, exist_ok: bool = False) -> Path:
        path = self.path(name)
        if path.exists() and not exist_ok:
            raise FileExistsError(f"a run named {name!r} exists already in {self.root}")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a full or read-only workspace: say which folder, and why
            raise (atomic.save_error(path, exc) or exc) from exc
        return path

    def unique_name(self, base: str) -> str:
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.") or "run"
        name, i = base, 2
        while self.path(name).exists():
            name, i = f"{base}-{i}", i + 1
        return name

    def list(self) -> list[RunInfo]:
        if not self.root.is_dir():
            return []
        runs = [
            _info(p, "workspace")
            for p in self.root.iterdir()
            if p.is_dir() and NAME_RE.match(p.name) and p.name not in RESERVED
        ]
        return sorted(runs, key=lambda r: r.modified, reverse=True)

    def get(self, name: str) -> RunInfo:
        path = self.path(name)
        if not path.is_dir():
            raise FileNotFoundError(f"no run named {name!r} in {self.root}")
        return _info(path, "workspace")

    def writer(self, name: str) -> Holder | None:
        """Who is writing run ``name`` now (training it, say), or None: from its writer lock."""
        return live_holder(self.path(name))

    def check_free(self, name: str) -> None:
        """Raise :class:`~kdviz.core.lock.LockHeld` if run ``name`` has a writer (before resuming it,
        renaming or deleting it)."""
        check_free(self.path(name))

    def rename(self, old: str, new: str) -> Path:
        src, dst = self.path(old), self.path(new)
        if not src.is_dir():
            raise FileNotFoundError(f"no run named {old!r}")
        self.check_free(old)
        if dst.exists():
            raise FileExistsError(f"a run named {new!r} exists already")
        src.rename(dst)
        card_file = dst / CARD
        if card_file.is_file():  # keep the card's name in step with the folder
            try:
                obj = json.loads(card_file.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                obj = None  # a broken card is moved as it is: renaming must not fail on it
            if isinstance(obj, dict):
                obj["name"] = new
                atomic.write_json(card_file, obj)
        return dst

    def delete(self, name: str) -> None:
        path = self.path(name)
        if not path.is_dir():
            raise FileNotFoundError(f"no run named {name!r}")
        self.check_free(name)
        shutil.rmtree(path)


def _info(path: Path, origin: str) -> RunInfo:
    card, error = None, None
    try:
        card = read_card(path) if (path / CARD).is_file() else None
    except CheckpointError as exc:
        error = str(exc)
    mtime = max((f.stat().st_mtime for f in path.iterdir()), default=path.stat().st_mtime)
    return RunInfo(path.name, path, card, mtime, origin, error)


def asset_models(assets: Path | None = None) -> list[RunInfo]:
    """The default checkpoints shipped in ``assets/`` (made by ``python -m kdviz make-assets``)."""
    assets = assets or settings.assets_dir()
    if not assets.is_dir():
        return []
    return [_info(p, "assets") for p in sorted(assets.iterdir()) if (p / CARD).is_file()]


def model_choices(workspace: Workspace, dataset_source: str | None = None) -> list[RunInfo]:
    """Checkpoints a person can pick: the workspace's runs, then the assets; for one data set if given.

    Broken ones are left out (see :func:`unusable_runs`), so no page is handed a model it cannot load.
    """
    items = [r for r in workspace.list() if r.card is not None] + asset_models()
    if dataset_source is not None:
        items = [r for r in items if r.card and same_dataset(r.card.dataset, dataset_source)]
    return [r for r in items if not r.problem]


def unusable_runs(workspace: Workspace, dataset_source: str | None = None) -> list[RunInfo]:
    """Runs that look like checkpoints but cannot be loaded, with the reason in ``problem``.

    A run whose card cannot be read is listed whatever the data set (its card cannot say which).
    """
    return [
        r
        for r in workspace.list() + asset_models()
        if r.problem
        and (dataset_source is None or r.card is None or same_dataset(r.card.dataset, dataset_source))
    ]


def same_dataset(card_source: str, source: str) -> bool:
    """``cifar10`` matches ``cifar10:/any/path``: the card records where, the choice says what. The
    image size must agree too (``cifar10@96`` is another data set than ``cifar10``)."""

    def key(s: str) -> tuple[str, int]:
        base, size = split_size(s or "")
        return ("cifar10" if base.startswith("cifar10") else base), size or DEFAULT_IMAGE_SIZE

    return key(card_source) == key(source)


def now() -> str:
    return time.strftime("%Y%m%d-%H%M%S")
