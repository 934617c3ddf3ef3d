"""Attribution results per image, in memory and on disk: looking at an image again calls no model.

The key is made of the model's weights (its fingerprint), the image's bytes and the options the
method uses, so a change to any of them misses the cache and nothing stale is ever shown. Each file
on disk carries a checksum of its arrays: a damaged one (flipped bytes, a cut-off write by another
tool) is deleted and recomputed, never shown. A full or read-only cache folder costs time, not
results: the maps are returned anyway and ``write_error`` says what could not be kept.
"""

from __future__ import annotations

import hashlib
import threading
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from ..core import atomic, settings
from ..core.integrity import array_digest
from .options import AttributionOptions

#: Part of every cache key: raised when the maps for the same options change (2: trapezoid weights fixed).
CACHE_VERSION = 2


CHECKSUM = "__checksum__"


def entry_checksum(entry: dict) -> np.ndarray:
    """The digest of ``entry``'s arrays (:func:`kdviz.core.integrity.array_digest`) as a uint8 array."""
    digest = array_digest({k: v for k, v in entry.items() if k != CHECKSUM})
    return np.frombuffer(bytes.fromhex(digest), dtype=np.uint8)


def image_hash(x: torch.Tensor) -> str:
    return hashlib.blake2b(x.detach().cpu().contiguous().numpy().tobytes(), digest_size=16).hexdigest()


class AttributionCache:
    """Per-image results, in memory (bounded LRU) and on disk (one ``.npz`` per key)."""

    def __init__(
        self, directory: str | Path | None = None, *, memory_items: int = 512, disk: bool = True
    ) -> None:
        self.directory = Path(directory) if directory is not None else settings.cache_dir() / "attributions"
        self.disk = disk
        self.memory_items = memory_items
        self._memory: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0
        self.discarded = 0  # damaged entries found on disk and deleted
        self.write_error: str | None = None  # why the last write to disk failed (None: it did not)

    @staticmethod
    def key(fingerprint: str, image: str, opts: AttributionOptions, extra: str = "") -> str:
        text = f"v{CACHE_VERSION}|{fingerprint}|{image}|{sorted(opts.key_fields().items())}|{extra}"
        return hashlib.blake2b(text.encode(), digest_size=20).hexdigest()

    def get(self, key: str) -> dict | None:
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                self.hits += 1
                return self._memory[key]
        path = self.directory / key[:2] / f"{key}.npz"
        if self.disk and path.is_file():
            entry = _read_checked(path)
            if entry is not None:
                self._remember(key, entry)
                self.hits += 1
                return entry
            self.discarded += 1
            try:
                path.unlink()  # damaged: recomputed by the caller, and replaced
            except OSError:
                pass
        self.misses += 1
        return None

    def put(self, key: str, entry: dict) -> None:
        self._remember(key, entry)
        if self.disk:
            try:
                atomic.write_npz(
                    self.directory / key[:2] / f"{key}.npz", **entry, **{CHECKSUM: entry_checksum(entry)}
                )
            except OSError as exc:  # a full or read-only cache costs time, not correctness
                self.write_error = str(exc)
            else:
                self.write_error = None

    def _remember(self, key: str, entry: dict) -> None:
        with self._lock:
            self._memory[key] = entry
            self._memory.move_to_end(key)
            while len(self._memory) > self.memory_items:
                self._memory.popitem(last=False)


def _read_checked(path: Path) -> dict | None:
    """The entry in ``path`` if it is whole (its checksum matches), else None."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            entry = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None
    stored = entry.pop(CHECKSUM, None)
    if stored is None or not np.array_equal(stored, entry_checksum(entry)):
        return None  # damaged, or written before entries carried a checksum
    return entry


_DEFAULT_CACHE: AttributionCache | None = None


def default_cache() -> AttributionCache:
    """The process-wide cache (the Streamlit server is one process with many sessions)."""
    global _DEFAULT_CACHE
    if _DEFAULT_CACHE is None:
        _DEFAULT_CACHE = AttributionCache()
    return _DEFAULT_CACHE
