"""Long work outside the caller's thread: started, watched, stopped.

A dashboard script reruns on every click; training inside it would block the page and die with
the rerun. A :class:`Job` runs in a worker thread owned by a process-wide :class:`JobManager`, so it
survives page switches and reruns. The page only reads ``job.progress`` and ``job.data`` and may
call ``job.stop()``. Jobs carry an ``owner`` (a browser session) so two sessions never see, or stop,
each other's work.

Jobs are background work: every time the worker asks :meth:`Job.should_stop` (each training step,
each IG-cache chunk) it first yields to interactive requests waiting in the process's compute
scheduler (:mod:`kdviz.core.scheduler`), so a training job does not freeze everyone's pages.
"""

from __future__ import annotations

import builtins
import itertools
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .scheduler import SCHEDULER, Scheduler


@dataclass
class Job:
    id: str
    title: str
    owner: str
    kind: str = "job"
    status: str = "running"  # running, done, stopped, failed
    progress: float = 0.0
    message: str = ""
    data: dict = field(default_factory=dict)  # live state for the page (a history, say)
    result: Any = None
    error: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    #: Where the job yields to interactive work (None: it never waits).
    scheduler: Scheduler | None = field(default=None, repr=False)
    #: Seconds the job has spent waiting for interactive work.
    yielded_s: float = 0.0

    # -- what the worker calls
    def report(self, progress: float | None = None, message: str | None = None, **data: Any) -> None:
        if progress is not None:
            self.progress = float(min(1.0, max(0.0, progress)))
        if message is not None:
            self.message = message
        self.data.update(data)

    def should_stop(self) -> bool:
        """True once stopped; first waits while interactive requests are queued (see the module doc)."""
        if self.scheduler is not None and not self._stop.is_set():
            self.yielded_s += self.scheduler.yield_to_interactive(stop=self._stop)
        return self._stop.is_set()

    # -- what the page calls
    def stop(self) -> None:
        self._stop.set()

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def elapsed(self) -> float:
        return (self.finished or time.time()) - self.started

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends (tests and the CLI); True if it ended."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running


class JobManager:
    def __init__(self, scheduler: Scheduler | None = SCHEDULER) -> None:
        self.scheduler = scheduler
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def start(self, title: str, work: Callable[[Job], Any], *, owner: str = "", kind: str = "job") -> Job:
        """Run ``work(job)`` in a daemon thread; its return value becomes ``job.result``."""
        job = Job(
            id=f"{kind}-{next(self._ids)}", title=title, owner=owner, kind=kind, scheduler=self.scheduler
        )

        def runner() -> None:
            try:
                job.result = work(job)
                job.status = "stopped" if job.should_stop() else "done"
                if job.status == "done":
                    job.progress = 1.0
            except Exception as exc:  # noqa: BLE001 - the page shows it; the app keeps running
                job.status = "failed"
                job.error = f"{type(exc).__name__}: {exc}"
                job.data["traceback"] = traceback.format_exc()
            finally:
                job.finished = time.time()

        job._thread = threading.Thread(target=runner, name=job.id, daemon=True)
        with self._lock:
            self._jobs[job.id] = job
        job._thread.start()
        return job

    def get(self, job_id: str, owner: str | None = None) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None or (owner is not None and job.owner != owner):
            return None
        return job

    def list(self, owner: str | None = None, kind: str | None = None) -> builtins.list[Job]:
        with self._lock:
            jobs = list(self._jobs.values())
        return [j for j in jobs if (owner is None or j.owner == owner) and (kind is None or j.kind == kind)]

    def running(self, owner: str | None = None, kind: str | None = None) -> builtins.list[Job]:
        return [j for j in self.list(owner, kind) if j.running]


#: The process's job manager: the Streamlit server is one process with many sessions.
MANAGER = JobManager()
