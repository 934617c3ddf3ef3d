"""Checkpoints: safetensors weights plus a JSON card that says everything needed to use them.

A kdviz checkpoint is a folder (or a ``NAME.safetensors`` with ``NAME.json`` beside it) holding
``model.safetensors`` and ``card.json``. Loading reads the card and rebuilds the named architecture
with its arguments: it never guesses.

Foreign files (``.pt``, ``.pth``, ``.th``, ``.safetensors`` without a card) load into an architecture
the caller names, through ``torch.load(weights_only=True)`` or safetensors: a pickle is never run.
Prefixes such as ``module.`` are stripped; a file that does not fit fails with a message naming the
missing, unexpected and mis-shaped tensors.
"""

from __future__ import annotations

import json
import pickle
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from . import __version__, atomic
from .models import create_model, get_spec, model_stats

WEIGHTS = "model.safetensors"
CARD = "card.json"
RESUME = "resume.safetensors"  # kdviz.train's resume state; a run stopped early may hold only this
FOREIGN_SUFFIXES = (".pt", ".pth", ".th", ".bin", ".ckpt", ".safetensors")
STRIP_PREFIXES = ("module.", "model.", "_orig_mod.", "net.")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message says which file and what is wrong."""


@dataclass
class ModelCard:
    """What a checkpoint is: enough to rebuild, normalise, label and judge it."""

    arch: str
    arch_kwargs: dict = field(default_factory=dict)
    num_classes: int = 10
    class_names: list[str] = field(default_factory=list)
    dataset: str = ""  # the source string that rebuilds the data set (see kdviz.data.load_dataset)
    image_size: int = 32
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    role: str = "model"  # "teacher", "student" or "model"
    teacher: str | None = None  # the run or file it was distilled from
    metrics: dict = field(default_factory=dict)
    train_config: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)  # params, size_bytes, macs
    name: str = ""
    created: str = ""
    kdviz_version: str = __version__
    source_file: str | None = None  # for a foreign file: where the weights came from

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> "ModelCard":
        if not isinstance(obj, dict) or "arch" not in obj:
            raise CheckpointError("the card has no 'arch': it is not a kdviz model card")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in known})


@dataclass
class LoadedModel:
    model: nn.Module
    card: ModelCard
    path: Path


# ----------------------------------------------------------------------------------- writing


def save_checkpoint(directory: str | Path, model: nn.Module, card: ModelCard) -> Path:
    """Write ``model.safetensors`` and ``card.json`` into ``directory``, each atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if not card.stats:
        card.stats = model_stats(model, card.image_size).as_dict()
    card.created = card.created or time.strftime("%Y-%m-%dT%H:%M:%S")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic.atomic_path(directory / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"arch": card.arch, "kdviz": __version__})
    atomic.write_json(directory / CARD, card.to_json())
    return directory


# ----------------------------------------------------------------------------------- reading


def card_path_for(path: Path) -> Path | None:
    """The card that belongs to ``path``: ``DIR/card.json`` or ``NAME.json`` beside ``NAME.safetensors``."""
    if path.is_dir():
        return path / CARD if (path / CARD).is_file() else None
    for candidate in (path.with_suffix(".json"), path.parent / CARD):
        if candidate.is_file() and path.suffix == ".safetensors":
            return candidate
    return None


def read_card(path: str | Path) -> ModelCard:
    path = Path(path)
    card_file = card_path_for(path)
    if card_file is None:
        raise CheckpointError(f"{path} has no card.json: pass the architecture (--arch) to load it as a foreign file")
    try:
        return ModelCard.from_json(json.loads(card_file.read_text()))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{card_file} is not valid JSON ({exc})") from None


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> LoadedModel:
    """Load a kdviz checkpoint (folder or ``.safetensors`` with its card), eval mode."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no such checkpoint: {path}")
    card = read_card(path)
    weights = path / WEIGHTS if path.is_dir() else path
    try:
        get_spec(card.arch)
    except KeyError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    model = create_model(card.arch, num_classes=card.num_classes, **card.arch_kwargs)
    state = read_state_dict(weights)
    load_into(model, state, source=str(weights))
    model.to(map_location).eval()
    return LoadedModel(model, card, path)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a file, safely: safetensors, or a pickle read with ``weights_only=True``.

    Wrapping dicts (``state_dict``, ``model``, ``net``, ``weights``) are unwrapped; non-tensor
    entries (epoch, accuracy) are dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty")
    if _looks_like_safetensors(path):
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unpickling refused"
        raise CheckpointError(
            f"{path} was refused: it holds Python objects other than tensors, and kdviz never runs "
            f"the code a pickle may carry ({first})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - zip/EOF/format errors all mean the same to a person
        raise CheckpointError(f"{path} is not a readable PyTorch or safetensors checkpoint ({exc})") from None
    return _unwrap(obj, path)


def _looks_like_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as fh:
        head = fh.read(9)
    # safetensors starts with an 8-byte little-endian header length and then "{"
    return len(head) == 9 and head[8:9] == b"{"


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            for key in ("state_dict", "model_state_dict", "model", "net", "weights", "params"):
                if isinstance(obj.get(key), dict):
                    obj = obj[key]
                    break
            else:
                break
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a dict of tensors")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f"{path} holds no tensors (keys: {', '.join(list(obj)[:8])})")
    return state


def strip_prefixes(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes (``module.`` from DataParallel, ``_orig_mod.`` from compile...)."""
    changed = True
    while changed and not set(state) <= expected:
        changed = False
        for prefix in STRIP_PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def load_into(model: nn.Module, state: dict[str, torch.Tensor], *, source: str = "the file") -> None:
    """Copy ``state`` into ``model`` or raise one message naming every tensor that does not fit."""
    expected = model.state_dict()
    state = strip_prefixes(state, set(expected))
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    # BatchNorm's num_batches_tracked is bookkeeping; older files lack it
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected or misshaped:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                shown = ", ".join(items[:6]) + (f" and {len(items) - 6} more" if len(items) > 6 else "")
                parts.append(f"{len(items)} {label}: {shown}")
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state, strict=False)


def load_foreign(
    path: str | Path,
    arch: str,
    *,
    num_classes: int = 10,
    arch_kwargs: dict | None = None,
    card_defaults: dict | None = None,
) -> LoadedModel:
    """A file without a card, loaded into the named architecture; a card is made from what is known."""
    path = Path(path)
    try:
        get_spec(arch)
    except KeyError as exc:
        raise CheckpointError(str(exc)) from None
    model = create_model(arch, num_classes=num_classes, **(arch_kwargs or {}))
    load_into(model, read_state_dict(path), source=str(path))
    model.eval()
    card = ModelCard(arch=arch, arch_kwargs=dict(arch_kwargs or {}), num_classes=num_classes,
                     name=path.stem, source_file=str(path), **(card_defaults or {}))
    return LoadedModel(model, card, path)


def load_any(path: str | Path, arch: str | None = None, **foreign: Any) -> LoadedModel:
    """A kdviz checkpoint when it has a card, else a foreign file loaded into ``arch``."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no such file or folder: {path}")
    if card_path_for(path) is not None:
        return load_checkpoint(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder without {CARD}: not a kdviz checkpoint")
    if arch is None:
        raise CheckpointError(f"{path} has no card: name its architecture (--arch, e.g. resnet56)")
    return load_foreign(path, arch, **foreign)
