"""Where kdviz reads and writes, in one place, each overridable by an environment variable."""

from __future__ import annotations

import os
from pathlib import Path

#: The project's root (the folder holding ``app.py``): ``assets/`` and the ``../shared`` default hang off it.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def home() -> Path:
    """The workspace: one folder per run. ``KDVIZ_HOME``, default ``./runs``."""
    return Path(os.environ.get("KDVIZ_HOME", "runs")).expanduser().resolve()


def data_root() -> Path:
    """Where data sets such as CIFAR-10 are looked for.

    ``KDVIZ_DATA`` when set; otherwise ``../shared/data`` beside the project when it exists
    (the layout of this project's machines); otherwise ``~/.kdviz/data`` (where downloads go).
    """
    env = os.environ.get("KDVIZ_DATA")
    if env:
        return Path(env).expanduser().resolve()
    shared = PROJECT_ROOT.parent / "shared" / "data"
    if shared.is_dir():
        return shared
    return Path("~/.kdviz/data").expanduser()


def cache_dir() -> Path:
    """Decoded-image arrays and other derived files. ``KDVIZ_CACHE``, default ``~/.cache/kdviz``."""
    env = os.environ.get("KDVIZ_CACHE")
    return Path(env).expanduser().resolve() if env else Path("~/.cache/kdviz").expanduser()


def assets_dir() -> Path:
    """Small files shipped with the project: the default checkpoints for the built-in data set."""
    return PROJECT_ROOT / "assets"


def results_dir() -> Path:
    """Committed study summaries (small JSON/CSV, no weights): ``KDVIZ_RESULTS``, default ``docs/results``."""
    env = os.environ.get("KDVIZ_RESULTS")
    return Path(env).expanduser().resolve() if env else PROJECT_ROOT / "docs" / "results"


def default_data() -> str:
    """What the dashboard opens on: ``KDVIZ_DEFAULT_DATA`` (``cifar10`` or ``digits``), default CIFAR-10.

    CIFAR-10, because its shipped models judge natural photos: a new user's cat photo meets a model
    that knows cats, with or without the CIFAR-10 images on the machine.
    """
    value = os.environ.get("KDVIZ_DEFAULT_DATA", "cifar10")
    return value if value in ("cifar10", "digits") else "cifar10"


def device() -> str:
    """``KDVIZ_DEVICE`` when set; CUDA where present; the CPU otherwise."""
    env = os.environ.get("KDVIZ_DEVICE")
    if env:
        return env
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def unwritable() -> list[tuple[str, Path, str]]:
    """The folders kdviz saves to that it cannot write now: (``"workspace"`` or ``"cache"``, folder,
    why). A page opens all the same and says what it cannot save."""
    out = []
    for what, folder in (("workspace", home()), ("cache", cache_dir())):
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent  # a folder not made yet is made in the nearest one that is
        if not os.access(existing, os.W_OK):
            read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
            out.append((what, folder, "read-only file system" if read_only else "no permission to write"))
    return out
