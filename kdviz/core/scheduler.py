"""One queue for the torch work of every session of a server: batched, fair, and able to say the wait.

A Streamlit server is one process; each browser session runs its script in a thread of its own.
Left alone, eight sessions uploading at once run eight attributions at once, each with torch's whole
thread pool: the cores are oversubscribed, every session waits for all of them, and nobody is told
why. The :class:`Scheduler` instead runs all that work on **one** worker thread:

- requests with the same **batch key** (a model's fingerprint, the method and its options) are
  served by one call of their batch function, whichever sessions they come from: one call pays a
  model's per-call overhead once (on a GPU, eight images in one batch cost far less than eight
  calls; on a CPU, Integrated Gradients costs about the same per image either way);
- the next batch goes to the session served least recently (round robin), and a batch takes one
  request per session in turn, so one session's many requests cannot starve another's one; a
  session's requests of one *group* (a page's teacher and student maps) are served back to back
  before the turn passes, so that each person gets a whole answer early instead of everyone
  getting theirs with the last call; and a batch holds only what fits in :data:`BATCH_BUDGET_S`
  of measured compute, where batching saves little;
- interactive requests go before background ones; and background *jobs* that run in their own
  threads (training, studies: :mod:`kdviz.core.jobs`) pass :meth:`Scheduler.yield_to_interactive`
  every step, which holds them while interactive work waits or runs (a step is short, so a page
  waits at most about one step for the cores);
- a waiting request reports its place (model calls before its own) and an estimate, from the
  measured seconds per image of its batch key;
- a request may carry a :class:`Lighter` form of its work (IG at fewer steps, say): the worker
  serves that form when, at the moment it starts the call, other sessions' work of the same kind
  waits. The choice is made then and not when the request is queued, because people who press
  at the same moment all find the queue empty when they look;
- a request whose session is gone (the ``alive`` check says so) is dropped before it costs anything,
  and a session's newer request in the same *slot* replaces its older one still waiting.

The core knows nothing of Streamlit or torch: ``kdviz.ui.compute`` tells it which sessions are
alive, and the batch functions live with the work they batch (``kdviz.attribution.batching``).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Request priorities: lower goes first.
INTERACTIVE, BACKGROUND = 0, 1
#: Seconds per request assumed for a batch key never served before (then the kind's mean, then this).
DEFAULT_ESTIMATE_S = 1.0
#: Weight of the newest measurement in the running estimate of seconds per request.
ESTIMATE_WEIGHT = 0.3
#: The longest a background job waits at one step for interactive work: it still moves on a busy server.
MAX_YIELD_S = 10.0
#: A batch takes no more requests than fit in about this many seconds (from the key's measured cost).
#: On a CPU, IG of eight images in one call costs about as much as eight calls (0.9-1.4x per image,
#: benchmarks/bench_room.py), so a big batch only makes its first callers wait for everyone's maps;
#: where a call is cheap (a GPU, a small model) the batch still fills to its ``max_batch``. At 1 s,
#: eight people uploading at once waited 3.0x one person alone; at 0.4 s, 2.4-2.6x (a 32-step map
#: of the digits models costs 0.25-0.35 s there, so calls hold one image each).
BATCH_BUDGET_S = 0.4

BatchFunction = Callable[[Sequence[Any]], Sequence[Any]]


@dataclass(frozen=True)
class Lighter:
    """The lighter form of a request's work, served while others wait: its own batch ``key`` (so
    its cost is learned apart) and ``item`` for the same batch function."""

    key: Hashable
    item: Any
    #: Other sessions with work of the request's kind waiting, from which the lighter form is served.
    from_waiting: int = 1


class Cancelled(Exception):
    """The request was cancelled, replaced by a newer one, or dropped because its session is gone."""


class Ticket:
    """One caller's handle on a request: wait for it, ask its place and estimate, or cancel it."""

    def __init__(self, scheduler: Scheduler, request: _Request, session: str) -> None:
        self._scheduler = scheduler
        self._request = request
        self.session = session
        self.cancelled = False

    def wait(self, timeout: float | None = None) -> bool:
        """True once the result (or error) is there, or the ticket is cancelled."""
        return self.cancelled or self._request.finished.wait(timeout)

    def done(self) -> bool:
        return self.cancelled or self._request.finished.is_set()

    def result(self, timeout: float | None = None) -> Any:
        """The batch function's answer for this request; its exception is raised here."""
        if not self.wait(timeout):
            raise TimeoutError("the request is still waiting")
        if self.cancelled or self._request.status == "dropped":
            raise Cancelled(self._request.reason or "cancelled")
        if self._request.error is not None:
            raise self._request.error
        return self._request.result

    def cancel(self) -> None:
        """Give the request up; it is removed from the queue once no other caller waits for it."""
        self._scheduler._cancel(self)

    @property
    def status(self) -> str:
        """``waiting``, ``running``, ``done``, ``failed``, ``dropped`` or ``cancelled``."""
        return "cancelled" if self.cancelled else self._request.status

    def place(self) -> tuple[int, float]:
        """(model calls before this request's own, estimated seconds until its answer)."""
        return self._scheduler.place(self)


@dataclass(eq=False)
class _Request:
    id: int
    session: str  # whose turn it counts for: the first submitter's
    key: Hashable
    item: Any
    run: BatchFunction
    priority: int
    max_batch: int
    kind: str
    slot: str | None
    dedupe: Hashable | None
    submitted: float
    group: Hashable | None = None
    lighter: Lighter | None = None
    tickets: list[Ticket] = field(default_factory=list)
    status: str = "waiting"
    result: Any = None
    error: BaseException | None = None
    reason: str = ""
    finished: threading.Event = field(default_factory=threading.Event)

    def live_tickets(self) -> list[Ticket]:
        return [t for t in self.tickets if not t.cancelled]


@dataclass
class Served:
    """What one model call did (the benchmarks and tests read these)."""

    key: Hashable
    kind: str
    sessions: list[str]
    size: int
    seconds: float
    waited: float = 0.0  # seconds the oldest request of the call had waited in the queue
    when: float = field(default_factory=time.time)
    lighter: bool = False  # the requests' lighter forms were served (others were waiting)


class Scheduler:
    """A priority queue of requests, served in batches by one worker thread (started on first use).

    ``alive(session)`` says whether a session still exists (default: always); ``setup`` runs once in
    the worker before its first batch (kdviz sets torch's threads there); ``start=False`` leaves
    the worker unstarted so a test can serve batches one at a time with :meth:`serve_next`.
    """

    def __init__(
        self,
        *,
        alive: Callable[[str], bool] | None = None,
        setup: Callable[[], None] | None = None,
        start: bool = True,
        clock: Callable[[], float] = time.monotonic,
        history: int = 256,
        on_served: Callable[[Served], None] | None = None,
    ) -> None:
        self._alive = alive or (lambda session: True)
        self._setup = setup
        self._autostart = start
        self._clock = clock
        self._history = history
        self.on_served = on_served  # told of every model call (the room benchmark logs them)
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._running: list[_Request] = []
        self._running_since = 0.0
        self._running_estimate = 0.0
        self._order: list[str] = []  # sessions, least recently served first
        self._per_item: dict[Hashable, float] = {}
        self._per_kind: dict[str, float] = {}
        self._ids = itertools.count(1)
        self._worker: threading.Thread | None = None
        self._closed = False
        self.served: list[Served] = []  # the latest model calls, newest last
        self.calls = 0  # model calls since the start
        self.dropped = 0  # requests dropped because their session was gone

    # ------------------------------------------------------------------------------- callers
    def set_alive(self, alive: Callable[[str], bool]) -> None:
        with self._cond:
            self._alive = alive

    def submit(
        self,
        run: BatchFunction,
        item: Any,
        *,
        key: Hashable,
        session: str,
        priority: int = INTERACTIVE,
        max_batch: int = 16,
        kind: str = "work",
        slot: str | None = None,
        dedupe: Hashable | None = None,
        group: Hashable | None = None,
        lighter: Lighter | None = None,
    ) -> Ticket:
        """Queue ``item`` for ``run(items)`` with others of the same ``key`` (``run`` answers one
        result per item, in order). ``dedupe``: a request with the same key and token, waiting or
        running, is joined instead of queued again (two sessions asking for the same image).
        ``slot``: the session's older request in this slot, still waiting, is cancelled.
        ``group``: the session's requests of one group are served one after the other before
        another session's turn (the parts of one answer). ``lighter``: what to serve instead when
        others' work of this kind waits as the call starts (every request of the call must have one)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            if slot is not None:
                for old in list(self._pending):
                    if old.slot == slot and old.status == "waiting":
                        for t in old.live_tickets():
                            if t.session == session and (dedupe is None or old.dedupe != dedupe):
                                self._cancel_locked(t, "replaced by a newer request")
            if dedupe is not None:
                for req in itertools.chain(self._running, self._pending):
                    if req.key == key and req.dedupe == dedupe and req.status in ("waiting", "running"):
                        if lighter is None:  # the joiner wants the work as asked
                            req.lighter = None
                        ticket = Ticket(self, req, session)
                        req.tickets.append(ticket)
                        self._remember(session)
                        return ticket
            req = _Request(
                next(self._ids),
                session,
                key,
                item,
                run,
                priority,
                max(1, max_batch),
                kind,
                slot,
                dedupe,
                self._clock(),
                group,
                lighter,
            )
            ticket = Ticket(self, req, session)
            req.tickets.append(ticket)
            self._pending.append(req)
            self._remember(session)
            self._cond.notify_all()
        if self._autostart:
            self._ensure_worker()
        return ticket

    def run(self, run: BatchFunction, item: Any, **kw: Any) -> Any:
        """Submit and wait for the answer (a caller with nothing to show while it waits)."""
        return self.submit(run, item, **kw).result()

    def drop_session(self, session: str) -> int:
        """Cancel every waiting request of ``session``; the number of tickets cancelled."""
        with self._cond:
            tickets = [t for r in self._pending for t in r.live_tickets() if t.session == session]
            for t in tickets:
                self._cancel_locked(t, "the session is gone")
            return len(tickets)

    def place(self, ticket: Ticket) -> tuple[int, float]:
        """(model calls before the ticket's own, estimated seconds until its answer)."""
        with self._cond:
            req = ticket._request
            now = self._clock()
            remaining = max(0.0, self._running_since + self._running_estimate - now) if self._running else 0.0
            if req in self._running:
                return 0, remaining
            if req.status != "waiting" or ticket.cancelled:
                return 0, 0.0
            ahead, seconds = (1 if self._running else 0), remaining
            plan = self._plan_locked()
            for i, batch in enumerate(plan):
                # as this call starts, the queue holds the calls planned after it
                later = [r for b in plan[i + 1 :] for r in b]
                seconds += self._estimate_locked(self._served_key(batch, later), batch[0].kind, len(batch))
                if req in batch:
                    return ahead, seconds
                ahead += 1
            return ahead, seconds  # not reached: a waiting request is in the plan

    def others_waiting(self, session: str, kind: str) -> int:
        """Other sessions with interactive work of ``kind`` waiting or running: how busy the
        server is for this caller (a page serves lighter work when a room is waiting)."""
        with self._cond:
            return len(self._others_locked(kind, {session}))

    def waiting(self) -> int:
        """Requests waiting (not yet running)."""
        with self._cond:
            return len(self._pending)

    def interactive_busy(self) -> bool:
        """True while interactive work waits or runs: background jobs hold off meanwhile."""
        with self._cond:
            return self._busy_locked()

    def yield_to_interactive(
        self, *, max_wait: float = MAX_YIELD_S, stop: threading.Event | None = None
    ) -> float:
        """Block a background job's thread while interactive work waits or runs, for at most
        ``max_wait`` seconds (so training still moves on a busy server) or until ``stop`` is set;
        the seconds it waited. Costs a lock and a comparison when the queue is empty."""
        start = self._clock()
        with self._cond:
            while self._busy_locked() and not (stop is not None and stop.is_set()):
                left = max_wait - (self._clock() - start)
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.05))
        return self._clock() - start

    def estimate(self, key: Hashable, kind: str = "work", size: int = 1) -> float:
        """Estimated seconds of one call of ``size`` requests of ``key``."""
        with self._cond:
            return self._estimate_locked(key, kind, size)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker after the batch it is running; waiting requests are dropped."""
        with self._cond:
            self._closed = True
            for req in list(self._pending):
                self._finish_dropped(req, "the server is shutting down")
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join(timeout)

    # -------------------------------------------------------------------------------- worker
    def serve_next(self, timeout: float | None = 0.0) -> Served | None:
        """Run the next batch (waiting up to ``timeout`` seconds for one); what it served, or None."""
        with self._cond:
            deadline = None if timeout is None else self._clock() + timeout
            while True:
                self._drop_gone_locked()
                batch = self._next_batch_locked(self._pending, self._order)
                if batch or self._closed:
                    break
                left = None if deadline is None else deadline - self._clock()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left if left is not None else 0.5)
            if not batch:
                return None
            for req in batch:
                self._pending.remove(req)
                req.status = "running"
            light = self._lighten_locked(batch)
            key = batch[0].lighter.key if light and batch[0].lighter else batch[0].key
            items = [r.lighter.item if light and r.lighter else r.item for r in batch]
            self._running = batch
            self._running_since = self._clock()
            self._running_estimate = self._estimate_locked(key, batch[0].kind, len(batch))
            self._served_session(batch[0])
        t0 = self._clock()
        try:
            results = list(batch[0].run(items))
            if len(results) != len(batch):
                raise RuntimeError(
                    f"a batch function answered {len(results)} results for {len(batch)} requests"
                )
            error: BaseException | None = None
        except Exception as exc:  # noqa: BLE001 - every caller of the batch gets it
            results, error = [None] * len(batch), exc
        seconds = self._clock() - t0
        with self._cond:
            for req, res in zip(batch, results, strict=True):
                req.result, req.error = res, error
                req.status = "failed" if error is not None else "done"
                req.finished.set()
            self._running = []
            if error is None:
                self._learn_locked(key, batch[0].kind, seconds / len(batch))
            waited = t0 - min(r.submitted for r in batch)
            sessions = [r.session for r in batch]
            served = Served(key, batch[0].kind, sessions, len(batch), seconds, waited, lighter=light)
            self.calls += 1
            self.served.append(served)
            del self.served[: -self._history]
            self._cond.notify_all()
        if self.on_served is not None:
            try:
                self.on_served(served)
            except Exception:  # noqa: BLE001 - a broken observer must not stop the worker
                pass
        return served

    def _ensure_worker(self) -> None:
        with self._cond:
            if self._worker is not None and self._worker.is_alive():
                return
            self._worker = threading.Thread(target=self._work, name="kdviz-compute", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        if self._setup is not None:
            self._setup()
        while not self._closed:
            self.serve_next(timeout=None)

    # ------------------------------------------------------------------------------ internals
    def _busy_locked(self) -> bool:
        return any(r.priority == INTERACTIVE for r in itertools.chain(self._pending, self._running))

    def _lighten_locked(self, batch: list[_Request]) -> bool:
        """Whether the call about to start serves its requests' lighter forms (the batch is out of
        the queue by now: what waits and runs is everyone else's)."""
        return self._lighter(batch, itertools.chain(self._pending, self._running))

    @staticmethod
    def _lighter(batch: list[_Request], queued: Iterable[_Request]) -> bool:
        """Every request of ``batch`` has a lighter form, and enough other sessions' interactive
        work of its kind is in ``queued``."""
        if not all(r.lighter is not None for r in batch):
            return False
        mine = {t.session for r in batch for t in r.live_tickets()}
        others = _sessions_with(batch[0].kind, queued, exclude=mine)
        return len(others) >= max(r.lighter.from_waiting for r in batch if r.lighter is not None)

    def _served_key(self, batch: list[_Request], queued: Iterable[_Request]) -> Hashable:
        """The key whose cost ``batch`` will take, were ``queued`` waiting as it starts."""
        light = batch[0].lighter
        return light.key if light is not None and self._lighter(batch, queued) else batch[0].key

    def _others_locked(self, kind: str, exclude: set[str]) -> set[str]:
        """Sessions not in ``exclude`` with interactive work of ``kind`` waiting or running."""
        return _sessions_with(kind, itertools.chain(self._pending, self._running), exclude)

    def _remember(self, session: str) -> None:
        if session not in self._order:
            self._order.append(session)

    def _served_session(self, lead: _Request) -> None:
        self._order = self._rotated(self._order, lead, self._pending)
        live = {r.session for r in self._pending} | {lead.session}
        self._order = [s for s in self._order if s in live]  # forget sessions with nothing left

    @staticmethod
    def _rotated(order: list[str], lead: _Request, pending: Sequence[_Request]) -> list[str]:
        """The turn order after serving ``lead``: its session goes last, unless more of its
        group still waits (then it keeps its turn)."""
        more = lead.group is not None and any(
            r.session == lead.session and r.group == lead.group and r is not lead for r in pending
        )
        if more and lead.session in order:
            return order
        return [s for s in order if s != lead.session] + [lead.session]

    def _next_batch_locked(self, pending: list[_Request], order: list[str]) -> list[_Request]:
        """The next call: the best priority's least recently served session, its oldest request's
        key, and then one request of that key per session in turn, up to the key's batch size."""
        if not pending:
            return []
        best = min(r.priority for r in pending)
        rank = {s: i for i, s in enumerate(order)}
        first = min(
            (r for r in pending if r.priority == best),
            key=lambda r: (rank.get(r.session, len(rank)), r.id),
        )
        same = [r for r in pending if r.key == first.key]
        limit = min(r.max_batch for r in same)
        # measured (this key's cost, else its kind's): what fits in the budget, at least one
        per = self._per_item.get(first.key, self._per_kind.get(first.kind))
        if per is not None and per > 0:
            limit = max(1, min(limit, int(BATCH_BUDGET_S / per)))
        by_session: dict[str, list[_Request]] = {}
        for r in sorted(same, key=lambda r: (r.priority, r.id)):
            by_session.setdefault(r.session, []).append(r)
        turns = sorted(by_session, key=lambda s: (s != first.session, rank.get(s, len(rank))))
        batch: list[_Request] = []
        while len(batch) < limit and any(by_session.values()):
            for s in turns:
                if by_session[s] and len(batch) < limit:
                    batch.append(by_session[s].pop(0))
        return batch

    def _plan_locked(self) -> list[list[_Request]]:
        """The batches the worker would serve next, in order, if nothing else arrived."""
        pending, order, plan = list(self._pending), list(self._order), []
        while pending:
            batch = self._next_batch_locked(pending, order)
            plan.append(batch)
            for r in batch:
                pending.remove(r)
            order = self._rotated(order, batch[0], pending)
        return plan

    def _estimate_locked(self, key: Hashable, kind: str, size: int) -> float:
        per = self._per_item.get(key, self._per_kind.get(kind, DEFAULT_ESTIMATE_S))
        return per * size

    def _learn_locked(self, key: Hashable, kind: str, per_item: float) -> None:
        for table, k in ((self._per_item, key), (self._per_kind, kind)):
            old = table.get(k)  # type: ignore[call-overload]
            table[k] = per_item if old is None else (1 - ESTIMATE_WEIGHT) * old + ESTIMATE_WEIGHT * per_item  # type: ignore[index]

    def _drop_gone_locked(self) -> None:
        alive_cache: dict[str, bool] = {}

        def alive(session: str) -> bool:
            if session not in alive_cache:
                try:
                    alive_cache[session] = bool(self._alive(session))
                except Exception:  # noqa: BLE001 - a failing check must not stop the worker
                    alive_cache[session] = True
            return alive_cache[session]

        for req in list(self._pending):
            for t in req.live_tickets():
                if not alive(t.session):
                    t.cancelled = True
                    self.dropped += 1
            if not req.live_tickets():
                self._finish_dropped(req, "the session is gone")

    def _cancel(self, ticket: Ticket) -> None:
        with self._cond:
            self._cancel_locked(ticket, "cancelled")

    def _cancel_locked(self, ticket: Ticket, reason: str) -> None:
        ticket.cancelled = True
        req = ticket._request
        if req.status == "waiting" and not req.live_tickets():
            self._finish_dropped(req, reason)
        self._cond.notify_all()

    def _finish_dropped(self, req: _Request, reason: str) -> None:
        if req in self._pending:
            self._pending.remove(req)
        req.status, req.reason = "dropped", reason
        req.finished.set()


def _sessions_with(kind: str, requests: Iterable[_Request], exclude: set[str]) -> set[str]:
    """Sessions not in ``exclude`` holding a live ticket on interactive work of ``kind``."""
    return {
        t.session
        for r in requests
        if r.kind == kind and r.priority == INTERACTIVE
        for t in r.live_tickets()
        if t.session not in exclude
    }


def cores() -> int:
    """The cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


#: The process's scheduler: the Streamlit server is one process with many sessions.
SCHEDULER = Scheduler()
