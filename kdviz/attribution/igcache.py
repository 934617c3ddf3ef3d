"""The data-set IG cache: the teacher's map of every image, computed once, read at disk speed.

As in the paper, one map per image: the absolute Integrated Gradients of the *true* class, summed
over the colour channels (H × W). Unlike the paper's code, maps are computed in data-set order,
without augmentation, and stored *by index*: ``store[i]`` is the map of image ``i``, always.

Layout of a cache folder::

    index.json          what was computed: teacher fingerprint, data set, split, IG options
    maps.npy            float16 (N, H, W), memory-mapped; written in place, chunk by chunk
    done-R-of-W.npy     bool (N,): which maps rank R of W has finished (atomic rewrite per chunk)
    sums-R-of-W.npy     uint32 (N,): the CRC-32 of each finished map, written before its done flag

A map whose bytes no longer match its CRC (a flipped bit, a bad sector) counts as not done: it is
never handed to training, and the next run recomputes it.

A killed run resumes: maps whose done flag is set are kept, the rest are recomputed. Under
``torchrun`` every rank takes the indices ``rank::world`` into the same ``maps.npy`` (distinct
rows) and its own done file; readers combine the flags of every done file. The caller says which
rank this is and how to wait for the others (:mod:`kdviz.training.ddp` reads the torchrun
environment, here nothing does).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
import zlib
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core import atomic
from ..core.lock import WriterLock
from ..core.version import __version__
from ..data.base import Dataset
from ..data.loader import normalize, to_float
from ..models.fingerprint import model_fingerprint
from ..models.speedups import fused_for_inference
from .front import attribute
from .options import AttributionOptions
from .throughput import fastest_batch_size

INDEX = "index.json"
MAPS = "maps.npy"


class IGCacheError(Exception):
    pass


@dataclass
class IGCacheSpec:
    teacher: str  # model fingerprint (weights hash)
    teacher_name: str
    dataset: str
    split: str
    n: int
    height: int
    width: int
    steps: int
    rule: str
    baseline: str
    target: str = "true"
    reduction: str = "abs-sum-channels"
    dtype: str = "float16"
    kdviz_version: str = __version__

    def differences(self, other: IGCacheSpec | dict) -> dict[str, tuple]:
        """Fields (but the teacher's display name and the version) where ``other`` holds other maps."""
        theirs = asdict(other) if isinstance(other, IGCacheSpec) else other
        return {
            k: (theirs.get(k), v)
            for k, v in asdict(self).items()
            if k not in ("teacher_name", "kdviz_version") and theirs.get(k) != v
        }


def _done_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("done-*-of-*.npy"))


def _sum_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("sums-*-of-*.npy"))


def row_sums(maps: np.ndarray, rows) -> np.ndarray:
    """CRC-32 of each map ``maps[i]`` for ``i`` in ``rows`` (uint32; 0 is read as "no sum")."""
    return np.fromiter(
        (zlib.crc32(np.ascontiguousarray(maps[i]).tobytes()) for i in rows), np.uint32, count=len(rows)
    )


def _reserve(path: Path) -> None:
    """Allocate ``path``'s blocks now. A sparse memory-mapped file on a full disk kills the process
    (SIGBUS) at the first write to a hole; reserved, a full disk is an error here, before any work."""
    with open(path, "rb+") as fh:
        try:
            os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise


class IGMapStore:
    """Read side of a cache folder: ``store[i]``, ``store.read(indices)``, ``store.complete``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not (self.folder / INDEX).is_file():
            raise IGCacheError(
                f"{self.folder} is not an IG cache (no {INDEX}); "
                "make one with `python -m kdviz ig-precompute`"
            )
        self.spec = IGCacheSpec(**json.loads((self.folder / INDEX).read_text()))
        self.maps = np.load(self.folder / MAPS, mmap_mode="r")
        if self.maps.shape != (self.spec.n, self.spec.height, self.spec.width):
            raise IGCacheError(
                f"{self.folder / MAPS} has shape {self.maps.shape}, the index says "
                f"{(self.spec.n, self.spec.height, self.spec.width)}"
            )

    _done: np.ndarray | None = None
    damaged: np.ndarray = np.zeros(0, dtype=np.int64)  # finished maps whose CRC did not match

    @property
    def done(self) -> np.ndarray:
        """Which maps are finished *and* whole (checked against their CRC once per store)."""
        if self._done is not None:
            return self._done
        n = self.spec.n
        done = np.zeros(n, dtype=bool)
        for f in _done_files(self.folder):
            try:
                flags = np.load(f)
            except (OSError, ValueError):
                continue  # a damaged flag file: its maps are recomputed
            if flags.shape == (n,):
                done |= flags.astype(bool)
        sums = np.zeros(n, dtype=np.uint32)
        for f in _sum_files(self.folder):
            try:
                part = np.load(f)
            except (OSError, ValueError):
                part = None
            if part is None or part.shape != (n,):
                done[:] = False  # the sums cannot vouch for any map: recompute them all
                continue
            sums = np.where(part != 0, part.astype(np.uint32), sums)
        checked = np.flatnonzero(done & (sums != 0))  # caches made before sums existed: unchecked
        bad = checked[row_sums(self.maps, checked) != sums[checked]]
        done[bad] = False
        self.damaged, self._done = bad, done
        return done

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    def __len__(self) -> int:
        return self.spec.n

    def __getitem__(self, index: int) -> np.ndarray:
        return np.asarray(self.maps[index], dtype=np.float32)

    def read(self, indices: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Maps of the given data-set indices as float32 (B, H, W): what training reads per batch."""
        idx = np.asarray(indices, dtype=np.int64)
        order = np.argsort(idx)  # sorted reads are sequential on disk
        out = np.empty((len(idx), self.spec.height, self.spec.width), dtype=np.float32)
        out[order] = self.maps[idx[order]]
        return torch.from_numpy(out)


def adopt(source: str | Path, folder: str | Path) -> IGMapStore:
    """Give ``folder`` the finished cache ``source`` instead of computing the same maps again.

    Studies that share a teacher and training images (the compression sweep's, the main study's)
    need the same maps; on 2 cores they take the better part of an hour. Files are hard-linked where
    both folders lie on one file system (no second copy on disk, and either folder may be deleted
    alone), copied elsewhere. Each file lands whole, the index last: an adoption cut short leaves a
    folder without an index, which the next adoption (or :func:`precompute`) takes up.
    """
    source, folder = Path(source), Path(folder)
    if not IGMapStore(source).complete:
        raise IGCacheError(f"{source} is not finished; only a finished cache can be shared")
    with WriterLock(folder, f"sharing the IG cache of {source}"):
        for f in [*_done_files(source), *_sum_files(source), source / MAPS, source / INDEX]:
            with atomic.atomic_path(folder / f.name) as tmp:
                tmp.unlink()
                try:
                    os.link(f, tmp)
                except OSError:  # another file system, or links not allowed: a copy
                    shutil.copyfile(f, tmp)
    return IGMapStore(folder)


def _load_or(path: Path, default: np.ndarray) -> np.ndarray:
    """``path``'s array if it is whole and of ``default``'s shape and kind, else ``default``."""
    try:
        array = np.load(path)
    except (OSError, ValueError):
        return default
    return array.astype(default.dtype) if array.shape == default.shape else default


def precompute(
    teacher: nn.Module,
    data: Dataset,
    out_dir: str | Path,
    *,
    mean,
    std,
    split: str = "train",
    steps: int = 32,
    rule: str = "gausslegendre",
    baseline: str = "zero",
    batch_size: int = 16,
    limit: int | None = None,
    teacher_name: str = "teacher",
    progress: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    rank: int = 0,
    world: int = 1,
    barrier: Callable[[], None] | None = None,
    internal_batch_size: int | None = None,
    lock_description: str | None = None,
) -> IGMapStore:
    """Compute (or finish) the IG cache of ``split`` in ``out_dir``; returns the store.

    ``progress(done, total, images_per_second)`` is called after every chunk; ``should_stop``
    ends the run after the current chunk, every finished map kept. With ``world`` processes each
    computes the rows ``rank::world``; ``barrier`` (all ranks wait there) lets rank 0 write the
    index before the others open it, and lets no rank return before every map is written.
    """
    wait = barrier or (lambda: None)
    out = Path(out_dir)
    split_data = data.split(split)
    n = min(limit, len(split_data)) if limit else len(split_data)
    h = w = data.image_size
    teacher.eval()
    spec = IGCacheSpec(
        model_fingerprint(teacher), teacher_name, data.source, split, n, h, w, steps, rule, baseline
    )

    with ExitStack() as held:  # one writer per cache: rank 0 holds the lock for all its ranks
        if rank == 0:
            held.enter_context(WriterLock(out, lock_description))
            atomic.remove_leftovers(out)  # before the barrier: no rank is writing yet
            if (out / INDEX).is_file():
                mismatch = spec.differences(json.loads((out / INDEX).read_text()))
                if mismatch:
                    differences = ", ".join(f"{k}: {a} ≠ {b}" for k, (a, b) in mismatch.items())
                    raise IGCacheError(
                        f"{out} holds a cache made differently ({differences}); "
                        "choose another folder or delete it"
                    )
            if not (out / MAPS).is_file():
                with atomic.atomic_path(out / MAPS) as tmp:
                    np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, h, w)).flush()
                    _reserve(tmp)  # the space is taken now: a full disk fails here, not mid-run
            atomic.write_json(out / INDEX, asdict(spec))
        wait()

        maps = np.load(out / MAPS, mmap_mode="r+")
        done_file = out / f"done-{rank}-of-{world}.npy"
        sums_file = out / f"sums-{rank}-of-{world}.npy"
        store = IGMapStore(out)
        mine, sums = _load_or(done_file, np.zeros(n, dtype=bool)), _load_or(sums_file, np.zeros(n, np.uint32))
        already = store.done
        todo = [i for i in range(rank, n, world) if not already[i]]
        total_mine = len(range(rank, n, world))
        finished = total_mine - len(todo)
        opts = AttributionOptions(method="ig", steps=steps, rule=rule, baseline=baseline, target="true")
        images, labels = split_data.images, split_data.labels
        if todo:  # folded and channels-last for faster IG (README: What it costs), checked
            teacher = fused_for_inference(teacher, normalize(to_float(images[todo[:8]]), mean, std))
        if internal_batch_size is None and len(todo) * steps >= 20_000:
            # measured, not guessed (worth it on long runs)
            internal_batch_size = fastest_batch_size(teacher, h)
        t0, computed = time.perf_counter(), 0
        for start in range(0, len(todo), batch_size):
            chunk = np.asarray(todo[start : start + batch_size])
            x = normalize(to_float(images[chunk]), mean, std)
            result = attribute(
                teacher,
                x,
                opts,
                mean=mean,
                std=std,
                labels=labels[chunk],
                cache=False,
                internal_batch_size=internal_batch_size,
                fingerprint=spec.teacher,
            )
            maps[chunk] = np.abs(result.maps).sum(1).astype(np.float16)
            maps.flush()  # the rows are on disk before they are marked done
            sums[chunk] = row_sums(maps, chunk)
            atomic.write_npy(sums_file, sums)  # before the flags: a flagged map always has its sum
            mine[chunk] = True
            atomic.write_npy(done_file, mine)
            computed += len(chunk)
            finished += len(chunk)
            if progress:
                progress(finished, total_mine, computed / max(time.perf_counter() - t0, 1e-9))
            if should_stop and should_stop():
                break
        del maps
        wait()
        return IGMapStore(out)
