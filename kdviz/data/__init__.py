"""Data sets behind one interface: ``load_dataset(source)`` gives train and test splits, class
names, image size and normalisation, whatever the source. Beside them: a person's own image
(:mod:`.images`: any upload, read safely into the model's input) and sample photos (:mod:`.samples`).

Sources: ``digits`` (built in, offline), ``shapes`` (generated coloured shapes, offline),
``cifar10`` (searched under ``KDVIZ_DATA``; ``cifar10:PATH`` for a given place), or the path of any
image folder with ``train/<class>/`` and ``test/<class>/``. Each is read at a chosen image size
(``image_size``, or ``SOURCE@SIZE``; 32 by default): see :mod:`.size`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from .base import IMAGENET_MEAN, IMAGENET_STD, DataError, Dataset, ImageSplit, channel_stats
from .cifar import CLASSES as CIFAR10_CLASSES
from .cifar import find_cifar10, load_cifar10
from .digits import load_digits_dataset
from .folder import describe_folder, is_image_folder, list_classes, load_split
from .images import (
    FORMATS,
    MAX_BYTES,
    MAX_PIXELS,
    UPLOAD_TYPES,
    ImageError,
    LoadedImage,
    from_array,
    read_image,
)
from .samples import SAMPLES, load_sample, sample_names
from .size import (
    DEFAULT_IMAGE_SIZE,
    IMAGE_SIZES,
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    check_image_size,
    size_mismatch,
    source_size,
    split_size,
    with_size,
)
from .synthetic import load_shapes

__all__ = [
    "CIFAR10_CLASSES",
    "DEFAULT_IMAGE_SIZE",
    "IMAGE_SIZES",
    "MAX_IMAGE_SIZE",
    "MIN_IMAGE_SIZE",
    "FORMATS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MAX_BYTES",
    "MAX_PIXELS",
    "SAMPLES",
    "UPLOAD_TYPES",
    "DataError",
    "Dataset",
    "ImageError",
    "ImageSplit",
    "LoadedImage",
    "available_sources",
    "channel_stats",
    "check_image_size",
    "describe_folder",
    "find_cifar10",
    "from_array",
    "load_dataset",
    "load_image_folder",
    "load_sample",
    "load_shapes",
    "read_image",
    "sample_names",
    "size_mismatch",
    "source_size",
    "split_size",
    "with_size",
]


def load_dataset(
    source: str = "digits",
    *,
    image_size: int | None = None,
    download: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Dataset:
    """Build the data set named by ``source`` (see the module docstring), its images ``image_size``
    pixels square (default: the size ``source`` names as ``SOURCE@SIZE``, else 32). The result's
    ``source`` names the size too (:mod:`.size`). Raises :class:`DataError`."""
    base, named = split_size(source)
    if image_size is not None and named is not None and image_size != named:
        raise DataError(f"{source!r} names {named} px but image_size={image_size} was asked for")
    size = check_image_size(image_size or named or DEFAULT_IMAGE_SIZE)
    data = _load(base, size, download, progress)
    return replace(data, source=with_size(data.source, size))


def _load(source: str, size: int, download: bool, progress: Callable[[int, int], None] | None) -> Dataset:
    if source == "digits":
        return load_digits_dataset(size)
    if source == "shapes":
        return load_shapes(size)
    if source == "cifar10" or source.startswith("cifar10:"):
        path = Path(source.split(":", 1)[1]).expanduser() if ":" in source else None
        return load_cifar10(path, download=download, image_size=size, progress=progress)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(
            f"no data set named {source!r}: use 'digits', 'shapes', 'cifar10' or an image folder path"
        )
    if find_cifar10(path) is not None:  # CIFAR-10 folders and batches keep their standard names and stats
        return load_cifar10(path, image_size=size, progress=progress)
    if not is_image_folder(path):
        raise DataError(
            f"{path} is not an image folder: it needs train/<class>/ and test/<class>/ sub-folders"
        )
    return load_image_folder(path, image_size=size, progress=progress)


def load_image_folder(
    path: Path, *, image_size: int = DEFAULT_IMAGE_SIZE, progress: Callable[[int, int], None] | None = None
) -> Dataset:
    """Any folder of ``train/<class>/`` and ``test/<class>/`` images, read at ``image_size`` pixels
    square (each image resized, bilinear; decoded once into a memory-mapped cache per size)."""
    path = Path(path).resolve()
    classes = list_classes(path)
    train = load_split(path, "train", classes, image_size, progress=progress)
    test = load_split(path, "test", classes, image_size, progress=progress)
    mean, std = channel_stats(train.images)
    return Dataset(
        name=path.name,
        source=str(path),
        train=train,
        test=test,
        class_names=tuple(classes),
        mean=mean,
        std=std,
        description=f"image folder {path} ({len(classes)} classes, read at {image_size}×{image_size})",
    )


def available_sources() -> list[dict]:
    """The sources that can be loaded on this machine now, without a download."""
    out = [
        {"source": "digits", "name": "digits", "where": "built in (scikit-learn)"},
        {"source": "shapes", "name": "shapes", "where": "built in (generated at any --image-size)"},
    ]
    found = find_cifar10()
    if found is not None:
        out.append({"source": "cifar10", "name": "cifar10", "where": f"{found[0]}: {found[1]}"})
    return out
