"""Students derived from a teacher through the knob its library offers, with their measured compression.

A student of the teacher's own family is the natural first try: the same blocks, fewer or narrower.
Where a library has a width or depth knob it is used, and every candidate is built (on the ``meta``
device: no memory, no weights) and its parameters counted, so the compression shown is measured,
not the knob's nominal value:

- width: torchvision's MobileNet-V2 ``width_mult``, timm's width multipliers in the name
  (``mobilenetv3_large_100`` → ``_075``, ``_050``; ``efficientnet``, ``mobilenetv2``, ``ghostnet``...),
  kdviz's own ``width_mult`` architectures;
- size variants: MobileNet-V3 small against large (both libraries);
- depth: ResNet 152 → 101 → 50 → 34 → 18, EfficientNet B7 → B0, kdviz's CIFAR ResNets;
- kdviz's registered families (``airnet_student_4x``, ``mnv2_student_4x``...).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import torch

from .library import library_names, split_name
from .registry import create_model, get_spec, list_models
from .stats import count_params

#: the widths offered where the knob is a ``width_mult`` argument
WIDTHS = (0.75, 0.5, 0.35, 0.25)


@dataclass(frozen=True)
class DerivedStudent:
    arch: str
    arch_kwargs: dict
    knob: str  # "width", "depth", "size" or "family": what differs from the teacher
    params: int
    compression: float  # the teacher's parameters over the student's (measured)

    def as_dict(self) -> dict:
        return asdict(self)


def derived_students(
    teacher: str, teacher_kwargs: dict | None = None, *, ratio: float | None = None, num_classes: int = 10
) -> list[DerivedStudent]:
    """Smaller models of ``teacher``'s family, most compressed last; with ``ratio``, nearest to it
    first. Empty where the family has no knob kdviz knows."""
    get_spec(teacher)
    teacher_kwargs = dict(teacher_kwargs or {})
    base = _params(teacher, teacher_kwargs, num_classes)
    seen, found = set(), []
    for arch, kwargs, knob in _candidates(teacher, teacher_kwargs):
        key = (arch, tuple(sorted(kwargs.items())))
        if key in seen or (arch == teacher and kwargs == teacher_kwargs):
            continue
        seen.add(key)
        try:
            params = _params(arch, kwargs, num_classes)
        except Exception:  # noqa: BLE001 - a name the library lists but cannot build here: not offered
            continue
        if params < base:
            found.append(DerivedStudent(arch, kwargs, knob, params, base / params))
    found.sort(key=lambda s: s.compression)
    if ratio:
        found.sort(key=lambda s: abs(math.log(s.compression / ratio)))
    return found


def _params(arch: str, kwargs: dict, num_classes: int) -> int:
    with torch.device("meta"):
        return count_params(create_model(arch, num_classes=num_classes, **kwargs))


def _candidates(teacher: str, kwargs: dict):
    """(arch, kwargs, knob) of every model of the teacher's family, larger ones included (dropped later)."""
    spec = get_spec(teacher)
    if "width_mult" in spec.signature():
        current = float(kwargs.get("width_mult", spec.signature().get("width_mult") or 1.0))
        for w in WIDTHS:
            if w < current:
                yield teacher, {**kwargs, "width_mult": w}, "width"
    parts = split_name(teacher)
    if parts is None:
        for other in list_models(spec.family):
            yield other.name, {}, "family"
        return
    library, name = parts
    names = library_names(library)
    base = name.split(".")[0]
    if m := re.fullmatch(r"(.+)_(\d{3})", base):  # timm's width multiplier in the name
        stem = m.group(1)
        for n in names:
            if re.fullmatch(re.escape(stem) + r"_\d{3}", n):
                yield f"{library}:{n}", {}, "width"
        if "large" in stem:
            small = stem.replace("large", "small")
            for n in names:
                if re.fullmatch(re.escape(small) + r"(_\d{3})?", n):
                    yield f"{library}:{n}", {}, "size"
    if "large" in base:
        small = base.replace("large", "small")
        if small in names:
            yield f"{library}:{small}", {}, "size"
    if m := re.fullmatch(r"(resnet|efficientnet_b|resnext|wide_resnet|densenet|vgg)(\d+)(.*)", base):
        stem, _, rest = m.groups()
        for n in names:
            if re.fullmatch(re.escape(stem) + r"\d+" + re.escape(rest), n):
                yield f"{library}:{n}", {}, "depth"


def nearest(
    teacher: str, ratio: float, teacher_kwargs: dict | None = None, num_classes: int = 10
) -> DerivedStudent:
    """The derived student whose measured compression is nearest ``ratio``; ValueError where none is."""
    found = derived_students(teacher, teacher_kwargs, ratio=ratio, num_classes=num_classes)
    if not found:
        raise ValueError(f"kdviz knows no width or depth knob of {teacher}: name the student's architecture")
    return found[0]
