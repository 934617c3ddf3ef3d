"""Start a training run as a background job and watch it from any page rerun."""

from __future__ import annotations

import dataclasses
import time

import streamlit as st

from kdviz.core.jobs import Job
from kdviz.training.distillation import DistillRequest, distill_student
from kdviz.training.loop import TrainEvent
from kdviz.training.workflows import TrainRequest, train_run

from . import job_panel, session
from .charts import training_curves

JOB_KEY = "kdviz_train_job"
REFUSED_KEY = "kdviz_train_refused"  # a request refused because its run has another writer


def start_unless_held(request: TrainRequest) -> bool:
    """Start ``request`` unless its run is being written by another process or session.

    A run of that name being trained elsewhere must not be "resumed" here: both would write the
    same folder. Refused, the request is kept with a free name to offer (see :func:`show_refused`).
    """
    workspace = session.workspace()
    holder = workspace.writer(request.name)
    if holder is None:
        st.session_state.pop(REFUSED_KEY, None)
        start(request)
        return True
    st.session_state[REFUSED_KEY] = (request, holder.describe(), workspace.unique_name(request.name))
    return False


def show_refused() -> None:
    """The error box of a refused request: who holds the run, and a button to train under a free name."""
    refused = st.session_state.get(REFUSED_KEY)
    if refused is None:
        return
    request, holder, free = refused
    st.error(
        f"The run `{request.name}` is being written by {holder}. Resuming it here would mix two "
        f"trainings in one folder: wait for it to finish, or train under another name."
    )
    c1, c2 = st.columns(2)
    if c1.button(f"Train as `{free}` instead", type="primary", key="train_refused_rename"):
        st.session_state.pop(REFUSED_KEY, None)
        if start_unless_held(dataclasses.replace(request, name=free)):
            st.rerun()
    if c2.button("Dismiss", key="train_refused_dismiss"):
        st.session_state.pop(REFUSED_KEY, None)
        st.rerun()


def start(request: TrainRequest) -> Job:
    """Train in a worker thread: the page stays responsive, switching pages does not stop it."""
    workspace = session.workspace()

    def work(job: Job):
        from kdviz.data import load_dataset

        job.report(0.0, "loading data…", role=request.role)
        data = load_dataset(request.dataset)

        started = time.monotonic()
        first: dict[str, float] = {}
        precision = request.config.precision
        if precision == "bfloat16":
            precision += " autocast (native on this CPU)"

        def on_event(event: TrainEvent) -> None:
            last = event.history[-1] if event.history else None
            msg = (
                f"epoch {event.epoch}/{event.epochs}, step {event.step}/{event.steps}, loss {event.loss:.3f}"
            )
            if last is not None:
                msg += f" · last test accuracy {last.test_acc:.2%}"
            first.setdefault("fraction", event.fraction)  # a resumed run starts part way
            msg += f" · {precision}" + time_left(
                time.monotonic() - started, event.fraction, first["fraction"]
            )
            job.report(event.fraction, msg, history=list(event.history))

        if request.pretrained:
            where = (
                "downloading them" if request.pretrained == "download" else f"reading {request.pretrained}"
            )
            job.report(0.0, f"pretrained weights: {where}…", role=request.role)

        def on_download(done: int, total: int | None) -> None:
            size = f"{done / 1e6:.1f} of {total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
            job.report(done / total if total else None, f"pretrained weights: downloading, {size}")

        lock = f"the dashboard's Models page, training {request.name}"
        if isinstance(request, DistillRequest):
            outcome = _distil(job, request, data, workspace, on_event, on_download, lock)
            if outcome.result is None:  # stopped while the teacher's IG maps were being made
                job.report(message="stopped while the teacher's IG maps were made; they resume next time")
                return outcome.run_dir
            run_dir, result = outcome.run_dir, outcome.result
        else:
            run_dir, result = train_run(
                request,
                workspace=workspace,
                data=data,
                callback=on_event,
                should_stop=job.should_stop,
                lock_description=lock,
                download_progress=on_download,
            )
        epochs = len(result.history)
        job.report(
            message=f"{epochs} epoch{'s' if epochs != 1 else ''} in `{run_dir.name}`", run_dir=str(run_dir)
        )
        return run_dir

    return session.start_job(JOB_KEY, f"train {request.name}", work, kind="train")


def _distil(job: Job, request: DistillRequest, data, workspace, on_event, on_download, lock: str):
    """A student distilled from its teacher, as the CLI's ``distill`` does; the teacher's IG maps
    (IG arms) are made first, with their own progress."""
    from kdviz.models import load_model

    teacher = load_model(request.teacher or request.config.teacher, data=data)

    def ig_progress(done: int, total: int, rate: float) -> None:
        job.report(done / max(total, 1), f"the teacher's IG maps: {done:,}/{total:,} ({rate:.0f} images/s)")

    return distill_student(
        request,
        teacher,
        data,
        workspace=workspace,
        ig_progress=ig_progress,
        callback=on_event,
        should_stop=job.should_stop,
        lock_description=lock,
        download_progress=on_download,
    )


def time_left(elapsed: float, fraction: float, start: float = 0.0) -> str:
    """' · about N min left': the rate measured since ``start`` (the fraction done when this call
    began), carried to the end, evaluations included."""
    done = fraction - start
    if done <= 0.02 or fraction >= 1.0:
        return ""
    left = elapsed * (1.0 - fraction) / done
    return f" · about {left / 60:.0f} min left" if left >= 90 else f" · about {left:.0f} s left"


def current() -> Job | None:
    return session.current_job(JOB_KEY)


def _chart(job: Job):
    history = job.data.get("history") or []
    return training_curves({job.title.removeprefix("train "): history}) if history else None


def _choose_finished(job: Job) -> None:
    if job.data.get("run_dir") and job.status == "done":
        session.choose(job.data["role"], job.data["run_dir"])  # a finished run is the one to look at


TEXT = job_panel.PanelText(
    stop_label="Stop training",
    stop_help="Ends after the current step; finished epochs are kept.",
    done=lambda job: (
        f"Training finished in {job.elapsed:.0f} s: {job.message}, "
        f"now the sidebar's {job.data.get('role', 'model')}."
    ),
    stopped=lambda job: f"Stopped after {job.message}. Start the same run name again to resume it.",
    failed=lambda job: f"Training failed: {job.error}",
)


def show(job: Job) -> None:
    """Progress bar, live curves, a stop button; the finished run becomes the sidebar's choice."""
    job_panel.show(job, TEXT, key="", chart=_chart, on_finish=_choose_finished)
