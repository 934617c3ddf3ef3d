"""The compute scheduler every session of a server shares (``kdviz.core.scheduler``).

Most tests build a scheduler without its worker (``start=False``) and serve batches one at a time
with ``serve_next``, so which requests share a call, in which order, is exact. The batch functions
record their calls: "served by one model call" is counted, not timed.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from kdviz.core.jobs import JobManager
from kdviz.core.scheduler import (
    BACKGROUND,
    BATCH_BUDGET_S,
    DEFAULT_ESTIMATE_S,
    INTERACTIVE,
    Cancelled,
    Lighter,
    Scheduler,
)


class Recorder:
    """A batch function that answers each item doubled and remembers every call's items."""

    def __init__(self) -> None:
        self.calls: list[list] = []

    def __call__(self, items):
        self.calls.append(list(items))
        return [2 * i for i in items]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_requests_from_two_sessions_for_one_key_are_served_by_one_call():
    s, run = Scheduler(start=False), Recorder()
    a = s.submit(run, 1, key="teacher", session="A")
    b = s.submit(run, 2, key="teacher", session="B")
    other = s.submit(run, 3, key="student", session="B")
    served = s.serve_next()
    assert run.calls == [[1, 2]]
    assert served.size == 2 and sorted(served.sessions) == ["A", "B"]
    assert (a.result(0), b.result(0)) == (2, 4)
    assert not other.done()  # another key: another call
    s.serve_next()
    assert run.calls == [[1, 2], [3]] and other.result(0) == 6
    assert s.calls == 2


def test_a_batch_is_capped_and_takes_one_request_per_session_in_turn():
    s, run = Scheduler(start=False), Recorder()
    for i in range(6):
        s.submit(run, i, key="k", session="A", max_batch=3)
    s.submit(run, 100, key="k", session="B", max_batch=3)
    s.serve_next()
    assert run.calls == [[0, 100, 1]]  # B's one request is in the first call, not after A's six


def test_round_robin_one_session_cannot_starve_another():
    s, run = Scheduler(start=False), Recorder()
    for i in range(5):  # five different models: five calls
        s.submit(run, i, key=f"a{i}", session="A")
    late = s.submit(run, 100, key="b", session="B")
    s.serve_next()
    s.serve_next()
    assert run.calls == [[0], [100]]  # B goes second, not sixth
    assert late.result(0) == 200
    while s.serve_next():
        pass
    assert [c[0] for c in run.calls] == [0, 100, 1, 2, 3, 4]


def test_interactive_requests_go_before_background_ones():
    s, run = Scheduler(start=False), Recorder()
    s.submit(run, 1, key="study", session="job", priority=BACKGROUND)
    s.submit(run, 2, key="page", session="A", priority=INTERACTIVE)
    s.serve_next()
    assert run.calls == [[2]]
    assert s.waiting() == 1 and not s.interactive_busy()


def test_a_request_whose_session_is_gone_is_dropped_before_it_costs_anything():
    live = {"A", "B"}
    s, run = Scheduler(start=False, alive=lambda session: session in live), Recorder()
    a = s.submit(run, 1, key="k", session="A")
    b = s.submit(run, 2, key="k", session="B")
    only_b = s.submit(run, 3, key="other", session="B")
    live.discard("B")  # the tab was closed
    s.serve_next()
    assert run.calls == [[1]] and a.result(0) == 2
    assert s.serve_next() is None and run.calls == [[1]]  # B's other request never ran
    for ticket in (b, only_b):
        assert ticket.status == "cancelled"
        with pytest.raises(Cancelled):
            ticket.result(0)
    assert s.dropped == 2 and s.waiting() == 0


def test_drop_session_and_cancel():
    s, run = Scheduler(start=False), Recorder()
    a1, a2 = s.submit(run, 1, key="x", session="A"), s.submit(run, 2, key="y", session="A")
    b = s.submit(run, 3, key="x", session="B")
    assert s.drop_session("A") == 2
    b.cancel()
    assert s.serve_next() is None and run.calls == []
    assert {a1.status, a2.status, b.status} == {"cancelled"}


def test_each_waiting_request_reports_its_place_and_an_estimate():
    clock = Clock()
    s, run = Scheduler(start=False, clock=clock), Recorder()
    a = [s.submit(run, i, key=f"a{i}", session="A") for i in range(3)]
    b = s.submit(run, 9, key="b", session="B")
    # the plan is a0, b, a1, a2 (round robin): B has one call before its own
    assert a[0].place() == (0, DEFAULT_ESTIMATE_S)
    assert b.place() == (1, 2 * DEFAULT_ESTIMATE_S)
    assert a[2].place() == (3, 4 * DEFAULT_ESTIMATE_S)

    def slow(items):  # a model call that takes 4 s of the fake clock
        clock.now += 4.0
        return items

    c = s.submit(slow, 0, key="c", session="C")
    while s.serve_next():  # the queue drained
        pass
    assert c.done()
    assert s.estimate("c", size=2) == pytest.approx(8.0)  # learnt: 4 s per image of that key
    d1 = s.submit(slow, 1, key="c", session="D")
    d2 = s.submit(slow, 2, key="c", session="E")
    # 4 s an image is over the batch budget: one image a call, D's answer first, E's after it
    assert d1.place() == (0, pytest.approx(4.0))
    assert d2.place() == (1, pytest.approx(8.0))


def test_a_batch_holds_what_fits_in_the_budget_of_measured_compute():
    clock = Clock()
    s = Scheduler(start=False, clock=clock)
    sizes: list[int] = []

    def timed(per_item: float):
        def run(items):
            sizes.append(len(items))
            clock.now += per_item * len(items)
            return items

        return run

    cheap, dear = timed(BATCH_BUDGET_S / 10.5), timed(BATCH_BUDGET_S / 2.5)
    for key, run in (("cheap", cheap), ("dear", dear)):
        s.submit(run, 0, key=key, session="warm-up")
        s.serve_next()  # learns the key's seconds per image
        sizes.clear()
        for i in range(12):
            s.submit(run, i, key=key, session=f"S{i}")
        while s.serve_next():
            pass
        # cheap: ten fit in the budget; dear: two (never below one, never above max_batch)
        assert sizes == ([10, 2] if key == "cheap" else [2] * 6), key


def test_a_sessions_group_is_served_back_to_back_before_the_turn_passes():
    """Teacher and student maps of one upload are one answer: the first person gets both before
    the second person's teacher map, instead of everyone waiting for the last call."""
    s, run = Scheduler(start=False), Recorder()
    tickets = {}
    for person in "ABC":
        for role in ("teacher", "student"):
            tickets[person, role] = s.submit(
                run, f"{person}-{role}", key=role, session=person, group=(person, "upload"), max_batch=1
            )
    order = []
    while served := s.serve_next():
        order.append((served.sessions[0], served.key))
    assert order == [(p, r) for p in "ABC" for r in ("teacher", "student")]
    # without groups the turn passes after every call: all teachers first
    s2, run2 = Scheduler(start=False), Recorder()
    for person in "ABC":
        for role in ("teacher", "student"):
            s2.submit(run2, 0, key=role, session=person, max_batch=1)
    order2 = []
    while served := s2.serve_next():
        order2.append((served.sessions[0], served.key))
    assert order2[:3] == [("A", "teacher"), ("B", "teacher"), ("C", "teacher")]


def test_same_work_asked_twice_is_done_once():
    s, run = Scheduler(start=False), Recorder()
    a = s.submit(run, 5, key="k", session="A", dedupe="image-1")
    b = s.submit(run, 5, key="k", session="B", dedupe="image-1")
    a.cancel()  # one caller leaving does not drop the other's request
    s.serve_next()
    assert run.calls == [[5]] and b.result(0) == 10


def test_a_newer_request_in_the_same_slot_replaces_the_older():
    s, run = Scheduler(start=False), Recorder()
    old = s.submit(run, 1, key="k", session="A", slot="teacher", dedupe="one")
    new = s.submit(run, 2, key="k", session="A", slot="teacher", dedupe="two")
    again = s.submit(run, 2, key="k", session="A", slot="teacher", dedupe="two")  # a rerun: joined
    s.serve_next()
    assert run.calls == [[2]] and new.result(0) == again.result(0) == 4
    assert old.status == "cancelled"


def test_an_error_reaches_every_caller_of_the_call():
    s = Scheduler(start=False)

    def broken(items):
        raise ValueError("no model")

    a, b = s.submit(broken, 1, key="k", session="A"), s.submit(broken, 2, key="k", session="B")
    s.serve_next()
    for t in (a, b):
        assert t.status == "failed"
        with pytest.raises(ValueError, match="no model"):
            t.result(0)
    # and the worker goes on
    assert s.submit(Recorder(), 1, key="j", session="A") is not None


def test_the_worker_thread_serves_callers_in_other_threads():
    s, run = Scheduler(), Recorder()
    results, threads = {}, []
    for i in range(8):
        t = threading.Thread(
            target=lambda i=i: results.__setitem__(i, s.run(run, i, key="k", session=f"s{i}"))
        )
        threads.append(t)
        t.start()
    for t in threads:
        t.join(10)
    assert results == {i: 2 * i for i in range(8)}
    assert sum(len(c) for c in run.calls) == 8 and len(run.calls) <= 8
    s.close()


def test_a_training_job_yields_to_queued_interactive_requests():
    """The priority gate: a job's should_stop() holds while an interactive request waits."""
    s = Scheduler(start=False)
    manager = JobManager(scheduler=s)
    stepped = threading.Event()
    steps = []

    def work(job):
        while not job.should_stop():
            steps.append(1)
            stepped.set()
            job._stop.wait(0.01)

    ticket = s.submit(Recorder(), 1, key="page", session="A")  # queued before the job starts
    job = manager.start("train", work, owner="A", kind="train")
    assert not stepped.wait(0.5), "the job stepped while an interactive request waited"
    assert steps == []
    s.serve_next()  # the request is served: the job goes on
    assert ticket.result(0) == 2
    assert stepped.wait(10)
    job.stop()
    assert job.wait(10) and job.status == "stopped"
    assert job.yielded_s > 0


def test_a_job_is_not_held_by_background_requests_and_stops_while_waiting():
    s = Scheduler(start=False)
    manager = JobManager(scheduler=s)
    s.submit(Recorder(), 1, key="other", session="job", priority=BACKGROUND)
    assert s.yield_to_interactive(max_wait=5) < 1  # nothing interactive: no wait
    s.submit(Recorder(), 1, key="page", session="A")
    job = manager.start("train", lambda job: job.should_stop(), owner="A", kind="train")
    job.stop()  # a stop ends the wait at once
    assert job.wait(10) and job.status == "stopped"


def test_session_alive_follows_the_streamlit_runtime(monkeypatch):
    from kdviz.ui import compute

    assert compute.session_alive("anything")  # no runtime (AppTest, a script): every session is here

    class FakeRuntime:
        @staticmethod
        def exists():
            return True

        @staticmethod
        def instance():
            return FakeRuntime

        @staticmethod
        def is_active_session(session_id):
            return session_id == "open-tab"

    monkeypatch.setattr(compute, "Runtime", FakeRuntime)
    assert compute.session_alive("open-tab") and not compute.session_alive("closed-tab")


def test_the_waiting_message_names_the_place_and_the_estimate():
    from kdviz.ui.compute import message

    assert message(0, 0.2, "the maps") == "Computing the maps: a moment."
    text = message(3, 7.6, "the maps")
    assert "3 model calls before yours" in text and "about 8 s" in text
    assert "1 model call before" in message(1, 2.0, "x")


# ------------------------------------------------------------------------- attribution batches
@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDVIZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("kdviz.attribution.cache._DEFAULT_CACHE", None)


@pytest.fixture(scope="module")
def teacher():
    from pathlib import Path

    from kdviz.models.checkpoints import load_model

    return load_model(Path(__file__).resolve().parents[1] / "assets" / "digits_teacher")


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(n)]


def test_two_sessions_uploads_for_one_model_are_one_attribution_call(fresh_cache, teacher, monkeypatch):
    from kdviz.attribution import AttributionOptions, attribute, batching

    calls = []
    real = batching.attribute

    def counting(model, x, *args, **kw):
        calls.append(x.shape[0])
        return real(model, x, *args, **kw)

    monkeypatch.setattr(batching, "attribute", counting)
    opts = AttributionOptions(steps=8)
    s = Scheduler(start=False)
    a_img, b_img = _images(2)
    tickets = {}
    for session, image in (("A", a_img), ("B", b_img)):
        req = batching.ImageRequest(teacher, image, opts)
        tickets[session] = s.submit(
            batching.attribute_batch,
            req,
            key=batching.batch_key(req),
            session=session,
            max_batch=batching.max_batch(req),
        )
    s.serve_next()
    assert calls == [2], "the two sessions' images should be one call of two images"
    for session, image in (("A", a_img), ("B", b_img)):
        got = tickets[session].result(0)
        alone = attribute(
            teacher.model,
            teacher.preprocess(image[None]),
            opts,
            mean=teacher.card.mean,
            std=teacher.card.std,
            cache=False,
        )
        # batching changes no map beyond float32 rounding: oneDNN picks its kernels by batch size
        # and thread count (an earlier test may have set those), and IG sums 8 gradients, so the two
        # differ by up to ~1e-4 of the map's range (0.7 % of a near-zero pixel): judged on the range
        scale = float(np.abs(alone.maps).max())
        np.testing.assert_allclose(got.maps, alone.maps, rtol=0, atol=1e-3 * scale)
        assert int(got.predicted[0]) == int(alone.predicted[0])
    # both are cached now: asking again calls no model
    assert batching.cached(batching.ImageRequest(teacher, a_img, opts)) is not None
    assert calls == [2]


def test_draws_that_depend_on_the_batch_are_never_batched(teacher):
    from kdviz.attribution import AttributionOptions, batching

    for opts, alone in (
        (AttributionOptions(), False),
        (AttributionOptions(baseline="blur"), False),
        (AttributionOptions(baseline="noise"), True),
        (AttributionOptions(method="smoothgrad"), True),
    ):
        assert (batching.max_batch(batching.ImageRequest(teacher, _images(1)[0], opts)) == 1) == alone
    # "true" without a label is the predicted class, and batches with it
    a = batching.ImageRequest(teacher, _images(1)[0], AttributionOptions(target="true"))
    b = batching.ImageRequest(teacher, _images(1)[0], AttributionOptions(target="pred"))
    assert batching.batch_key(a) == batching.batch_key(b)


def test_every_model_call_can_be_logged_for_the_benchmarks(tmp_path):
    import json

    from kdviz.ui import compute

    s, run = Scheduler(start=False), Recorder()
    s.on_served = compute._logger(tmp_path / "calls.jsonl")
    s.submit(run, 1, key="k", session="A", kind="attribution")
    s.submit(run, 2, key="k", session="B", kind="attribution")
    s.serve_next()
    (line,) = [json.loads(t) for t in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert (line["kind"], line["size"], line["sessions"]) == ("attribution", 2, 2)


def test_the_lighter_form_is_served_when_others_wait_as_the_call_starts():
    """Two people who ask at the same moment both found the queue empty: the server, deciding as
    each call starts, serves the first the lighter form (the other waits) and the last one as asked."""
    s, run = Scheduler(start=False), Recorder()
    a = s.submit(run, 1, key="full", session="A", kind="maps", max_batch=1, lighter=Lighter("light", 10))
    b = s.submit(run, 2, key="full", session="B", kind="maps", max_batch=1, lighter=Lighter("light", 20))
    first = s.serve_next()
    assert first.lighter and first.key == "light" and a.result(0) == 20
    last = s.serve_next()  # nobody else waits any more
    assert not last.lighter and last.key == "full" and b.result(0) == 4
    assert run.calls == [[10], [2]]


def test_the_lighter_form_needs_enough_other_sessions_of_its_kind():
    """The session's own waiting work, background work, and another kind's do not count; a
    ``from_waiting`` of two needs two other sessions."""
    s, run = Scheduler(start=False), Recorder()
    mine = s.submit(run, 1, key="full", session="A", kind="maps", max_batch=1, lighter=Lighter("light", 10))
    s.submit(run, 5, key="full", session="A", kind="maps", max_batch=1)  # A's own second map
    s.submit(run, 6, key="other", session="B", kind="latency")  # another kind
    s.submit(run, 7, key="train", session="C", kind="maps", priority=BACKGROUND)
    served = s.serve_next()
    assert not served.lighter and mine.result(0) == 2

    two = s.submit(
        run, 1, key="k", session="A", kind="maps", max_batch=1, lighter=Lighter("l", 10, from_waiting=2)
    )
    s.submit(run, 2, key="m", session="B", kind="maps")
    while s.serve_next() is not None and not two.done():
        pass
    assert two.result(0) == 2  # only B waited: fewer than two others


def test_a_caller_who_joins_without_a_lighter_form_gets_the_work_as_asked():
    s, run = Scheduler(start=False), Recorder()
    a = s.submit(run, 1, key="full", session="A", kind="maps", dedupe="img", lighter=Lighter("light", 10))
    b = s.submit(run, 1, key="full", session="B", kind="maps", dedupe="img")  # the same image, as asked
    s.submit(run, 3, key="other", session="C", kind="maps")
    served = s.serve_next()
    assert not served.lighter and a.result(0) == b.result(0) == 2


def test_the_lighter_forms_cost_is_learned_under_its_own_key():
    clock = Clock()

    def slow(items):
        clock.now += 0.1 * len(items)
        return items

    s = Scheduler(start=False, clock=clock)
    s.submit(slow, 1, key="full", session="A", kind="maps", max_batch=1, lighter=Lighter("light", 1))
    waiting = s.submit(slow, 2, key="full", session="B", kind="maps", max_batch=1)
    s.serve_next()
    assert s._per_item == {"light": pytest.approx(0.1)}  # nothing learned about the full form
    assert not waiting.done()


def test_the_wait_a_page_shows_counts_the_form_each_call_will_serve():
    """Three people's maps, each with a lighter form: the first two calls will find others waiting
    (lighter), the last nobody (as asked). The estimate adds the costs of those forms."""
    clock = Clock()

    def light_call(items):  # the lighter form takes 1 s a map of the fake clock
        clock.now += 1.0 * len(items)
        return items

    s = Scheduler(start=False, clock=clock)
    s._per_item.update({"full": 3.0, "light": 1.0})  # what serving both forms taught it
    tickets = [
        s.submit(
            light_call, i, key="full", session=who, kind="maps", max_batch=1, lighter=Lighter("light", i)
        )
        for i, who in enumerate("ABC")
    ]
    assert [t.place() for t in tickets] == [
        (0, pytest.approx(1.0)),
        (1, pytest.approx(2.0)),
        (2, pytest.approx(5.0)),  # C's own call is served as asked: nobody waits behind it
    ]
    s.serve_next()  # A's, lighter: B and C waited
    assert tickets[1].place() == (0, pytest.approx(1.0)) and tickets[2].place() == (1, pytest.approx(4.0))
