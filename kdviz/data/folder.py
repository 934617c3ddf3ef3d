"""Image-folder data sets (``train/<class>/*.jpg``, ``test/<class>/*.jpg``), decoded once and cached.

Decoding 60,000 small JPEGs takes a while on two cores; the decoded uint8 arrays are written to the
cache (``KDVIZ_CACHE``) under a key made of the folder, its file list, sizes and times and the image
size, so a second start reads one array instead, any change to the folder makes a new key, and each
size has its own entry. Entries are memory-mapped (:mod:`.arraycache`): a folder read at 224 px is
not held in RAM.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import arraycache
from .base import DataError, ImageSplit
from .images import UPLOAD_TYPES

IMAGE_SUFFIXES = {f".{ext}" for ext in UPLOAD_TYPES}
CACHE_VERSION = 2  # 2: memory-mapped entries written image by image

Progress = Callable[[int, int], None]


def is_image_folder(path: Path) -> bool:
    return (path / "train").is_dir() and (path / "test").is_dir()


def list_classes(root: Path) -> list[str]:
    """Class names are the sub-folders of ``train/``, sorted (torchvision's ImageFolder order)."""
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root / 'train'} holds no class folders (expected train/<class>/<image>)")
    return classes


def _list_files(split_dir: Path, classes: list[str]) -> list[tuple[Path, int]]:
    files: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            continue
        for f in sorted(class_dir.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                files.append((f, label))
    return files


def _cache_key(root: Path, split: str, files: list[tuple[Path, int]], image_size: int) -> str:
    h = hashlib.sha256()
    h.update(f"v{CACHE_VERSION}|{root.resolve()}|{split}|{image_size}".encode())
    for f, label in files:
        st = f.stat()
        h.update(f"{f.relative_to(root)}|{label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def resize_image(pixels: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 (H, W, 3) to (S, S, 3), bilinear (what an image folder and CIFAR-10 at another size use)."""
    from PIL import Image

    if pixels.shape[:2] == (image_size, image_size):
        return np.asarray(pixels, dtype=np.uint8)
    im = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    return np.asarray(im.resize((image_size, image_size), Image.Resampling.BILINEAR), dtype=np.uint8)


def decode_image(path: Path, image_size: int) -> np.ndarray:
    """One file to uint8 (S, S, 3): RGB, resized with bilinear filtering when its size differs."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB")
        if rgb.size != (image_size, image_size):
            rgb = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)


def load_split(
    root: Path,
    split: str,
    classes: list[str],
    image_size: int,
    *,
    use_cache: bool = True,
    progress: Progress | None = None,
) -> ImageSplit:
    """Read one split of an image folder, from the array cache when it is there and current."""
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"missing folder {split_dir} (an image-folder data set needs train/ and test/)")
    files = _list_files(split_dir, classes)
    if not files:
        raise DataError(f"{split_dir} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    labels = np.fromiter((label for _, label in files), dtype=np.int64, count=len(files))
    cache = arraycache.cache_folder("folders", _cache_key(root, split, files, image_size))
    if use_cache:
        hit = arraycache.read_cached(cache, len(files), image_size)
        if hit is not None:
            return ImageSplit(*hit)

    def image(i: int) -> np.ndarray:
        path = files[i][0]
        try:
            return decode_image(path, image_size)
        except Exception as exc:  # any decoder error names the file
            raise DataError(f"cannot read image {path}: {exc}") from exc

    images = arraycache.build_images(
        cache if use_cache else None,
        labels,
        image_size,
        image,
        progress=progress,
        meta={"root": str(root), "split": split},
    )
    return ImageSplit(images, labels)


def describe_folder(root: Path) -> dict:
    """Counts per split without decoding anything (for ``python -m kdviz data``)."""
    classes = list_classes(root)
    out: dict[str, Any] = {"root": str(root), "classes": classes}
    for split in ("train", "test"):
        out[split] = len(_list_files(root / split, classes)) if (root / split).is_dir() else 0
    return out
