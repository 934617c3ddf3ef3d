"""A registry of architectures, built by name with keyword arguments (as in torchvision and timm).

A checkpoint records the name and the arguments, so loading rebuilds exactly the same network and
never guesses.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from torch import nn

from ..core import settings

#: The folder of the data root (:func:`kdviz.core.settings.data_root`) that holds pretrained files.
PRETRAINED_DIR = "pretrained"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    family: str
    description: str
    defaults: dict = field(default_factory=dict)
    pretrained_file: str | None = None  # its file's name in PRETRAINED_DIR, where one exists
    library: str = ""  # "torchvision" or "timm" for a ``LIBRARY:NAME`` architecture (kdviz.models.library)

    def signature(self) -> dict:
        """The builder's keyword arguments and their defaults (the CLI and the page list them)."""
        if self.library:
            from .library import constructor_arguments

            return constructor_arguments(self.library, self.name.partition(":")[2])
        params = inspect.signature(self.builder).parameters
        return {k: (None if v.default is inspect.Parameter.empty else v.default) for k, v in params.items()}


_REGISTRY: dict[str, ModelSpec] = {}


Builder = Callable[..., nn.Module]


@overload
def register_model(builder: Builder, /) -> Builder: ...


@overload
def register_model(
    name: str | None = None,
    /,
    *,
    family: str = "",
    description: str = "",
    pretrained_file: str | None = None,
    **defaults: Any,
) -> Callable[[Builder], Builder]: ...


def register_model(
    name: str | Builder | None = None,
    /,
    *,
    family: str = "",
    description: str = "",
    pretrained_file: str | None = None,
    **defaults: Any,
) -> Builder | Callable[[Builder], Builder]:
    """Decorator: make ``builder(num_classes=..., **kwargs)`` buildable as ``create_model(builder.__name__)``.

    As in timm and torchvision, the function's name is the model's name, so ``grep "def resnet56"``
    finds it: ``@register_model`` alone, or ``@register_model(family=..., description=...)``. The
    family defaults to the defining module's name and the description to the docstring's first line.
    A name given first (``@register_model("name", ...)``, the older form) is still accepted.
    """
    if callable(name):
        return register_model()(name)

    def wrap(builder: Builder) -> Builder:
        key = name or builder.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is registered twice")
        doc = (builder.__doc__ or "").strip().splitlines()
        _REGISTRY[key] = ModelSpec(
            key,
            builder,
            family or builder.__module__.rpartition(".")[2],
            description or (doc[0] if doc else ""),
            defaults,
            pretrained_file,
        )
        return builder

    return wrap


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; this one reads as a sentence
        return str(self.args[0])


def get_spec(name: str) -> ModelSpec:
    """The registered architecture ``name``, or ``torchvision:NAME`` / ``timm:NAME`` resolved from the
    library (:mod:`kdviz.models.library`: any classification model of theirs, none registered here)."""
    from .library import is_library_name

    if is_library_name(name):
        return _library_spec(name)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown architecture {name!r}; registered: {', '.join(sorted(_REGISTRY))} "
            "(or any torchvision:NAME or timm:NAME)"
        ) from None


@functools.lru_cache(maxsize=256)
def _library_spec(name: str) -> ModelSpec:
    from .library import library_spec

    return library_spec(name)


def create_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """Build a registered architecture; unknown keyword arguments fail with the accepted ones named.

    A library's model (``timm:NAME``) takes what its class takes; the library itself names a wrong
    argument.
    """
    spec = get_spec(name)
    if spec.library:
        return spec.builder(num_classes=num_classes, **kwargs)
    accepted = spec.signature()
    unknown = set(kwargs) - set(accepted)
    if unknown:
        raise TypeError(f"{name} does not take {sorted(unknown)}; it takes {sorted(accepted)}")
    args = {**spec.defaults, **kwargs}
    return spec.builder(num_classes=num_classes, **args)


def list_models(family: str | None = None) -> list[ModelSpec]:
    return [s for s in _REGISTRY.values() if family is None or s.family == family]


def pretrained_path(name: str) -> Path:
    """Where the pretrained weights of architecture ``name`` are looked for: its registered file in the
    data root's ``pretrained/`` (``../shared/data/pretrained`` on this project's machines).

    The registry is the one place that knows the files; the path may not exist on a given machine.
    """
    spec = get_spec(name)
    if spec.pretrained_file is None:
        having = sorted(s.name for s in _REGISTRY.values() if s.pretrained_file)
        raise ValueError(f"{name} has no pretrained weights; these have: {', '.join(having)}")
    return settings.data_root() / PRETRAINED_DIR / spec.pretrained_file
