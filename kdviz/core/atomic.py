"""Atomic writes: a reader sees the old file or the new one, never half of one.

Everything kdviz saves (checkpoints, cards, histories, caches) goes through here, so a run killed
at any instant leaves no truncated file behind: one helper per format (bytes, text, JSON, ``.npy``,
``.npz``), and :func:`atomic_path` for a writer that wants a path of its own (safetensors, memmaps).
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

#: why a write failed, for the errors a person can do something about (free space, a mount)
_CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


class SaveError(OSError):
    """A file could not be saved (the disk is full, the folder read-only): names the file and the cause.

    The file is left as it was (the previous version, or none): the failed write only ever touched
    its temporary file, which is removed.
    """

    def __init__(self, path: Path, cause: str, code: int | None = None) -> None:
        super().__init__(code, f"cannot save {path}: {cause}; the previous version (if any) is kept")
        self.path, self.cause = path, cause

    def __str__(self) -> str:
        return str(self.strerror)


def save_error(path: str | os.PathLike, exc: BaseException) -> SaveError | None:
    """The :class:`SaveError` that ``exc`` (an ``OSError``, or a library's error that wraps one, such
    as safetensors' "No space left on device (os error 28)") means for ``path``, or None."""
    if isinstance(exc, SaveError):
        return exc
    code = exc.errno if isinstance(exc, OSError) else None
    if code is None:  # a library error that carries only the message of the OSError inside
        text = str(exc)
        code = next((c for c in _CAUSES if f"(os error {c})" in text), None)
    if code not in _CAUSES:
        return None
    return SaveError(Path(path), _CAUSES[code], code)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    A full disk or a read-only folder raises :class:`SaveError` (naming ``path``), ``path`` untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise (save_error(path, exc) or exc) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; a saved file gets the usual mode
        yield tmp_path
        _sync(tmp_path)
        os.replace(tmp_path, path)
    except Exception as exc:
        error = save_error(path, exc)
        if error is None:
            raise
        raise error from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _sync(tmp: Path) -> None:
    """Flush ``tmp`` to disk before the rename makes it visible (where a full disk shows last)."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())


def remove_leftovers(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a process killed mid-write left in ``directory``; returns them.

    ``kill -9`` lets no ``finally`` run, so the half-written ``.NAME.XXXX.tmp`` stays beside the
    whole file it was meant to replace. Whoever resumes the work in that folder calls this first.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for leftover in directory.glob(".*.tmp"):
        try:
            leftover.unlink()
            removed.append(leftover)
        except FileNotFoundError:
            pass
    return removed


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_npy(path: str | os.PathLike, array: Any) -> None:
    """One array as ``.npy``; numbers only (no pickled objects), which is all ``np.load`` reads back by
    default."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(array), allow_pickle=False)


def write_npz(path: str | os.PathLike, **arrays: Any) -> None:
    """Named arrays as one uncompressed ``.npz``; numbers only, as :func:`write_npy`."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, allow_pickle=False, **arrays)


def _json_default(obj: Any) -> Any:
    """Numbers from numpy and torch, tuples and paths, written as plain JSON."""
    if hasattr(obj, "tolist"):  # before .item(): arrays of more than one element have both
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
