"""Pretrained weights for a model about to be trained: the library's own download, or a local file.

Online, ``torchvision:NAME`` takes the weights of its enum's default (``ResNet18_Weights.DEFAULT``)
through torchvision's downloader, and ``timm:NAME`` takes ``pretrained=True`` through the Hugging
Face hub; both show their own progress bars. Offline, a file given by path (safetensors, or a state
dict read with ``weights_only=True``: never unpickled code) gives the same result. Either way the
classifier head is made anew for the data set's classes, and :func:`pretrained_model` says where
the weights came from (and their licence where the library states it) for the model's card.

A download that fails raises :class:`PretrainedError` with one message naming the file to fetch on
a machine that is online and pass by path instead.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .library import classifier_head, split_name
from .registry import create_model, get_spec, pretrained_path

#: what ``--pretrained`` takes for the library's own download (a path otherwise)
DOWNLOAD = "download"


class PretrainedError(Exception):
    """Weights that cannot be had or do not fit; the message says what to do instead."""


def pretrained_model(
    arch: str,
    num_classes: int,
    source: str = DOWNLOAD,
    *,
    arch_kwargs: dict | None = None,
    progress: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """``arch`` with a fresh ``num_classes``-way head and the rest of its weights from ``source``.

    ``source`` is :data:`DOWNLOAD` (the library's weights; a registered kdviz architecture's
    file in the data root's ``pretrained/``) or the path of a weights file. Returns the model and
    its provenance for the card: ``source``, ``weights``, ``url``, ``file``, ``license``, ``head``.
    """
    kwargs = dict(arch_kwargs or {})
    if source != DOWNLOAD:
        return _from_file(arch, num_classes, Path(source).expanduser(), kwargs)
    parts = split_name(arch)
    if parts is None:  # a registered architecture's pretrained file, where the registry names one
        try:
            file = pretrained_path(arch)
        except ValueError as exc:
            raise PretrainedError(str(exc)) from None
        if not file.is_file():
            raise PretrainedError(f"{arch}'s pretrained weights are not on this machine: provide {file}")
        return _from_file(arch, num_classes, file, kwargs)
    library, name = parts
    if library == "torchvision":
        return _torchvision(arch, name, num_classes, kwargs, progress)
    return _timm(arch, name, num_classes, kwargs)


def _from_file(arch: str, num_classes: int, file: Path, kwargs: dict) -> tuple[nn.Module, dict]:
    from .checkpoints import CheckpointError, read_state_dict

    get_spec(arch)
    try:
        state = read_state_dict(file)
    except CheckpointError as exc:
        raise PretrainedError(str(exc)) from None
    model = create_model(arch, num_classes=num_classes, **kwargs)
    head = load_backbone(model, state, source=str(file))
    provenance = {"source": "file", "file": str(file), "sha256": _sha256(file), "license": None, "head": head}
    return model, provenance


def _torchvision(
    arch: str, name: str, num_classes: int, kwargs: dict, progress: bool
) -> tuple[nn.Module, dict]:
    import torchvision.models as tvm

    try:
        weights = tvm.get_model_weights(name).DEFAULT
    except ValueError:
        raise PretrainedError(f"torchvision has no pretrained weights for {name}") from None
    try:
        state = weights.get_state_dict(progress=progress, check_hash=True)
    except Exception as exc:  # noqa: BLE001 - no network, a proxy, a cut download: the same advice
        raise PretrainedError(_offline_message(arch, weights.url, exc)) from None
    model = create_model(arch, num_classes=num_classes, **kwargs)
    head = load_backbone(model, state, source=weights.url)
    meta = weights.meta
    return model, {
        "source": "torchvision",
        "weights": f"{type(weights).__name__}.{weights.name}",
        "url": weights.url,
        "license": meta.get("license"),  # torchvision's weights meta states none today
        "recipe": meta.get("recipe"),
        "head": head,
    }


def _timm(arch: str, name: str, num_classes: int, kwargs: dict) -> tuple[nn.Module, dict]:
    import timm
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise PretrainedError(f"timm has no pretrained weights for {name}")
    hub_url = f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/model.safetensors"
    url = hub_url if cfg.hf_hub_id else str(cfg.url)
    try:
        model = timm.create_model(name, pretrained=True, num_classes=num_classes, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the hub's errors are many; the advice is one
        raise PretrainedError(_offline_message(arch, url, exc)) from None
    return model, {
        "source": "timm",
        "weights": cfg.hf_hub_id or name,
        "url": url,
        "license": cfg.license,
        "head": "replaced" if num_classes != cfg.num_classes else "kept",
    }


def _offline_message(arch: str, url: str | None, exc: BaseException) -> str:
    first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return (
        f"cannot download the pretrained weights of {arch} ({type(exc).__name__}: {first.strip()[:160]}); "
        f"offline, fetch {url} on a machine that is online and pass the file with --pretrained PATH"
    )


def load_backbone(model: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> str:
    """Copy ``state`` into ``model`` except a classifier head made for other classes; "replaced" or
    "kept" (a file made for the same classes keeps its head). Every other tensor must fit."""
    from .checkpoints import misfit, strip_prefixes

    expected = model.state_dict()
    state = strip_prefixes(state, set(expected))
    found = classifier_head(model)
    head_keys = {f"{found[0]}.{k}" for k in found[1].state_dict()} if found else set()
    replaced = any(k in state and tuple(state[k].shape) != tuple(expected[k].shape) for k in head_keys)
    replaced = replaced or any(k not in state for k in head_keys)
    if replaced:
        state = {k: v for k, v in state.items() if k not in head_keys}
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    shapes.update({k: tuple(expected[k].shape) for k in head_keys if k not in shapes})
    problem = misfit(model, shapes, source=source)
    if problem:
        raise PretrainedError(problem)
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    return "replaced" if replaced else "kept"


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
