"""Attribution results per image, in memory and on disk: looking at an image again calls no model.

The key is made of the model's weights (its fingerprint), the image's bytes and the options the
method uses, so a change to any of them misses the cache and nothing stale is ever shown.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from ..core import atomic, settings
from .options import AttributionOptions

#: Part of every cache key: raised when the maps for the same options change (2: trapezoid weights fixed).
CACHE_VERSION = 2


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
            try:
                with np.load(path) as npz:
                    entry = {k: npz[k] for k in npz.files}
            except (OSError, ValueError):
                return None  # a damaged entry is recomputed
            self._remember(key, entry)
            self.hits += 1
            return entry
        self.misses += 1
        return None

    def put(self, key: str, entry: dict) -> None:
        self._remember(key, entry)
        if self.disk:
            try:
                atomic.write_npz(self.directory / key[:2] / f"{key}.npz", **entry)
            except OSError:
                pass  # a read-only cache costs time, not correctness

    def _remember(self, key: str, entry: dict) -> None:
        with self._lock:
            self._memory[key] = entry
            self._memory.move_to_end(key)
            while len(self._memory) > self.memory_items:
                self._memory.popitem(last=False)


_DEFAULT_CACHE: AttributionCache | None = None


def default_cache() -> AttributionCache:
    """The process-wide cache (the Streamlit server is one process with many sessions)."""
    global _DEFAULT_CACHE
    if _DEFAULT_CACHE is None:
        _DEFAULT_CACHE = AttributionCache()
    return _DEFAULT_CACHE
