"""Architectures of torchvision and timm by name: ``torchvision:resnet18``, ``timm:mobilenetv3_small_100``.

The registry resolves these names here instead of registering the libraries' thousands of models
one by one: :func:`library_spec` checks that the library knows the name and returns a
:class:`~kdviz.models.registry.ModelSpec` that builds it with ``num_classes`` set, so a card's
architecture string rebuilds the model on load like any registered one. Weights are never
downloaded here (see :mod:`kdviz.models.pretrained`).
"""

from __future__ import annotations

import difflib
import functools
import inspect
from typing import Any

from torch import nn

#: the libraries whose models ``LIBRARY:NAME`` names, in the order the pages list them
LIBRARIES = ("torchvision", "timm")


def split_name(arch: str) -> tuple[str, str] | None:
    """``("timm", "resnet18")`` for ``"timm:resnet18"``; None for a registered (kdviz) name."""
    library, sep, name = arch.partition(":")
    if not sep or library not in LIBRARIES:
        return None
    return library, name


def is_library_name(arch: str) -> bool:
    return split_name(arch) is not None


@functools.lru_cache(maxsize=2)
def library_names(library: str) -> tuple[str, ...]:
    """Every classification model name of ``library`` (torchvision's 80, timm's ~1,400), sorted."""
    if library == "torchvision":
        import torchvision.models as tvm

        return tuple(sorted(tvm.list_models(module=tvm)))
    if library == "timm":
        import timm

        return tuple(sorted(timm.list_models()))
    raise ValueError(f"unknown library {library!r}; kdviz knows {', '.join(LIBRARIES)}")


def search(query: str = "", limit: int = 50, libraries: tuple[str, ...] = LIBRARIES) -> list[str]:
    """Architecture strings (``LIBRARY:NAME``) whose name contains every word of ``query``.

    What the pages' search box shows: names that start with the query first, then the rest, each
    group in alphabetical order.
    """
    words = query.lower().replace(":", " ").split()
    words = [w for w in words if w not in LIBRARIES] or [""]
    wanted = [lib for lib in libraries if lib in query.lower()] or list(libraries)
    hits = [f"{lib}:{n}" for lib in wanted for n in library_names(lib) if all(w in n.lower() for w in words)]
    first = words[0]
    hits.sort(key=lambda a: (not a.partition(":")[2].lower().startswith(first), a))
    return hits[:limit]


def _known(library: str, name: str) -> bool:
    if library == "timm":
        import timm

        return bool(name) and timm.is_model(name)
    return name in library_names(library)


def build(library: str, name: str, num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """The library's model ``name`` with a ``num_classes``-way head and random weights."""
    if library == "torchvision":
        import torchvision.models as tvm

        return tvm.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    import timm

    return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)


def constructor_arguments(library: str, name: str) -> dict:
    """The keyword arguments the model's class takes (``width_mult`` of torchvision's MobileNet-V2...):
    what a page may offer; empty where the library does not say (timm's generated models)."""
    if library != "torchvision":
        return {}
    import torchvision.models as tvm

    cls = inspect.signature(tvm.get_model_builder(name)).return_annotation
    if not inspect.isclass(cls):
        return {}
    params = inspect.signature(cls.__init__).parameters
    skip = {"self", "num_classes", "args", "kwargs", "block", "layers", "norm_layer"}
    return {
        k: (None if v.default is inspect.Parameter.empty else v.default)
        for k, v in params.items()
        if k not in skip and v.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    }


def describe(library: str, name: str) -> str:
    if library == "timm":
        return f"timm's {name} (ImageNet architecture, head set for the data set)"
    return f"torchvision's {name} (ImageNet architecture, head set for the data set)"


def library_spec(arch: str):
    """The :class:`ModelSpec` of ``LIBRARY:NAME``, or UnknownModelError naming near matches."""
    from .registry import ModelSpec, UnknownModelError

    parts = split_name(arch)
    if parts is None:
        raise UnknownModelError(f"{arch!r} is not a torchvision: or timm: name")
    library, name = parts
    if not _known(library, name):
        near = difflib.get_close_matches(name, library_names(library), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(f'{library}:{n}' for n in near)}?" if near else ""
        raise UnknownModelError(f"{library} has no classification model {name!r}{hint}")
    return ModelSpec(
        arch,
        functools.partial(build, library, name),
        library,
        describe(library, name),
        library=library,
    )


def classifier_head(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The classification head (its module path and module): replaced for the data set's classes and
    trained from scratch by the fine-tuning recipe.

    timm models name it (``get_classifier``); otherwise it is the last ``Linear`` layer, or, in
    a fully convolutional classifier (SqueezeNet), the last 1×1 convolution.
    """
    get = getattr(model, "get_classifier", None)
    if callable(get):
        head = get()
        for path, module in model.named_modules():
            if module is head and path and any(True for _ in head.parameters()):
                return path, module
    linears = [(p, m) for p, m in model.named_modules() if isinstance(m, nn.Linear)]
    if linears:
        return linears[-1]
    convs = [(p, m) for p, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    return convs[-1] if convs else None
