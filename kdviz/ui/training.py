"""Start a training run as a background job and watch it from any page rerun."""

from __future__ import annotations

import streamlit as st

from kdviz.jobs import Job
from kdviz.recipes import TrainRequest, train_run
from kdviz.train import TrainEvent

from . import session
from .charts import training_curves

JOB_KEY = "kdviz_train_job"


def start(request: TrainRequest) -> Job:
    """Train in a worker thread: the page stays responsive, switching pages does not stop it."""
    workspace = session.workspace()

    def work(job: Job):
        from kdviz.data import load_dataset

        job.report(0.0, "loading data…", role=request.role)
        data = load_dataset(request.dataset)

        def on_event(event: TrainEvent) -> None:
            last = event.history[-1] if event.history else None
            msg = f"epoch {event.epoch}/{event.epochs}, step {event.step}/{event.steps}, loss {event.loss:.3f}"
            if last is not None:
                msg += f" · last test accuracy {last.test_acc:.2%}"
            job.report(event.fraction, msg, history=list(event.history))

        run_dir, result = train_run(request, workspace=workspace, data=data, callback=on_event,
                                    should_stop=job.should_stop)
        epochs = len(result.history)
        job.report(message=f"{epochs} epoch{'s' if epochs != 1 else ''} in `{run_dir.name}`", run_dir=str(run_dir))
        return run_dir

    return session.start_job(JOB_KEY, f"train {request.name}", work, kind="train")


def current() -> Job | None:
    return session.current_job(JOB_KEY)


def show(job: Job) -> None:
    """Progress bar, live curves, a stop button; reruns itself every second while the job runs."""

    @st.fragment(run_every=1.0 if job.running else None)
    def panel() -> None:
        st.progress(job.progress, text=f"{job.title}: {job.message}")
        history = job.data.get("history") or []
        if history:
            st.plotly_chart(training_curves({job.title.removeprefix("train "): history}), key=f"live_{job.id}")
        if job.running:
            if st.button("Stop training", key=f"stop_{job.id}", help="Ends after the current step; finished epochs are kept."):
                job.stop()
                st.toast("Stopping after this step…")
        elif job.status == "done":
            st.success(f"Training finished in {job.elapsed:.0f} s: {job.message}, now the sidebar's {job.data.get('role', 'model')}.")
        elif job.status == "stopped":
            st.warning(f"Stopped after {job.message}. Start the same run name again to resume it.")
        elif job.status == "failed":
            st.error(f"Training failed: {job.error}")
        if not job.running and st.session_state.get(f"rerun_after_{job.id}") is None:
            st.session_state[f"rerun_after_{job.id}"] = True
            if job.data.get("run_dir") and job.status == "done":
                session.choose(job.data["role"], job.data["run_dir"])  # a finished run is the one to look at
            st.rerun()  # once, so the sidebar lists and selects the new run

    panel()
