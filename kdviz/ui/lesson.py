"""Streamlit side of the Lesson page: its cached computations, its figures, its step navigation."""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch

from kdviz.attribution import make_baseline, render
from kdviz.bench import latency
from kdviz.data import Dataset
from kdviz.data.samples import sample_names
from kdviz.models.checkpoints import LoadedModel
from kdviz.models.evaluate import spread_indices
from kdviz.teaching import lesson

from . import benchmark, compute, samples, urlstate
from .image_source import Picked

STEP_KEY = "lesson_step"
STEPS = {
    1: "What the teacher sees",
    2: "How Integrated Gradients is computed",
    3: "What knowledge distillation passes on",
    4: "The paper's trick: the map on the training image",
    5: "Student against teacher",
    6: "The trade-off: accuracy against speed",
}
#: Step counts the convergence chart measures (each one's map is compared with Captum's 256-step map).
CONVERGENCE_STEPS = (2, 4, 8, 16, 32, 64)
#: A short latency measurement: the lesson shows the order of magnitude, the Benchmark page the details.
QUICK_TIMING: dict[str, Any] = dict(warmup=3, repeats=15, max_seconds=1.0)
#: The thread count timings are keyed by; the Benchmark page's default, so both pages share them.
THREADS = min(2, os.cpu_count() or 1)


# ----------------------------------------------------------------------------------- navigation


def _move(delta: int) -> None:
    st.session_state[STEP_KEY] = min(len(STEPS), max(1, st.session_state.get(STEP_KEY, 1) + delta))


def navigation() -> int:
    """Progress bar, previous and next buttons; the step lives in the URL as ``step``."""
    step = urlstate.bind_int(STEP_KEY, 1, 1, len(STEPS), param="step")
    st.progress(step / len(STEPS), text=f"Step {step} of {len(STEPS)}: {STEPS[step]}")
    back, ahead, _ = st.columns([1, 1, 4])
    back.button(
        "← Previous", key="lesson_prev", on_click=_move, args=(-1,), disabled=step == 1, width="stretch"
    )
    ahead.button(
        "Next →",
        key="lesson_next",
        on_click=_move,
        args=(1,),
        disabled=step == len(STEPS),
        type="primary",
        width="stretch",
    )
    return step


# ----------------------------------------------------------------------------------- computations


def model_input(loaded: LoadedModel, images: np.ndarray) -> torch.Tensor:
    """The old name of ``loaded.preprocess(images)``, kept until ``pages/lesson.py`` moves."""
    return loaded.preprocess(images)


def _baseline(loaded: LoadedModel, x: torch.Tensor, name: str) -> torch.Tensor:
    return make_baseline(x, name, loaded.card.mean, loaded.card.std)


@st.cache_data(show_spinner="Walking the path from the baseline to the image…", max_entries=32)
def path_view(_loaded: LoadedModel, fingerprint: str, image: np.ndarray, baseline: str, target: int):
    """The strip of images along the path and the score at 41 points on it."""
    x = _loaded.preprocess(image)
    base = _baseline(_loaded, x, baseline)
    alphas, frames = lesson.path_strip(x, base, _loaded.card.mean, _loaded.card.std, frames=8)
    return alphas, frames, lesson.path_scores(_loaded.model, x, base, target)


@st.cache_data(show_spinner="Adding up the gradients…", max_entries=64)
def walk(
    _loaded: LoadedModel,
    fingerprint: str,
    image: np.ndarray,
    baseline: str,
    target: int,
    steps: int,
    rule: str,
) -> lesson.RunningSum:
    x = _loaded.preprocess(image)
    return lesson.running_sum(_loaded.model, x, _baseline(_loaded, x, baseline), target, steps, rule)


#: the convergence charts computed in this server process (any session), newest last
_CONVERGENCE: OrderedDict[tuple, tuple[np.ndarray, list[lesson.ConvergencePoint]]] = OrderedDict()
_CONVERGENCE_LOCK = threading.Lock()


def convergence(
    loaded: LoadedModel, fingerprint: str, image: np.ndarray, baseline: str, target: int, rule: str
) -> tuple[np.ndarray, list[lesson.ConvergencePoint]]:
    """The reference map and how far each step count in ``CONVERGENCE_STEPS`` is from it.

    About 400 IG steps in all: on the server's compute queue (after the work of the sessions before
    it), with a bar, and kept for every session of this server once computed."""
    pixels = hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()
    key = (fingerprint, pixels, baseline, target, rule)
    with _CONVERGENCE_LOCK:
        if key in _CONVERGENCE:
            _CONVERGENCE.move_to_end(key)
            return _CONVERGENCE[key]
    what = "Comparing step counts with Captum's 256-step map"
    bar = st.progress(0.0, text=f"{what}…")

    def work(report) -> tuple[np.ndarray, list[lesson.ConvergencePoint]]:
        x = loaded.preprocess(image)
        base = _baseline(loaded, x, baseline)
        reference = lesson.captum_map(loaded.model, x, base, target)
        total = lesson.REFERENCE_STEPS + sum(CONVERGENCE_STEPS)
        report(lesson.REFERENCE_STEPS / total, f"{what}: the reference is done")
        points = lesson.convergence(
            loaded.model,
            x,
            base,
            target,
            CONVERGENCE_STEPS,
            rule,
            reference,
            progress=lambda done, _: report(
                (lesson.REFERENCE_STEPS + done) / total, f"{what}: {done} of {sum(CONVERGENCE_STEPS)} steps"
            ),
        )
        return reference, points

    found = compute.run_with_progress(work, "the convergence chart", bar, kind="lesson")
    bar.empty()
    with _CONVERGENCE_LOCK:
        _CONVERGENCE[key] = found
        while len(_CONVERGENCE) > 32:
            _CONVERGENCE.popitem(last=False)
    return found


def speed(path: Path, loaded: LoadedModel, name: str) -> latency.Latency:
    """Batch-1 eager latency, measured once per session and shared with the Benchmark page."""
    found = benchmark.results().get((str(path), "eager", 1, THREADS))
    return found or benchmark.measure(path, loaded, name, "eager", 1, THREADS, **QUICK_TIMING)


# ----------------------------------------------------------------------------------- figures


def crisp(image: np.ndarray, side: int = 192) -> np.ndarray:
    """A small image enlarged by whole pixels, so 32×32 stays sharp on a projector (224 px as it is)."""
    return render.crisp(image, side)


def path_figure(scores: lesson.PathScores, walked: lesson.RunningSum, class_name: str) -> go.Figure:
    """F along the path, the rule's points on it, and F(baseline) plus the running sum climbing to F(x)."""
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=scores.alphas,
            y=scores.logits,
            mode="lines",
            name=f"score F for '{class_name}'",
            line=dict(color="#1f77b4", width=3),
        )
    )
    fig.add_trace(
        go.Scatter(
            x=walked.alphas,
            y=np.interp(walked.alphas, scores.alphas, scores.logits),
            mode="markers",
            name=f"the {walked.steps} points where the gradient is taken",
            marker=dict(color="#1f77b4", size=9, symbol="circle-open", line=dict(width=2)),
        )
    )
    fig.add_trace(
        go.Scatter(
            x=walked.alphas,
            y=walked.baseline_score + walked.totals,
            mode="lines+markers",
            line=dict(color="#d62728", shape="hv", dash="dot"),
            name="F(baseline) + running sum of the map",
        )
    )
    fig.update_layout(
        xaxis_title="α: 0 is the baseline, 1 the image",
        yaxis_title="logit",
        height=360,
        margin=dict(l=10, r=10, t=10, b=10),
        legend=dict(orientation="h", y=-0.25),
    )
    return fig


def convergence_figure(points: list[lesson.ConvergencePoint], current: int) -> go.Figure:
    from plotly.subplots import make_subplots

    steps = [p.steps for p in points]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("distance to the 256-step map", "|completeness gap|"))
    fig.add_trace(
        go.Scatter(x=steps, y=[p.error for p in points], mode="lines+markers", name="distance"), 1, 1
    )
    fig.add_trace(
        go.Scatter(
            x=steps,
            y=[abs(p.gap) for p in points],
            mode="lines+markers",
            name="|gap|",
            line=dict(color="#d62728"),
        ),
        1,
        2,
    )
    for col in (1, 2):
        fig.add_vline(x=current, line_dash="dot", line_color="#7f7f7f", row=1, col=col)
    fig.update_xaxes(type="log", title_text="steps", tickvals=steps)
    fig.update_yaxes(tickformat=".0%", row=1, col=1)
    fig.update_layout(height=300, showlegend=False, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def soft_targets_figure(
    class_names, one_hot: np.ndarray, plain: np.ndarray, soft: np.ndarray, temperature: float
) -> go.Figure:
    names = list(class_names)
    fig = go.Figure(
        [
            go.Bar(x=names, y=one_hot, name="label (one-hot)", marker_color="#7f7f7f"),
            go.Bar(x=names, y=plain, name="teacher, T = 1", marker_color="#aec7e8"),
            go.Bar(x=names, y=soft, name=f"teacher, T = {temperature:g}", marker_color="#d62728"),
        ]
    )
    fig.update_xaxes(type="category")  # class names such as "3" are names, not numbers
    fig.update_layout(
        barmode="group",
        yaxis=dict(range=[0, 1.02], tickformat=".0%", title="probability"),
        height=360,
        margin=dict(l=10, r=10, t=10, b=10),
        legend=dict(orientation="h", y=-0.2),
    )
    return fig


def test_image(data: Dataset, key: str) -> Picked:
    """A test image by its number (kept in the URL as ``image``)."""
    last = len(data.test) - 1
    if st.session_state.get(key, 0) > last:
        st.session_state[key] = last
    urlstate.bind_int(key, 0, 0, last, param="image")
    index = int(st.number_input(f"Test image (0–{last})", 0, last, step=1, key=key))
    label = int(data.test.labels[index])
    st.caption(f"Test image #{index}, true class **{data.class_names[label]}**.")
    return Picked(data.test.images[index], label, f"test image #{index}")


def training_examples(data: Dataset | None, n: int, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``n`` training images spread over the classes with their labels; without a data set, the
    sample photos prepared for the model and no labels."""
    if data is not None:
        idx = spread_indices(len(data.train), n)
        return data.train.images[idx], data.train.labels[idx]
    photos = [samples.prepared(name, size).model_input for name in sample_names()[:n]]
    return np.stack(photos), None
