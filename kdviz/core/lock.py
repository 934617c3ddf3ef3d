"""One writer per folder: a run, a study, an IG cache or a search is written by one process at a time.

Two writers of one run folder (``train --name same`` twice, a page and the command line, two browser
sessions) would each overwrite the other's weights, card and history, and both would report success.
A writer takes the folder's lock first; a second writer is refused at once with the holder named.

The lock is a small JSON file, ``.writer-lock.json``, in the folder: the holder's process id, host,
the process's start time (so a process id the system has since reused is not taken for the holder),
when it took the lock and what it is doing. It is made whole in a temporary file and linked into place
(``link`` fails if the name exists), so taking it is atomic and a reader never sees half of it. It is
released when the ``with`` block ends and, for locks still held, when the interpreter exits.

A lock whose holder is gone (``kill -9``, a power cut) is *stale*: on the same host, when its process
is not alive or is another process with the same id, the next writer breaks it and goes on, so resume
still works. A lock taken on another host (a shared folder) is never broken: kdviz cannot see that
host's processes, and the message says which file to delete once its holder is known to be gone.
Readers (the pages) never take the lock: every file is replaced atomically (:mod:`kdviz.core.atomic`).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from .atomic import save_error

LOCK_FILE = ".writer-lock.json"
#: a breaker (see :func:`_break`) older than this was left by a process killed while breaking
_BREAKER_STALE_S = 30.0


class LockHeld(RuntimeError):
    """The folder has a live writer; ``holder`` says who (one line in ``str()`` for a person)."""

    def __init__(self, folder: Path, holder: Holder) -> None:
        other_host = holder.host != socket.gethostname()
        self.folder, self.holder, self.other_host = folder, holder, other_host
        message = f"{folder} is being written by {holder.describe()}"
        if other_host:
            message += (
                f"; it was taken on another host, which kdviz cannot check: "
                f"once that process is gone, delete {folder / LOCK_FILE}"
            )
        else:
            message += "; wait for it to finish, stop it, or choose another name"
        super().__init__(message)


@dataclass(frozen=True)
class Holder:
    """What a lock file says about the process that holds it."""

    pid: int
    host: str
    process_start: str | None  # from /proc: tells a reused process id from the holder
    since: float  # time.time() when the lock was taken
    description: str  # what the holder is doing: its command line, or a page's request
    token: str  # this lock's own id, so a holder releases only its own file
    thread: int = 0  # the holding thread (a server's sessions share one process)

    def describe(self) -> str:
        taken = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"{self.description!r} (process {self.pid} on {self.host}, since {taken})"

    @classmethod
    def from_json(cls, text: str) -> Holder:
        obj = json.loads(text)
        fields = {k: obj[k] for k in cls.__dataclass_fields__ if k in obj}
        return cls(**fields)


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks after boot, from /proc), or None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: count fields after the last ')'
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def holder_alive(holder: Holder) -> bool | None:
    """Whether ``holder`` still runs: True, False, or None when it is on another host (unknowable)."""
    if holder.host != socket.gethostname():
        return None
    if holder.pid == os.getpid():
        return _held_here(holder)
    if not _alive(holder.pid):
        return False
    start = process_start(holder.pid)
    return start is None or holder.process_start is None or start == holder.process_start


def default_description() -> str:
    """The command line of this process, shortened: what a refused writer is told about the holder."""
    argv = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    if argv[0] in ("__main__.py", "-m") or argv[0].endswith("kdviz/__main__.py"):
        argv[0] = "python -m kdviz"
    text = " ".join(argv)
    return text if len(text) <= 200 else text[:197] + "..."


# locks this process holds: folder -> (holder, depth); a thread may take its own lock again
_held: dict[Path, tuple[Holder, int]] = {}
# tokens of locks a thread here is linking into place: between the link and its entry in ``_held``
# another thread must not read the fresh lock as one of ours that nobody holds, and break it
_taking: set[str] = set()
_held_guard = threading.Lock()


def _held_here(holder: Holder) -> bool:
    with _held_guard:
        return holder.token in _taking or any(h.token == holder.token for h, _ in _held.values())


def read_holder(folder: str | os.PathLike) -> Holder | None:
    """The holder named in ``folder``'s lock file, or None if there is none (or it is unreadable)."""
    try:
        return Holder.from_json((Path(folder) / LOCK_FILE).read_text())
    except (OSError, ValueError, TypeError, KeyError):
        return None


def live_holder(folder: str | os.PathLike) -> Holder | None:
    """The holder of ``folder``'s lock if it is alive or cannot be checked; None if free or stale.

    For a page that wants to say "this run is being trained" before offering to resume it: it takes
    no lock and changes nothing.
    """
    holder = read_holder(folder)
    if holder is None:
        return None
    return None if holder_alive(holder) is False else holder


def check_free(folder: str | os.PathLike) -> None:
    """Raise :class:`LockHeld` if ``folder`` has a live writer: for a command that wants to refuse
    before it draws a progress bar or loads anything. Taking the lock stays the writer's proof."""
    holder = live_holder(folder)
    if holder is not None:
        raise LockHeld(Path(folder).resolve(), holder)


class WriterLock:
    """``with WriterLock(folder, "what I do"):`` write ``folder``; refuses with :class:`LockHeld`.

    The same thread may take a lock it holds again (``train_run`` takes it, then ``train`` does);
    another thread of the same process is refused like another process.
    """

    def __init__(self, folder: str | os.PathLike, description: str | None = None) -> None:
        self.folder = Path(folder).resolve()
        self.description = description or default_description()
        self.holder: Holder | None = None

    @property
    def path(self) -> Path:
        return self.folder / LOCK_FILE

    def acquire(self) -> WriterLock:
        me = threading.get_ident()
        with _held_guard:
            mine = _held.get(self.folder)
            if mine is not None and mine[0].thread == me:
                _held[self.folder] = (mine[0], mine[1] + 1)
                self.holder = mine[0]
                return self
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise (save_error(self.folder, exc) or exc) from exc
        holder = Holder(
            pid=os.getpid(),
            host=socket.gethostname(),
            process_start=process_start(os.getpid()),
            since=time.time(),
            description=self.description,
            token=uuid.uuid4().hex,
            thread=me,
        )
        text = json.dumps(asdict(holder), indent=2) + "\n"
        with _held_guard:
            _taking.add(holder.token)
        try:
            return self._take(holder, text)
        finally:
            with _held_guard:
                _taking.discard(holder.token)

    def _take(self, holder: Holder, text: str) -> WriterLock:
        for _ in range(5):  # each round either takes the lock, refuses, or breaks a stale one
            try:
                taken = _link_new(self.path, text)
            except OSError as exc:  # a full or read-only folder: nothing can be written in it
                raise (save_error(self.path, exc) or exc) from exc
            if taken:
                with _held_guard:
                    _held[self.folder] = (holder, 1)
                self.holder = holder
                return self
            current_text = _read_text(self.path)
            if current_text is None:
                continue  # released between our try and our look: try again
            try:
                current = Holder.from_json(current_text)
            except (ValueError, TypeError, KeyError):
                current = None  # a lock file that is not one of ours (or was edited): stale
            alive = holder_alive(current) if current is not None else False
            if alive is None and current is not None:
                raise LockHeld(self.folder, current)
            if alive and current is not None:
                raise LockHeld(self.folder, current)
            _break(self.path, current_text)
        raise OSError(errno.EAGAIN, f"could not take the writer lock of {self.folder}")

    def release(self) -> None:
        if self.holder is None:
            return
        with _held_guard:
            mine = _held.get(self.folder)
            if mine is None or mine[0].token != self.holder.token:
                self.holder = None
                return
            if mine[1] > 1:
                _held[self.folder] = (mine[0], mine[1] - 1)
                self.holder = None
                return
            del _held[self.folder]
        current = read_holder(self.folder)
        if current is not None and current.token == self.holder.token:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self.holder = None

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _link_new(path: Path, text: str) -> bool:
    """Make ``path`` hold ``text`` if it does not exist, atomically; False if it exists."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.new")
    try:
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as exc:  # file systems without hard links: exclusive create, then write
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None


def _break(path: Path, stale_text: str) -> None:
    """Delete the stale lock ``path`` if it still says ``stale_text``; one breaker at a time.

    Two writers that both found the lock stale must not both delete it: the second would delete the
    fresh lock the first has just taken. The breaker file makes the look-and-delete one step.
    """
    breaker = path.with_name(path.name + ".break")
    try:
        fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        with contextlib.suppress(FileNotFoundError):
            if time.time() - breaker.stat().st_mtime > _BREAKER_STALE_S:
                breaker.unlink()
        time.sleep(0.01)
        return
    os.close(fd)
    try:
        if _read_text(path) == stale_text:
            path.unlink()
    finally:
        with contextlib.suppress(FileNotFoundError):
            breaker.unlink()


@contextlib.contextmanager
def writer_lock(folder: str | os.PathLike, description: str | None = None):
    """The function form of :class:`WriterLock`: ``with writer_lock(run_dir, "training x"):``."""
    with WriterLock(folder, description) as lock:
        yield lock


def _release_all() -> None:
    """At interpreter exit: remove the lock files this process still holds (a thread left running)."""
    with _held_guard:
        held = list(_held.items())
        _held.clear()
    for folder, (holder, _) in held:
        current = read_holder(folder)
        if current is not None and current.token == holder.token:
            with contextlib.suppress(OSError):
                (folder / LOCK_FILE).unlink()


atexit.register(_release_all)
