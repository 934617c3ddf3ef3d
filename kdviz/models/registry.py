"""A registry of architectures, built by name with keyword arguments (as in torchvision and timm).

A checkpoint records the name and the arguments, so loading rebuilds exactly the same network and
never guesses.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    family: str
    description: str
    defaults: dict = field(default_factory=dict)
    pretrained_file: str | None = None  # a file name under ../shared/data/pretrained, where one exists

    def signature(self) -> dict:
        """The builder's keyword arguments and their defaults (the CLI and the page list them)."""
        params = inspect.signature(self.builder).parameters
        return {k: (None if v.default is inspect.Parameter.empty else v.default) for k, v in params.items()}


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str, *, family: str, description: str, pretrained_file: str | None = None, **defaults
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: make ``builder(num_classes=..., **kwargs)`` buildable as ``create_model(name)``."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(name, builder, family, description, defaults, pretrained_file)
        return builder

    return wrap


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; this one reads as a sentence
        return str(self.args[0])


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown architecture {name!r}; registered: {', '.join(sorted(_REGISTRY))}"
        ) from None


def create_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """Build a registered architecture; unknown keyword arguments fail with the accepted ones named."""
    spec = get_spec(name)
    accepted = spec.signature()
    unknown = set(kwargs) - set(accepted)
    if unknown:
        raise TypeError(f"{name} does not take {sorted(unknown)}; it takes {sorted(accepted)}")
    args = {**spec.defaults, **kwargs}
    return spec.builder(num_classes=num_classes, **args)


def list_models(family: str | None = None) -> list[ModelSpec]:
    return [s for s in _REGISTRY.values() if family is None or s.family == family]
