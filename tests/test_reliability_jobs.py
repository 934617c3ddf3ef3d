"""Page work that outlives a rerun, and two people on one server.

Training started on the Models page runs in a worker thread (kdviz.core.jobs): it survives switching to
another page and back, reports its progress to the page, and its Stop button ends it after the
current step with the finished epochs kept. Two AppTest sessions (two session states in one
process, as two browser tabs on one server) share nothing but the workspace: one trains while the
other browses attributions, unblocked, and neither sees or can stop the other's job or changes the
other's choices.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from apptest_helpers import assert_clean
from streamlit.testing.v1 import AppTest

from kdviz.core.jobs import MANAGER, Job
from kdviz.ui import session, training

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
JOB_TIMEOUT_S = 240

pytestmark = pytest.mark.slow


# ----------------------------------------------------------------------------------- helpers


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=240).run()
    at.switch_page(page).run()
    assert_clean(at)
    return at


def start_training(at: AppTest, name: str, epochs: int) -> Job:
    """Fill the Train tab for a tiny student and press Start; the job this session now owns."""
    at.radio(key="train_role").set_value("student").run()
    at.selectbox(key="train_arch_student_default").set_value("mnv2_student_12x").run()
    at.select_slider(key="train_width_student").set_value(0.25).run()
    at.text_input(key="train_name_student_mnv2_student_12x").set_value(name).run()
    at.number_input(key="train_epochs").set_value(epochs).run()
    at.number_input(key="train_limit").set_value(64).run()
    at.button(key="train_start").click().run()
    assert_clean(at)
    jobs = MANAGER.list(owner=at.session_state[session.OWNER], kind="train")
    assert len(jobs) == 1 and jobs[0].title == f"train {name}"
    return jobs[0]


def wait_until(condition, what: str, timeout: float = JOB_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.1)


def epochs_done(job: Job) -> int:
    return len(job.data.get("history") or [])


def progress_bars(at: AppTest) -> list:
    return list(at.get("progress"))


def stop_buttons(at: AppTest) -> list[str]:
    return [b.key for b in at.button if (b.key or "").startswith("stop_")]


def panels(at: AppTest) -> set[str]:
    return {
        c.subheader[0].value
        for c in at.columns
        if len(c.subheader) and c.subheader[0].value in ("Teacher", "Student")
    }


@pytest.fixture(autouse=True)
def _no_job_left_running():
    """A failing test must not leave a training thread behind for the next one."""
    yield
    for job in MANAGER.running():
        job.stop()
        job.wait(60)


@pytest.fixture(autouse=True)
def _fresh_attribution_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDVIZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("kdviz.attribution.cache._DEFAULT_CACHE", None)


# ----------------------------------------------------------------------------------- one session


def test_training_survives_switching_pages_and_finishes():
    at = open_page("pages/models.py")
    job = start_training(at, "while-away", epochs=3)
    wait_until(lambda: job.progress > 0, "first step")
    before = job.progress

    at.switch_page("pages/attributions.py").run()  # the person looks elsewhere; the page reruns
    assert_clean(at)
    assert panels(at) == {"Teacher", "Student"}
    assert MANAGER.get(job.id) is job and job.status in ("running", "done")

    at.switch_page("pages/models.py").run()  # and comes back: the same job, with its progress
    assert_clean(at)
    assert at.session_state[training.JOB_KEY] == job.id
    bars = progress_bars(at)
    assert len(bars) == 1 and bars[0].text.startswith("train while-away: ")
    assert bars[0].value >= int(before * 100)

    wait_until(lambda: not job.running, "end of training")
    assert job.status == "done", job.error
    at.run()  # the page sees the finished job, chooses the new run and reruns once
    at.run()
    assert_clean(at)
    assert any("Training finished" in s.value for s in at.success)
    history = json.loads((Path(os.environ["KDVIZ_HOME"]) / "while-away" / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert Path(at.sidebar.selectbox(key="sidebar_student").value).name == "while-away"


def test_stop_ends_training_after_the_current_step_and_keeps_finished_epochs():
    at = open_page("pages/models.py")
    job = start_training(at, "to-stop", epochs=200)
    wait_until(lambda: epochs_done(job) >= 1, "first finished epoch")
    at.run()
    assert stop_buttons(at) == [f"stop_{job.id}"]
    at.button(key=f"stop_{job.id}").click().run()
    assert not at.exception
    wait_until(lambda: not job.running, "stop", timeout=60)
    assert job.status == "stopped"
    at.run()
    assert not at.exception
    assert any(w.value.startswith("Stopped after") for w in at.warning), [w.value for w in at.warning]
    assert not stop_buttons(at)

    run = Path(os.environ["KDVIZ_HOME"]) / "to-stop"
    kept = json.loads((run / "history.json").read_text())
    card = json.loads((run / "card.json").read_text())
    assert 1 <= len(kept) < 200 and card["metrics"]["complete"] is False
    assert card["metrics"]["epochs_done"] == len(kept)
    runs = next(t for t in at.tabs if t.label == "Runs").dataframe[0].value
    assert runs[runs["run"] == "to-stop"].iloc[0]["status"] == f"stopped at epoch {len(kept)}/200"


# ----------------------------------------------------------------------------------- two sessions


def test_two_sessions_one_training_one_browsing_share_no_state():
    trainer = open_page("pages/models.py")
    job = start_training(trainer, "shared-server", epochs=200)
    wait_until(lambda: job.progress > 0, "first step")

    browser = open_page("pages/attributions.py")  # a second person, while the first one trains
    assert panels(browser) == {"Teacher", "Student"}
    shown = [
        int(b.key.removeprefix("attr_pick_"))
        for b in browser.button
        if (b.key or "").startswith("attr_pick_")
    ]
    browser.slider(key="attr_steps").set_value(8)
    browser.button(key=f"attr_pick_{shown[3]}").click().run()
    assert_clean(browser)
    assert re.fullmatch(
        rf"Test image #{shown[3]}, true class \*\*.+\*\*\.",
        next(c.value for c in browser.caption if c.value.startswith("Test image #")),
    )
    assert panels(browser) == {"Teacher", "Student"}
    assert job.running, "the browsing session had to wait for the training to end"

    # the browsing session sees no job, even when handed the other's job id
    browser.switch_page("pages/models.py").run()
    assert_clean(browser)
    assert training.JOB_KEY not in browser.session_state
    assert not progress_bars(browser) and not stop_buttons(browser)
    browser.session_state[training.JOB_KEY] = job.id
    browser.run()
    assert_clean(browser)
    assert not progress_bars(browser) and not stop_buttons(browser)
    assert browser.session_state[session.OWNER] != trainer.session_state[session.OWNER]
    assert MANAGER.list(owner=browser.session_state[session.OWNER]) == []

    # the trainer still sees its job, stops it, and makes the stopped run its student
    trainer.run()
    assert stop_buttons(trainer) == [f"stop_{job.id}"]
    wait_until(lambda: epochs_done(job) >= 1, "first finished epoch")
    trainer.button(key=f"stop_{job.id}").click().run()
    wait_until(lambda: not job.running, "stop", timeout=60)
    assert job.status == "stopped"
    trainer.run()
    trainer.selectbox(key="runs_pick").set_value("shared-server").run()
    trainer.button(key="runs_use_student").click().run()
    assert not trainer.exception
    assert Path(trainer.sidebar.selectbox(key="sidebar_student").value).name == "shared-server"

    # ... which changes nothing for the other person
    browser.switch_page("pages/attributions.py").run()
    assert_clean(browser)
    assert Path(browser.sidebar.selectbox(key="sidebar_student").value).name == "digits_student"
    assert browser.slider(key="attr_steps").value == 8 and trainer.session_state["train_epochs"] == 200
    assert "attr_steps" not in trainer.session_state and "train_epochs" not in browser.session_state
