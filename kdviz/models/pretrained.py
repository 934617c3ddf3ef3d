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
import logging
import os
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .library import classifier_head, split_name
from .registry import create_model, get_spec, pretrained_path

#: what ``--pretrained`` takes for the library's own download (a path otherwise)
DOWNLOAD = "download"

#: told the bytes downloaded so far and the total (None where unknown)
ByteProgress = Callable[[int, "int | None"], None]


class PretrainedError(Exception):
    """Weights that cannot be had or do not fit; the message says what to do instead."""


def pretrained_model(
    arch: str,
    num_classes: int,
    source: str = DOWNLOAD,
    *,
    arch_kwargs: dict | None = None,
    progress: bool | ByteProgress = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """``arch`` with a fresh ``num_classes``-way head and the rest of its weights from ``source``.

    ``source`` is :data:`DOWNLOAD` (the library's weights; a registered kdviz architecture's
    file in the data root's ``pretrained/``) or the path of a weights file. Returns the model and
    its provenance for the card: ``source``, ``weights``, ``url``, ``file``, ``license``, ``head``.
    ``progress``: True shows the library's own bar on the terminal; a function is told the bytes
    downloaded so far and the total (None where the server does not say), for a page's bar.
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
    return _timm(arch, name, num_classes, kwargs, progress)


def _from_file(arch: str, num_classes: int, file: Path, kwargs: dict) -> tuple[nn.Module, dict]:
    from .checkpoints import CheckpointError, read_state_dict

    get_spec(arch)
    try:
        state = read_state_dict(file)
    except CheckpointError as exc:
        raise PretrainedError(str(exc)) from None
    model = create_model(arch, num_classes=num_classes, **kwargs)
    try:
        head = load_backbone(model, state, source=str(file))
    except PretrainedError:
        remapped = _timm_remapped(arch, num_classes, state, kwargs)
        if remapped is None:
            raise
        model, head = remapped
    provenance = {"source": "file", "file": str(file), "sha256": _sha256(file), "license": None, "head": head}
    return model, provenance


def _timm_remapped(arch: str, num_classes: int, state: dict, kwargs: dict) -> tuple[nn.Module, str] | None:
    """``timm:NAME`` from a file in another layout (a model's original release, torchvision's old
    keys): timm's own filter for that model renames the tensors and drops a head made for other
    classes. The tensors were read safely first; timm is handed the dict, never the file."""
    parts = split_name(arch)
    if parts is None or parts[0] != "timm":
        return None
    import timm
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(parts[1])
    builder_log = logging.getLogger("timm.models._builder")
    level = builder_log.level
    builder_log.setLevel(logging.ERROR)  # its "unexpected keys" notes; the check below decides
    try:
        model = timm.create_model(
            parts[1],
            pretrained=True,
            pretrained_cfg_overlay={"state_dict": dict(state), "source": ""},
            num_classes=num_classes,
            **kwargs,
        )
    except (RuntimeError, KeyError, ValueError, AssertionError):  # timm's filter could not fit it either
        return None
    finally:
        builder_log.setLevel(level)
    kept = cfg is not None and cfg.num_classes == num_classes
    if not _backbone_from(model, state, with_head=kept):  # timm loads a changed head non-strictly
        return None
    return model, "kept" if kept else "replaced"


def _backbone_from(model: nn.Module, state: dict[str, torch.Tensor], *, with_head: bool) -> bool:
    """Whether every tensor of ``model`` (its head aside, unless kept) holds values found in
    ``state``: a renamed or reshaped tensor keeps its size and sums, a tensor left at its random
    initialisation does not."""

    def fingerprint(t: torch.Tensor) -> tuple:
        t = t.detach().double()
        return t.numel(), round(float(t.sum()), 3), round(float(t.abs().sum()), 3)

    given = {fingerprint(v) for v in state.values() if v.is_floating_point()}
    found = classifier_head(model)
    head = f"{found[0]}." if found and not with_head else None
    own = [
        v
        for k, v in model.state_dict().items()
        if v.is_floating_point() and not (head and k.startswith(head))
    ]
    return bool(own) and all(fingerprint(v) in given for v in own)


def _torchvision(
    arch: str, name: str, num_classes: int, kwargs: dict, progress: bool | ByteProgress
) -> tuple[nn.Module, dict]:
    import torchvision.models as tvm

    try:
        weights = tvm.get_model_weights(name).DEFAULT
    except ValueError:
        raise PretrainedError(f"torchvision has no pretrained weights for {name}") from None
    try:
        if callable(progress):  # torch's downloader has a terminal bar only: fill its cache first
            _fetch_into_torch_cache(weights.url, progress)
        state = weights.get_state_dict(progress=progress is True, check_hash=True)
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


def _timm(
    arch: str, name: str, num_classes: int, kwargs: dict, progress: bool | ByteProgress
) -> tuple[nn.Module, dict]:
    import timm
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise PretrainedError(f"timm has no pretrained weights for {name}")
    hub_url = f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/model.safetensors"
    url = hub_url if cfg.hf_hub_id else str(cfg.url)
    try:
        if callable(progress) and cfg.hf_hub_id:  # the hub's download, into the cache timm reads
            _fetch_from_hub(cfg.hf_hub_id, progress)
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


def _fetch_into_torch_cache(url: str, progress: ByteProgress) -> Path:
    """``url`` into torch's checkpoint cache, where torchvision's own loader finds it; the hash
    prefix in the file's name is checked the way torch checks it, and the file appears whole."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    target = folder / Path(urllib.parse.urlparse(url).path).name
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    expected = torch.hub.HASH_REGEX.search(target.name)
    digest = hashlib.sha256()
    partial = folder / f".{target.name}.partial"
    with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        done = 0
        for block in iter(lambda: response.read(1 << 20), b""):
            out.write(block)
            digest.update(block)
            done += len(block)
            progress(done, total)
    if expected and not digest.hexdigest().startswith(expected.group(1)):
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"the download of {url} is damaged (its SHA-256 does not match the name)")
    os.replace(partial, target)
    return target


def _fetch_from_hub(hub_id: str, progress: ByteProgress) -> None:
    """The hub file timm will read (``model.safetensors``), downloaded into the hub's cache with
    the hub's own downloader, which reports to ``progress`` through a tqdm class."""
    from huggingface_hub import hf_hub_download
    from tqdm.auto import tqdm

    class Reporting(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True  # no terminal bar; the page draws its own
            super().__init__(*args, **kwargs)
            self._done = 0

        def update(self, n=1):
            self._done += n or 0
            progress(self._done, self.total or None)
            return super().update(n)

    repo, _, revision = hub_id.partition("@")
    hf_hub_download(repo, filename="model.safetensors", revision=revision or None, tqdm_class=Reporting)


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
