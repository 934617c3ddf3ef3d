"""Decoded images on disk, memory-mapped: a 224-px data set is read a batch at a time, not held in RAM.

At 224×224 px one image is 150 KB of uint8; ten thousand of them are 1.5 GB. The decoded pixels are
therefore written once, image by image, into a ``.npy`` file under the cache (``KDVIZ_CACHE``) and
opened with ``np.load(mmap_mode="r")`` (from ``MMAP_BYTES`` up; smaller entries are read into
memory): the kernel pages in the rows a batch touches and may drop them again, so the process keeps
only what it is using. The file is written beside its final name and renamed into place when
complete (:func:`kdviz.core.atomic.atomic_path`), so a reader sees a whole array or none;
``meta.json`` is written last and marks the entry as usable; it holds the digest of the pixel bytes,
checked (once per process and file version, by reading the file, not by mapping it) before an entry
is trusted, so a flipped byte or a file cut short is decoded again, never shown. A key names the
source, its files and the image size, so each size has its own entry.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..core import atomic, settings

Progress = Callable[[int, int], None]
#: Entries smaller than this are read into memory: they cost little there, and an array in memory
#: cannot be pulled from under the process the way a mapped file truncated in place would be.
MMAP_BYTES = 64 * 1024 * 1024
#: Files whose digest was checked in this process: (path, size, mtime) — a rewrite checks again.
_VERIFIED: set[tuple[str, int, int]] = set()
_VERIFIED_LOCK = threading.Lock()


def cache_folder(kind: str, key: str) -> Path:
    """Where the entry ``key`` of ``kind`` ("folders", "cifar10") lives."""
    return settings.cache_dir() / kind / key


def read_cached(folder: Path, count: int, image_size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The memory-mapped images and the labels of a complete entry, or None (absent, stale, damaged)."""
    if not (folder / "meta.json").is_file():
        return None
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if not _intact(folder / "images.npy", meta.get("pixels_digest")):
            return None  # a damaged (or pre-digest) entry is rebuilt, never trusted
        images = _open(folder / "images.npy")
        labels = np.load(folder / "labels.npy")
    except (OSError, ValueError, AttributeError):
        return None  # a damaged cache is rebuilt, never trusted
    if images.shape != (count, image_size, image_size, 3) or images.dtype != np.uint8 or len(labels) != count:
        return None
    return images, labels


def _intact(path: Path, expected: str | None) -> bool:
    """Whether the ``.npy`` at ``path`` has the pixel digest ``expected`` (read in chunks)."""
    if not expected:
        return False
    st = path.stat()
    stamp = (str(path), st.st_size, st.st_mtime_ns)
    with _VERIFIED_LOCK:
        if stamp in _VERIFIED:
            return True
    with open(path, "rb") as fh:
        np.lib.format.read_magic(fh)
        np.lib.format.read_array_header_1_0(fh)
        h = hashlib.blake2b(digest_size=16)
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    if h.hexdigest() != expected:
        return False
    with _VERIFIED_LOCK:
        _VERIFIED.add(stamp)
    return True


def _open(path: Path) -> np.ndarray:
    """The array at ``path``: memory-mapped read-only when large, else read into memory."""
    mapped = np.load(path, mmap_mode="r")
    return mapped if mapped.nbytes >= MMAP_BYTES else np.array(mapped)


def build_images(
    folder: Path | None,
    labels: np.ndarray,
    image_size: int,
    image: Callable[[int], np.ndarray],
    *,
    progress: Progress | None = None,
    meta: dict | None = None,
) -> np.ndarray:
    """Fill an (N, S, S, 3) uint8 array with ``image(i)`` for each i, on disk under ``folder`` when it
    can be written (the result is then memory-mapped), else in memory (a read-only cache folder costs
    memory and speed, not correctness)."""
    count = len(labels)
    if folder is not None:
        try:
            return _build_on_disk(folder, labels, image_size, image, progress, meta or {})
        except OSError:
            pass
    images = np.empty((count, image_size, image_size, 3), dtype=np.uint8)
    _fill(images, image, progress)
    return images


def _build_on_disk(
    folder: Path,
    labels: np.ndarray,
    image_size: int,
    image: Callable[[int], np.ndarray],
    progress: Progress | None,
    meta: dict,
) -> np.ndarray:
    # Written through a plain file, image after image (no mapping while writing): the decoded
    # pixels go to disk as they come and the process never holds more than one image of them.
    count = len(labels)
    shape = (count, image_size, image_size, 3)
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
        "fortran_order": False,
        "shape": shape,
    }
    with atomic.atomic_path(folder / "images.npy") as tmp:
        with open(tmp, "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, header)
            step = max(1, count // 100)
            digest = hashlib.blake2b(digest_size=16)
            for i in range(count):
                pixels = np.ascontiguousarray(image(i), dtype=np.uint8)
                if pixels.shape != shape[1:]:
                    raise ValueError(f"image {i} is {pixels.shape}, expected {shape[1:]}")
                data = pixels.tobytes()
                digest.update(data)
                fh.write(data)
                if progress and (i % step == 0 or i == count - 1):
                    progress(i + 1, count)
    atomic.write_npy(folder / "labels.npy", labels)
    atomic.write_json(
        folder / "meta.json",
        {**meta, "n": count, "image_size": image_size, "pixels_digest": digest.hexdigest()},
    )
    return _open(folder / "images.npy")


def _fill(out: np.ndarray, image: Callable[[int], np.ndarray], progress: Progress | None) -> None:
    count = len(out)
    step = max(1, count // 100)
    for i in range(count):
        out[i] = image(i)
        if progress and (i % step == 0 or i == count - 1):
            progress(i + 1, count)
