"""The pages' door to the server's compute scheduler: who is asking, whether they are still there,
and a wait that tells them their place in the queue.

All sessions of one ``streamlit run`` share :data:`kdviz.core.scheduler.SCHEDULER`. A session is
known by Streamlit's own session id; it is gone when the runtime's session manager no longer lists
it as active (the browser tab was closed or lost its connection), and then its waiting requests
are dropped before they cost anything. A script stopped while it waits (the same event, seen from
the page's thread) cancels its request at once.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import streamlit as st
from streamlit.runtime import Runtime
from streamlit.runtime.scriptrunner import get_script_run_ctx
from streamlit.runtime.scriptrunner_utils.exceptions import StopException

from kdviz.core.machine import set_torch_threads_once
from kdviz.core.scheduler import INTERACTIVE, SCHEDULER, Scheduler, Served, Ticket

#: How often a waiting page redraws its place in the queue (seconds).
POLL_S = 0.3
#: A file to which every model call the scheduler serves is appended as a JSON line (benchmarks).
LOG_ENV = "KDVIZ_COMPUTE_LOG"
_SETUP = threading.Lock()
_configured = False
_exclusive = itertools.count(1)


def _logger(path: Path) -> Callable[[Served], None]:
    lock = threading.Lock()

    def log(served: Served) -> None:
        line = {
            "when": round(served.when, 3),
            "kind": served.kind,
            "size": served.size,
            "sessions": len(set(served.sessions)),
            "seconds": round(served.seconds, 4),
            "waited": round(served.waited, 4),
            "lighter": served.lighter,
        }
        # An append-only log, not a state file: each line goes out in one O_APPEND write, so a
        # reader sees whole lines (kdviz.core.atomic's replace-the-file would rewrite it every call).
        data = (json.dumps(line) + "\n").encode()
        with lock:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

    return log


def session_alive(session_id: str) -> bool:
    """False once Streamlit's session manager no longer lists the session as connected."""
    if not Runtime.exists():  # AppTest and bare scripts have no runtime: every session is here
        return True
    return Runtime.instance().is_active_session(session_id)


def scheduler() -> Scheduler:
    """The process's scheduler, told once how to recognise a gone session; torch's threads set once."""
    global _configured
    with _SETUP:
        if not _configured:
            set_torch_threads_once()
            SCHEDULER.set_alive(session_alive)
            if os.environ.get(LOG_ENV):
                SCHEDULER.on_served = _logger(Path(os.environ[LOG_ENV]))
            _configured = True
    return SCHEDULER


def session_id() -> str:
    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "no-session"


def submit(run: Callable, item: Any, *, key: Hashable, **kw: Any) -> Ticket:
    """Queue ``item`` for ``run`` as this session's interactive request."""
    return scheduler().submit(run, item, key=key, session=session_id(), priority=INTERACTIVE, **kw)


def others_waiting(kind: str) -> int:
    """Other sessions whose ``kind`` of work the server is doing or holds in its queue."""
    return scheduler().others_waiting(session_id(), kind)


def message(ahead: int, seconds: float, what: str) -> str:
    """The line a waiting page shows."""
    eta = f"about {seconds:.0f} s" if seconds >= 1.5 else "a moment"
    if ahead == 0:
        return f"Computing {what}: {eta}."
    calls = "1 model call" if ahead == 1 else f"{ahead} model calls"
    return f"In the server's compute queue, shared by everyone here ({calls} before yours): {what} in {eta}."


def wait(tickets: dict[str, Ticket] | Ticket, what: str, on_poll: Callable[[], None] | None = None) -> Any:
    """Wait for one ticket (its result) or several (a dict of results), showing the place and
    estimate of the last one to finish (``on_poll`` runs at each look); a script stopped meanwhile
    cancels them."""
    many = isinstance(tickets, dict)
    todo: dict[str, Ticket] = tickets if isinstance(tickets, dict) else {"": tickets}
    box = st.empty()
    try:
        while not all(t.wait(POLL_S) for t in todo.values()):
            places = [t.place() for t in todo.values() if not t.done()]
            if places:
                ahead, seconds = max(places, key=lambda p: p[1])
                box.caption(message(ahead, seconds, what))
            if on_poll is not None:
                on_poll()
    except StopException:  # the session is gone or stopped: nobody wants these any more
        for t in todo.values():
            t.cancel()
        raise
    finally:
        box.empty()
    results = {name: t.result() for name, t in todo.items()}
    return results if many else results[""]


def run_exclusive(fn: Callable[[], Any], what: str, *, kind: str = "work") -> Any:
    """``fn()`` on the compute thread, alone (a latency measurement, say), after the work queued
    before it; the page shows its place meanwhile."""
    ticket = submit(lambda items: [fn()], None, key=(kind, next(_exclusive)), kind=kind, max_batch=1)
    return wait(ticket, what)


def run_with_progress(fn: Callable[[Callable[[float, str], None]], Any], what: str, bar, *, kind: str) -> Any:
    """``fn(report)`` on the compute thread, alone; what it reports (fraction, text) is drawn on
    ``bar`` (an ``st.progress``) from the page's own thread, the only one that may draw."""
    latest: list[tuple[float, str]] = []
    ticket = submit(
        lambda items: [fn(lambda f, text: latest.append((f, text)))],
        None,
        key=(kind, next(_exclusive)),
        kind=kind,
        max_batch=1,
    )
    return wait(ticket, what, on_poll=lambda: bar.progress(*latest[-1]) if latest else None)


def run_shared(fn: Callable[[], Any], what: str, *, key: Hashable, kind: str = "work") -> Any:
    """``fn()`` on the compute thread; sessions asking for the same ``key`` meanwhile share one call."""
    ticket = submit(lambda items: [fn()], None, key=key, kind=kind, max_batch=1, dedupe="shared")
    return wait(ticket, what)
