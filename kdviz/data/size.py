"""The image size a data set is read at, and how a source string carries it.

A data set is read at one size (``load_dataset(source, image_size=96)``); the size is then part of
the data set's ``source`` as a suffix, ``SOURCE@96``, so that the one string written into a model
card, a training request or a study rebuilds the same images. 32 px, the size of CIFAR-10 and of
every run made before sizes were chosen, is written without a suffix: old cards and sources keep
their meaning.
"""

from __future__ import annotations

import re

from .base import DataError

DEFAULT_IMAGE_SIZE = 32
#: The sizes the sidebar offers (any size from MIN to MAX can be given on the command line).
IMAGE_SIZES = (32, 64, 96, 128, 160, 224)
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 512

_SUFFIX = re.compile(r"^(?P<base>.+)@(?P<size>\d+)$")


def check_image_size(size: int) -> int:
    """``size`` if kdviz can read images at it, else a :class:`DataError` saying the range."""
    if not isinstance(size, int) or isinstance(size, bool) or not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
        raise DataError(
            f"image size must be a whole number of pixels from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}, "
            f"not {size!r}"
        )
    return size


def split_size(source: str) -> tuple[str, int | None]:
    """``("folder", 96)`` for ``"folder@96"``; ``(source, None)`` when it names no size."""
    match = _SUFFIX.match(source.strip())
    if match is None:
        return source.strip(), None
    return match["base"], int(match["size"])


def with_size(source: str, image_size: int | None) -> str:
    """``source`` read at ``image_size`` (None keeps the size it names); 32 px has no suffix."""
    base, named = split_size(source)
    size = named if image_size is None else image_size
    return base if size in (None, DEFAULT_IMAGE_SIZE) else f"{base}@{size}"


def source_size(source: str) -> int:
    """The size a source string is read at (32 when it names none)."""
    return split_size(source)[1] or DEFAULT_IMAGE_SIZE


def size_mismatch(model_size: int, data_size: int) -> str | None:
    """What to tell a person whose model and data differ in size, or None when they agree."""
    if model_size == data_size:
        return None
    return (
        f"the model takes {model_size}×{model_size} images but the data set is read at "
        f"{data_size}×{data_size}"
    )
