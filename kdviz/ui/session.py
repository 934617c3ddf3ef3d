"""What one browser session chose: the data set, the teacher, the student, and who it is.

Everything lives in ``st.session_state``, which Streamlit keeps per browser session, so two people
on one server never see each other's choices or jobs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from kdviz.core.jobs import MANAGER, Job
from kdviz.training.workspace import Workspace

DATA_SOURCE = "kdviz_data_source"
TEACHER = "kdviz_teacher_path"
STUDENT = "kdviz_student_path"
OWNER = "kdviz_session_id"
#: A teacher or student chosen on a page, for the sidebar to apply on the next run.
PENDING = {"teacher": "kdviz_pending_teacher", "student": "kdviz_pending_student"}


def owner() -> str:
    """An id for this browser session, used to keep background jobs apart."""
    if OWNER not in st.session_state:
        st.session_state[OWNER] = uuid.uuid4().hex
    return st.session_state[OWNER]


def start_job(slot: str, title: str, work: Callable[[Job], Any], kind: str) -> Job:
    """Run ``work`` as this session's job in ``slot`` (one running job per slot and session)."""
    job = MANAGER.start(title, work, owner=owner(), kind=kind)
    st.session_state[slot] = job.id
    return job


def current_job(slot: str) -> Job | None:
    """This session's latest job in ``slot``; another session's job is never returned."""
    job_id = st.session_state.get(slot)
    return MANAGER.get(job_id, owner=owner()) if job_id else None


def workspace() -> Workspace:
    return Workspace()


@dataclass
class Selection:
    source: str
    teacher: Path | None
    student: Path | None


def selection() -> Selection:
    teacher = st.session_state.get(TEACHER)
    student = st.session_state.get(STUDENT)
    return Selection(
        st.session_state.get(DATA_SOURCE, "digits"),
        Path(teacher) if teacher else None,
        Path(student) if student else None,
    )


def choose(role: str, path: Path | str) -> None:
    """Make ``path`` this session's teacher or student (the Models page's "use as" buttons).

    The sidebar, drawn before the page, applies it on the next run (the caller reruns): a widget's
    value can only be set before the widget is drawn.
    """
    st.session_state[TEACHER if role == "teacher" else STUDENT] = str(path)
    st.session_state[PENDING[role]] = str(path)
