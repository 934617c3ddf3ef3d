"""Checksums for what kdviz caches on disk: a damaged entry is found, discarded and recomputed.

A cache entry is only worth its speed if it is right: a flipped bit, a file cut short by another
tool or a bad sector must never reach a page or a training run. Every cache writes the digest of
its arrays beside them and checks it when it reads them back.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from . import atomic


def array_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """A digest (hex) of named arrays: their names, dtypes, shapes and bytes, in name order."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.data if a.size else b"")
    return h.hexdigest()


def digest_file(path: str | os.PathLike) -> Path:
    """Where the digest of the array file ``path`` is kept: ``NAME.b2`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".b2")


def write_checked_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save ``array`` as ``.npy`` and then its digest: a reader trusts the array only with both."""
    array = np.asarray(array)
    atomic.write_npy(path, array)
    atomic.write_text(digest_file(path), array_digest({"array": array}) + "\n")


def read_checked_npy(path: str | os.PathLike) -> np.ndarray | None:
    """The array saved by :func:`write_checked_npy`, or None when it is missing or damaged (then
    both files are deleted, so the caller recomputes and saves it again)."""
    path, sidecar = Path(path), digest_file(path)
    try:
        array = np.load(path, allow_pickle=False)
        whole = sidecar.read_text().strip() == array_digest({"array": array})
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        whole = False
    if whole:
        return array
    for f in (path, sidecar):
        with contextlib.suppress(OSError):
            f.unlink()
    return None
