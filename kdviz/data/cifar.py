"""CIFAR-10 from wherever it is: an image folder, torchvision's ``cifar-10-batches-py``, or a download.

Search order (first hit wins) under the data root (``KDVIZ_DATA``, see :mod:`kdviz.core.settings`):
``cifar10/`` as ``train/<class>/*.jpg`` + ``test/...``; ``cifar10/cifar-10-batches-py``;
``cifar-10-batches-py``. A path given explicitly is tried the same way. Only when ``download`` is
true does torchvision fetch the archive (with its progress bar) into the data root.

CIFAR-10 is 32×32; read at another size (``image_size``, for experiments with models of that size)
its images are resized with the same filter as an image folder's and cached memory-mapped.
"""

from __future__ import annotations

import hashlib
import pickle  # only for torchvision's own CIFAR batches, see _read_batch
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..core import settings
from . import arraycache
from .base import IMAGENET_MEAN, IMAGENET_STD, DataError, Dataset, ImageSplit
from .folder import is_image_folder, list_classes, load_split, resize_image

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
BATCHES = "cifar-10-batches-py"
NATIVE_SIZE = 32


def candidates(root: Path) -> list[Path]:
    """Where CIFAR-10 may lie under ``root``, in the order they are tried."""
    return [root, root / "cifar10", root / "cifar10" / BATCHES, root / BATCHES, root / "cifar-10"]


def find_cifar10(root: Path | None = None) -> tuple[str, Path] | None:
    """``("folder" | "batches", path)`` for the first CIFAR-10 found under ``root``, else None."""
    root = Path(root) if root is not None else settings.data_root()
    if root is None:
        return None
    for path in candidates(root):
        if path.name != BATCHES and is_image_folder(path) and list_classes(path) == list(CLASSES):
            return "folder", path
        if (path / "data_batch_1").is_file() and (path / "test_batch").is_file():
            return "batches", path
        if path.name != BATCHES and (path / BATCHES / "data_batch_1").is_file():
            return "batches", path / BATCHES
    return None


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    # The batches are pickles of plain dicts of numpy arrays written by the CIFAR authors. A pickle
    # can run code, so they are read with a restricted unpickler that refuses every global but
    # numpy's array reconstruction: a tampered file fails instead of running anything.
    try:
        with open(path, "rb") as fh:
            entry = _NumpyOnlyUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError) as exc:  # load_dataset's contract: DataError, naming the file
        raise DataError(f"cannot read CIFAR batch {path}: {exc}") from None
    data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64)
    return np.ascontiguousarray(data), labels


class _NumpyOnlyUnpickler(pickle.Unpickler):
    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        # newer pickle protocols spell arrays through these; both only rebuild bytes and arrays
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")


def _load_batches(path: Path) -> tuple[ImageSplit, ImageSplit]:
    parts = [_read_batch(path / f"data_batch_{i}") for i in range(1, 6)]
    train = ImageSplit(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    test = ImageSplit(*_read_batch(path / "test_batch"))
    return train, test


def _resized(where: Path, split: str, images: ImageSplit, image_size: int, progress) -> ImageSplit:
    """A batch split at another size (for experiments at a model's size), decoded once into the
    memory-mapped cache: 50,000 images at 224 px are 7.5 GB, which stay on disk."""
    files = [where / f"data_batch_{i}" for i in range(1, 6)] if split == "train" else [where / "test_batch"]
    h = hashlib.sha256(f"v1|{where.resolve()}|{split}|{image_size}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    cache = arraycache.cache_folder("cifar10", h.hexdigest()[:24])
    hit = arraycache.read_cached(cache, len(images), image_size)
    if hit is not None:
        return ImageSplit(*hit)
    pixels = arraycache.build_images(
        cache,
        images.labels,
        image_size,
        lambda i: resize_image(images.images[i], image_size),
        progress=progress,
        meta={"root": str(where), "split": split},
    )
    return ImageSplit(pixels, images.labels)


def download_cifar10(root: Path) -> Path:
    """Fetch the archive through torchvision (progress shown by torchvision) into ``root``."""
    from torchvision.datasets import CIFAR10

    root.mkdir(parents=True, exist_ok=True)
    CIFAR10(str(root), train=True, download=True)
    return root / BATCHES


def load_cifar10(
    path: Path | None = None,
    *,
    download: bool = False,
    image_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> Dataset:
    root = Path(path) if path is not None else settings.data_root()
    found = find_cifar10(root) if root is not None else None
    if found is None and download:
        if root is None:
            raise DataError("no data root: set KDVIZ_DATA to where CIFAR-10 should be downloaded")
        found = ("batches", download_cifar10(root))
    if found is None:
        looked = ", ".join(str(p) for p in candidates(root)) if root is not None else "(no data root)"
        raise DataError(
            "CIFAR-10 not found. Looked for train/<class>/ + test/<class>/ image folders or "
            f"{BATCHES} in: {looked}. Set KDVIZ_DATA (or the sidebar's data folder) to where it is, "
            "or download it with `python -m kdviz data cifar10 --download`."
        )
    kind, where = found
    if kind == "folder":
        train = load_split(where, "train", list(CLASSES), image_size, progress=progress)
        test = load_split(where, "test", list(CLASSES), image_size, progress=progress)
    else:
        train, test = _load_batches(where)
        if image_size != NATIVE_SIZE:
            train = _resized(where, "train", train, image_size, progress)
            test = _resized(where, "test", test, image_size, progress)
    size_note = "" if image_size == NATIVE_SIZE else f", upscaled from 32×32 to {image_size}×{image_size}"
    return Dataset(
        name="cifar10",
        source=f"cifar10:{where}",
        train=train,
        test=test,
        class_names=CLASSES,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        description=f"CIFAR-10 ({kind}: {where}{size_note})",
        extra={"kind": kind, "path": str(where)},
    )
