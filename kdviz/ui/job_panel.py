"""One panel for a background job, shared by every page that starts one: why a single helper
matters is that progress, Stop, the end state and the one rerun after it must behave alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import plotly.graph_objects as go
import streamlit as st

from kdviz.core.jobs import Job


@dataclass(frozen=True)
class PanelText:
    """What the panel says, per kind of job."""

    stop_label: str
    stop_help: str
    done: Callable[[Job], str]
    stopped: Callable[[Job], str]
    failed: Callable[[Job], str]


def show(
    job: Job,
    text: PanelText,
    *,
    key: str,
    chart: Callable[[Job], go.Figure | None],
    live_only: bool = False,
    on_finish: Callable[[Job], None] | None = None,
) -> None:
    """Progress bar, live figure and Stop; refreshes itself every second while the job runs.

    ``key`` prefixes the widget keys (``{key}stop_{id}``); ``on_finish`` runs once when the job has
    ended, just before the single rerun that lets the rest of the page show what the job wrote.
    """

    @st.fragment(run_every=1.0 if job.running else None)
    def panel() -> None:
        st.progress(job.progress, text=f"{job.title}: {job.message}")
        figure = chart(job) if (job.running or not live_only) else None
        if figure is not None:
            st.plotly_chart(figure, key=f"{key}live_{job.id}")
        if job.running:
            if st.button(text.stop_label, key=f"{key}stop_{job.id}", help=text.stop_help):
                job.stop()
                st.toast("Stopping after this step…")
        elif job.status == "done":
            st.success(text.done(job))
        elif job.status == "stopped":
            st.warning(text.stopped(job))
        elif job.status == "failed":
            st.error(text.failed(job))
        flag = f"{key}rerun_after_{job.id}"
        if not job.running and not st.session_state.get(flag):
            st.session_state[flag] = True
            if on_finish is not None:
                on_finish(job)
            st.rerun()

    panel()
