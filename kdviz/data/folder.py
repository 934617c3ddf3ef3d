"""Image-folder data sets (``train/<class>/*.jpg``, ``test/<class>/*.jpg``), decoded once and cached.

Decoding 60,000 small JPEGs takes a while on two cores; the decoded uint8 arrays are written to the
cache (``KDVIZ_CACHE``) under a key made of the folder, its file list, sizes and times and the image
size, so a second start reads one array instead, and any change to the folder makes a new key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..core import atomic, settings
from ..core.integrity import array_digest
from .base import DataError, ImageSplit
from .images import UPLOAD_TYPES

IMAGE_SUFFIXES = {f".{ext}" for ext in UPLOAD_TYPES}
CACHE_VERSION = 1

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
    key = _cache_key(root, split, files, image_size)
    cache = settings.cache_dir() / "folders" / key
    if use_cache and (cache / "meta.json").is_file():
        try:
            images = np.load(cache / "images.npy")
            labels = np.load(cache / "labels.npy")
            meta = json.loads((cache / "meta.json").read_text())
            whole = isinstance(meta, dict) and meta.get("digest") == array_digest(
                {"images": images, "labels": labels}
            )
            if whole and len(images) == len(files):
                return ImageSplit(images, labels)
        except (OSError, ValueError):
            pass  # a damaged cache (bytes flipped, cut short) is rebuilt, never trusted
    images = np.empty((len(files), image_size, image_size, 3), dtype=np.uint8)
    labels = np.fromiter((label for _, label in files), dtype=np.int64, count=len(files))
    step = max(1, len(files) // 100)
    for i, (f, _) in enumerate(files):
        try:
            images[i] = decode_image(f, image_size)
        except Exception as exc:  # any decoder error names the file
            raise DataError(f"cannot read image {f}: {exc}") from exc
        if progress and (i % step == 0 or i == len(files) - 1):
            progress(i + 1, len(files))
    if use_cache:
        _write_cache(cache, images, labels, root, split)
    return ImageSplit(images, labels)


def _write_cache(cache: Path, images: np.ndarray, labels: np.ndarray, root: Path, split: str) -> None:
    try:
        atomic.write_npy(cache / "images.npy", images)
        atomic.write_npy(cache / "labels.npy", labels)
        digest = array_digest({"images": images, "labels": labels})
        meta = {"root": str(root), "split": split, "n": len(labels), "digest": digest}
        atomic.write_json(cache / "meta.json", meta)  # last: it vouches for the arrays
    except OSError:
        pass  # a read-only cache folder costs speed, not correctness


def describe_folder(root: Path) -> dict:
    """Counts per split without decoding anything (for ``python -m kdviz data``)."""
    classes = list_classes(root)
    out: dict[str, Any] = {"root": str(root), "classes": classes}
    for split in ("train", "test"):
        out[split] = len(_list_files(root / split, classes)) if (root / split).is_dir() else 0
    return out
