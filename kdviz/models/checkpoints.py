"""Checkpoints: safetensors weights plus a JSON card that says everything needed to use them.

:func:`load_model` is the one way from weights to a model ready to use. A kdviz checkpoint is a
folder (or a ``NAME.safetensors`` with ``NAME.json`` beside it) holding ``model.safetensors`` and
``card.json``; loading reads the card and rebuilds the named architecture with its arguments: it
never guesses.

Foreign files (:data:`FOREIGN_SUFFIXES`: safetensors or PyTorch pickles without a card) load into an
architecture the caller names, through ``torch.load(weights_only=True)`` or safetensors: a pickle
is never run. Prefixes such as ``module.`` are stripped; a file that does not fit fails with a
message naming the missing, unexpected and mis-shaped tensors. Their card is made by
:func:`make_card`, the one place a card is made.
"""

from __future__ import annotations

import functools
import json
import pickle
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..core import atomic
from ..core.version import __version__
from ..data.base import Dataset
from ..data.loader import normalize, to_float
from .fingerprint import model_fingerprint
from .registry import create_model, get_spec
from .stats import model_stats

V = TypeVar("V")  # tensors, or their shapes

WEIGHTS = "model.safetensors"
CARD = "card.json"
RESUME = "resume.safetensors"  # kdviz.training's resume state; a run stopped early may hold only this
#: the files from elsewhere kdviz reads (what an upload box offers): safetensors and PyTorch pickles
FOREIGN_SUFFIXES = (".safetensors", ".pt", ".pth", ".th")
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
    #: where a fine-tuned model's starting weights came from (kdviz.models.pretrained): source,
    #: weights, url or file, and the licence where the library states it; empty when trained from scratch
    pretrained: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def test_accuracy(self) -> float | None:
        """The plain test accuracy measured when it was trained; None where it never was."""
        return _metric(self.metrics, "test_accuracy")

    @property
    def test_accuracy_tta(self) -> float | None:
        """The test-time-augmented accuracy (the fast recipe's), a figure of its own beside the plain one."""
        return _metric(self.metrics, "test_accuracy_tta")

    @classmethod
    def from_json(cls, obj: dict) -> ModelCard:
        if not isinstance(obj, dict) or "arch" not in obj:
            raise CheckpointError("the card has no 'arch': it is not a kdviz model card")
        problem = _card_problem(obj)
        if problem:
            raise CheckpointError(f"the card is inconsistent: {problem}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in known})


def _metric(metrics: dict | None, key: str) -> float | None:
    """A number of the card's metrics; a card from a hand edit or an old version may lack it."""
    value = (metrics or {}).get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def make_card(
    arch: str,
    *,
    data: Dataset | None = None,
    model: nn.Module | None = None,
    arch_kwargs: dict | None = None,
    num_classes: int | None = None,
    **fields: Any,
) -> ModelCard:
    """The one way kdviz makes a card, for a run about to be trained and for a file from elsewhere.

    ``data`` gives what a model cannot know of itself: its classes and their names, the
    normalisation, the image size and the source that rebuilds the data set. ``model`` gives the
    statistics (parameters, size, MACs). ``fields`` sets the rest (``role``, ``name``, ``teacher``,
    ``train_config``, ``source_file``...).
    """
    known: dict[str, Any] = {}
    if data is not None:
        known.update(
            num_classes=data.num_classes,
            class_names=list(data.class_names),
            dataset=data.source,
            image_size=data.image_size,
            mean=list(data.mean),
            std=list(data.std),
        )
    if num_classes is not None:
        known["num_classes"] = num_classes
    card = ModelCard(arch=arch, arch_kwargs=dict(arch_kwargs or {}), **{**known, **fields})
    if model is not None:
        card.stats = model_stats(model, card.image_size).as_dict()
    return card


def _card_problem(obj: dict) -> str | None:
    """What makes a card unusable, in words; caught on reading so a page never indexes past a list."""

    def whole(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    def numbers(value) -> bool:
        return (
            isinstance(value, list)
            and bool(value)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        )

    if not isinstance(obj["arch"], str):
        return f"'arch' must be a name, not {obj['arch']!r}"
    if not isinstance(obj.get("arch_kwargs", {}), dict):
        return "'arch_kwargs' must be an object of keyword arguments"
    for key in ("num_classes", "image_size"):
        if key in obj and not whole(obj[key]):
            return f"'{key}' must be a positive whole number, not {obj[key]!r}"
    names = obj.get("class_names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return "'class_names' must be a list of names"
    mean, std = obj.get("mean", [0.5] * 3), obj.get("std", [0.5] * 3)
    if not numbers(mean) or not numbers(std) or len(mean) != len(std):
        return "'mean' and 'std' must be lists of numbers of one length (one per colour channel)"
    if any(v <= 0 for v in std):
        return "'std' must be positive"
    return None


@dataclass
class LoadedModel:
    """A model ready to use (eval mode), its card and where it was loaded from: what :func:`load_model`
    returns."""

    model: nn.Module
    card: ModelCard
    path: Path

    def preprocess(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 images (N, H, W, 3), or one (H, W, 3), as the normalised float batch this model takes:
        its card's normalisation, so every caller feeds it the same way."""
        batch = images[None] if images.ndim == 3 else images
        return normalize(to_float(batch), self.card.mean, self.card.std)

    @functools.cached_property
    def fingerprint(self) -> str:
        """The weights' hash (:func:`kdviz.models.model_fingerprint`) that keys every cache, computed once:
        a loaded model's weights are not changed afterwards (training makes a new checkpoint)."""
        return model_fingerprint(self.model)


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
        raise CheckpointError(
            f"{path} has no card.json: pass the architecture (--arch) to load it as a foreign file"
        )
    try:
        return ModelCard.from_json(json.loads(card_file.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{card_file} is not valid JSON ({exc})") from None
    except CheckpointError as exc:
        raise CheckpointError(f"{card_file}: {exc}") from None


def load_model(
    path: str | Path,
    arch: str | None = None,
    *,
    num_classes: int | None = None,
    data: Dataset | None = None,
    arch_kwargs: dict | None = None,
    map_location: str = "cpu",
) -> LoadedModel:
    """Any weights as a model ready to use, in eval mode: the one way kdviz loads a model.

    A kdviz checkpoint is rebuilt from its card, whatever ``arch`` says. Any other file is loaded
    into ``arch`` (with ``arch_kwargs``) and given a card by :func:`make_card`: a file from elsewhere
    knows neither its classes nor its normalisation, so they are ``data``'s when it is given, else
    ``num_classes`` (10 by default) and the card's defaults. With ``data``, weights made for another
    number of classes are refused.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no such file or folder: {path}")
    if card_path_for(path) is not None:
        loaded = _load_checkpoint(path, map_location)
    elif path.is_dir():
        raise CheckpointError(f"{path} is a folder without {CARD}: not a kdviz checkpoint")
    elif arch is None:
        raise CheckpointError(f"{path} has no card: name its architecture (--arch, e.g. resnet56)")
    else:
        if num_classes is None:
            num_classes = data.num_classes if data is not None else 10
        loaded = _load_foreign(path, arch, num_classes, arch_kwargs, data, map_location)
    if data is not None and loaded.card.num_classes != data.num_classes:
        raise CheckpointError(
            f"{path} predicts {loaded.card.num_classes} classes but {data.name} has {data.num_classes}"
        )
    return loaded


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> LoadedModel:
    """The old name of :func:`load_model` for a kdviz checkpoint, kept until its last caller
    (``kdviz.training.assets``) moves."""
    return load_model(path, map_location=map_location)


def _load_checkpoint(path: Path, map_location: str) -> LoadedModel:
    """A kdviz checkpoint (folder or ``.safetensors`` with its card) rebuilt from its card."""
    card = read_card(path)
    weights = path / WEIGHTS if path.is_dir() else path
    model = _build_from_card(card, path)
    state = read_state_dict(weights)
    try:
        load_into(model, state, source=str(weights))
    except CheckpointError as exc:
        raise CheckpointError(
            f"the card does not match the weights{_saved_as(weights, card)}: {exc}"
        ) from None
    if problem := _names_problem(card):
        raise CheckpointError(f"{path}: {problem}")
    model.to(map_location).eval()
    return LoadedModel(model, card, path)


def _names_problem(card: ModelCard) -> str | None:
    """Too few names would break every label shown; checked after the weights, which say how many
    classes there really are."""
    if card.class_names and len(card.class_names) < card.num_classes:
        return f"the card lists {len(card.class_names)} class names for {card.num_classes} classes"
    return None


def _build_from_card(card: ModelCard, path: Path, *, device: str | None = None) -> nn.Module:
    """The card's architecture with its arguments, or a CheckpointError naming what the card got wrong."""
    try:
        get_spec(card.arch)
    except KeyError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    try:
        with torch.device(device) if device else _no_context():
            return create_model(card.arch, num_classes=card.num_classes, **card.arch_kwargs)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: the card's architecture cannot be built ({card.arch} {card.arch_kwargs}: {exc})"
        ) from None


class _no_context:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _saved_as(weights: Path, card: ModelCard) -> str:
    """' (the weights were saved from X)' when the file's own metadata names another architecture."""
    if weights.suffix != ".safetensors":
        return ""
    try:
        from safetensors import safe_open

        with safe_open(str(weights), "pt") as fh:
            arch = (fh.metadata() or {}).get("arch")
    except Exception:  # noqa: BLE001 - a hint only
        return ""
    return (
        f" (the weights were saved from {arch}, the card says {card.arch})"
        if arch and arch != card.arch
        else ""
    )


def checkpoint_problem(path: str | Path) -> str | None:
    """Why the checkpoint at ``path`` cannot be loaded, or None: checked without reading the weights.

    The card is read and checked, the architecture built on the ``meta`` device (no memory) and the
    safetensors header (names, shapes, length) compared with it, so listing a workspace of large
    models stays quick. Answers are remembered per file version.
    """
    path = Path(path)
    weights = path / WEIGHTS if path.is_dir() else path
    card_file = card_path_for(path)
    stamps = tuple(_stamp(f) for f in (weights, card_file) if f is not None)
    return _checkpoint_problem(str(path), stamps)


def _stamp(file: Path) -> tuple[int, int]:
    try:
        st = file.stat()
        return st.st_mtime_ns, st.st_size
    except OSError:
        return 0, -1


@functools.lru_cache(maxsize=512)
def _checkpoint_problem(path_text: str, stamps: tuple) -> str | None:
    path = Path(path_text)
    try:
        card = read_card(path)
        weights = path / WEIGHTS if path.is_dir() else path
        if not weights.is_file():
            return f"{weights.name} is missing"
        if weights.stat().st_size == 0:
            return f"{weights.name} is empty"
        model = _build_from_card(card, path, device="meta")
        from safetensors import safe_open

        try:
            with safe_open(str(weights), "pt") as fh:
                shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
        except Exception as exc:  # noqa: BLE001 - any header error means the same: unreadable
            return f"{weights.name} is truncated or not a safetensors file ({exc})"
        problem = misfit(model, shapes, source=weights.name)
        if problem:
            return f"the card does not match the weights{_saved_as(weights, card)}: {problem}"
        return _names_problem(card)
    except CheckpointError as exc:
        return str(exc)


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
            raise CheckpointError(
                f"{path} is truncated or damaged: not a readable safetensors file ({exc})"
            ) from None
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


def strip_prefixes(state: dict[str, V], expected: set[str]) -> dict[str, V]:
    """Remove wrapper prefixes (``module.`` from DataParallel, ``_orig_mod.`` from compile...)."""
    changed = True
    while changed and not set(state) <= expected:
        changed = False
        for prefix in STRIP_PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def load_into(model: nn.Module, state: dict[str, torch.Tensor], *, source: str = "the file") -> None:
    """Copy ``state`` into ``model`` or raise one message naming every tensor that does not fit."""
    state = strip_prefixes(state, set(model.state_dict()))
    problem = misfit(model, {k: tuple(v.shape) for k, v in state.items()}, source=source)
    if problem:
        raise CheckpointError(problem)
    model.load_state_dict(state, strict=False)


def misfit(model: nn.Module, shapes: dict[str, tuple], *, source: str = "the file") -> str | None:
    """Why tensors of these names and shapes do not fit ``model`` (None if they do).

    The message starts with the likely cause (another class count, another architecture) and then
    names the missing, unexpected and mis-shaped tensors.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    shapes = strip_prefixes(shapes, set(expected))
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in set(shapes) & set(expected) if shapes[k] != expected[k])
    misshaped = [f"{k} (file {shapes[k]}, model {expected[k]})" for k in wrong]
    # BatchNorm's num_batches_tracked is bookkeeping; older files lack it
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if not (missing or unexpected or misshaped):
        return None
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if items:
            shown = ", ".join(items[:6]) + (f" and {len(items) - 6} more" if len(items) > 6 else "")
            parts.append(f"{len(items)} {label}: {shown}")
    cause = _likely_cause(model, expected, shapes, missing, wrong)
    return f"{source} does not fit {type(model).__name__}{cause}: " + "; ".join(parts)


def _likely_cause(model: nn.Module, expected: dict, shapes: dict, missing: list, wrong: list) -> str:
    """', made for 100 classes, not 10' or ', another architecture (...)': the cause in words."""
    head = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    head_keys = {f"{head[-1]}.weight", f"{head[-1]}.bias"} if head else set()
    if wrong and not missing and set(wrong) <= head_keys:
        key = f"{head[-1]}.weight" if f"{head[-1]}.weight" in wrong else wrong[0]
        return f" (it was made for {shapes[key][0]} classes, the model has {expected[key][0]})"
    matching = sum(1 for k, v in shapes.items() if expected.get(k) == v)
    if matching < len(expected) / 2:
        return (
            f" (another architecture or size: {matching} of the model's {len(expected)} tensors "
            "match the file)"
        )
    return ""


def _load_foreign(
    path: Path,
    arch: str,
    num_classes: int,
    arch_kwargs: dict | None,
    data: Dataset | None,
    map_location: str,
) -> LoadedModel:
    """A file without a card, loaded into the named architecture; its card says what is known."""
    try:
        get_spec(arch)
    except KeyError as exc:
        raise CheckpointError(str(exc)) from None
    model = create_model(arch, num_classes=num_classes, **(arch_kwargs or {}))
    load_into(model, read_state_dict(path), source=str(path))
    model.to(map_location).eval()
    card = make_card(
        arch,
        data=data,
        arch_kwargs=arch_kwargs,
        num_classes=num_classes,
        name=path.stem,
        source_file=str(path),
    )
    return LoadedModel(model, card, path)
