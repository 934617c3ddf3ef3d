"""Streamlit side of the Benchmark page: its controls, the measurements kept per session, its sections.

The page composes the sections; the numbers come from the library (``kdviz.bench.latency``,
``kdviz.bench.export``, ``kdviz.bench.scorecard``), so ``benchmarks/bench_latency.py`` and
``python -m kdviz eval`` reproduce them headless.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from sklearn.metrics import confusion_matrix

from kdviz.attribution import render
from kdviz.bench import export, latency
from kdviz.bench.scorecard import Entry, cached_predictions, headline, pareto_front
from kdviz.data.base import Dataset
from kdviz.models.checkpoints import LoadedModel
from kdviz.models.evaluate import Predictions, spread_indices
from kdviz.training.workspace import RunInfo

from . import cache, compute

LATENCY_KEY = "kdviz_latency_results"  # {(path, runtime, batch, threads): Latency}
ONNX_CHECKS_KEY = "kdviz_onnx_checks"  # {path: (max |eager − ONNX|, bytes)}
ACCURACY_FOR_KEY = "bench_accuracy_for"  # (split, limit) the accuracy buttons last ran for
RUNTIMES = {"eager": "eager PyTorch", "onnxruntime": "ONNX Runtime"}


def results() -> dict:
    return st.session_state.setdefault(LATENCY_KEY, {})


def onnx_checks() -> dict:
    return st.session_state.setdefault(ONNX_CHECKS_KEY, {})


@st.cache_resource(show_spinner="Exporting to ONNX and checking its outputs…", max_entries=16)
def onnx_session(path: str, stamp: str, threads: int):
    """Export once per weights (``stamp`` is their fingerprint); the check runs before any timing."""
    loaded = cache.model(path)
    data = export.to_onnx(loaded.model, loaded.card.image_size)
    sess = export.session(data, threads)
    diff = export.check_equal(loaded.model, sess, loaded.card.image_size)
    return sess, diff, len(data)


def measure(
    path: Path | str,
    loaded: LoadedModel,
    name: str,
    runtime: str,
    batch: int,
    threads: int,
    warmup: int,
    repeats: int,
    max_seconds: float,
) -> latency.Latency:
    """One measurement, kept in this session under (path, runtime, batch, threads)."""
    size = loaded.card.image_size
    timing: dict[str, Any] = dict(
        batch=batch, image_size=size, threads=threads, warmup=warmup, repeats=repeats, max_seconds=max_seconds
    )
    # timed on the compute thread, alone: no other session's maps share the cores meanwhile
    if runtime == "eager":
        result = compute.run_exclusive(
            lambda: latency.eager(loaded.model, name, **timing), f"{name}'s latency", kind="latency"
        )
    else:
        sess, diff, nbytes = onnx_session(str(path), loaded.fingerprint, threads)
        onnx_checks()[str(path)] = (diff, nbytes)
        result = compute.run_exclusive(
            lambda: latency.onnxruntime(sess, name, **timing), f"{name}'s latency", kind="latency"
        )
    results()[(str(path), runtime, batch, threads)] = result
    return result


# ----------------------------------------------------------------------------------- latency


@dataclass
class LatencySettings:
    batch: int
    threads: int
    warmup: int
    repeats: int
    seconds_per_model: float
    runtimes: list[str]

    @property
    def batches(self) -> list[int]:
        return sorted({1, self.batch})

    @property
    def seconds_per_measurement(self) -> float:
        """The model's budget shared by its measurements, so one model stays within it."""
        return self.seconds_per_model / max(1, len(self.batches) * len(self.runtimes))


def latency_controls() -> LatencySettings:
    cores = os.cpu_count() or 1
    c1, c2, c3, c4, c5 = st.columns(5)
    batch = c1.select_slider(
        "Batch size (besides 1)", [1, 8, 16, 32, 64, 128, 256], value=64, key="bench_batch"
    )
    threads = c2.number_input("Threads", 1, cores, min(2, cores), key="bench_threads")
    warmup = c3.number_input(
        "Warm-up runs",
        0,
        50,
        latency.WARMUP,
        key="bench_warmup",
        help="Untimed calls first; they stop early once they use a quarter of the time.",
    )
    repeats = c4.number_input("Repeats", 3, 5000, latency.REPEATS, key="bench_repeats")
    seconds = c5.number_input(
        "Seconds per model at most",
        1.0,
        60.0,
        latency.SECONDS_PER_MODEL,
        key="bench_seconds",
        help="Shared by the model's runtimes and batch sizes, warm-up included.",
    )
    runtimes = st.multiselect(
        "Runtimes",
        list(RUNTIMES),
        default=list(RUNTIMES),
        format_func=RUNTIMES.__getitem__,
        key="bench_runtimes",
        help="ONNX Runtime runs the exported graph; the export is checked for equal outputs first.",
    )
    busy = latency.busy_message()
    if busy:
        st.warning(busy)
    return LatencySettings(int(batch), int(threads), int(warmup), int(repeats), float(seconds), runtimes)


def run_latency(models: dict[str, LoadedModel], names: dict[str, str], s: LatencySettings) -> None:
    """Every model in every chosen runtime and batch, with a bar; a failed export is said, not raised."""
    jobs = [(p, rt, b) for p in models for rt in s.runtimes for b in s.batches]
    bar = st.progress(0.0)
    failed: set[tuple[str, str]] = set()
    for i, (p, rt, b) in enumerate(jobs):
        bar.progress(i / len(jobs), text=f"{names[p]} · {RUNTIMES[rt]} · batch {b}")
        if (p, rt) in failed:
            continue
        try:
            measure(p, models[p], names[p], rt, b, s.threads, s.warmup, s.repeats, s.seconds_per_measurement)
        except export.ExportError as exc:
            failed.add((p, rt))
            st.error(f"{names[p]}: {exc}. Its eager latency is still measured.")
    bar.progress(1.0, text="done")


def show_latency(
    models: dict[str, LoadedModel], names: dict[str, str], threads: int
) -> list[latency.Latency]:
    measured = [r for (p, rt, b, t), r in results().items() if p in models and t == threads]
    if not measured:
        st.caption("Press *Measure latency*: each model takes a few seconds.")
        return measured
    st.plotly_chart(box(measured), key="bench_box")
    st.dataframe(pd.DataFrame([m.summary() for m in measured]), hide_index=True, key="bench_latency_table")
    checks = [
        f"{names[p]}: max |difference| {diff:.1e}, {nbytes / 2**20:.2f} MB"
        for p, (diff, nbytes) in onnx_checks().items()
        if p in models
    ]
    if checks:
        st.caption(
            "ONNX export checked against PyTorch on random images before timing: " + "; ".join(checks) + "."
        )
    return measured


# ----------------------------------------------------------------------------------- accuracy


def accuracy_controls(data: Dataset) -> tuple[str, int]:
    a1, a2 = st.columns(2)
    split = a1.selectbox("Split", ["test", "train"], key="bench_split")
    n_split = len(data.split(split))
    limit = a2.number_input(
        f"Images (of {n_split:,}; spread over the classes)",
        10,
        n_split,
        min(n_split, 2000),
        key="bench_limit",
    )
    return split, int(limit)


def predictions(
    models: dict[str, LoadedModel],
    data: Dataset,
    split: str,
    limit: int,
    bar=None,
    names: dict[str, str] | None = None,
) -> dict[str, Predictions]:
    """Each model's predictions (computed once per weights, data and slice; then read from disk)."""
    out = {}
    for i, (p, loaded) in enumerate(models.items()):
        progress = None
        if bar is not None:

            def progress(done, total, i=i, p=p):
                bar.progress((i + done / total) / len(models), text=f"{names[p]}: {done}/{total} batches")

        out[p] = cached_predictions(loaded, data, split, limit, progress=progress)
    return out


def run_accuracy(
    models: dict[str, LoadedModel], names: dict[str, str], data: Dataset, split: str, limit: int
) -> None:
    bar = st.progress(0.0)
    predictions(models, data, split, limit, bar, names)
    bar.progress(1.0, text="done")
    st.session_state[ACCURACY_FOR_KEY] = (split, limit)


def show_accuracy(
    models: dict[str, LoadedModel], names: dict[str, str], data: Dataset, split: str, limit: int
) -> dict[str, Predictions]:
    """Overall and per-class accuracy, confusion matrices side by side, agreement and disagreements."""
    if st.session_state.get(ACCURACY_FOR_KEY) != (split, limit):
        st.caption(
            "Press *Measure accuracy*: results are kept per model and data, so a second time is instant."
        )
        return {}
    preds = predictions(models, data, split, limit)
    classes = list(data.class_names)
    for col, (p, pr) in zip(st.columns(len(preds)), preds.items(), strict=True):
        col.metric(names[p], f"{pr.accuracy:.2%}", help=f"{len(pr.labels):,} images of the {split} split")
    st.plotly_chart(
        per_class({names[p]: pr.per_class_accuracy(len(classes)) for p, pr in preds.items()}, classes),
        key="bench_per_class",
    )
    pair = list(preds)[:2]
    for col, p in zip(st.columns(len(pair)), pair, strict=True):
        matrix = confusion_matrix(preds[p].labels, preds[p].predicted, labels=range(len(classes)))
        col.plotly_chart(confusion(matrix, classes, names[p]), key=f"bench_cm_{p}")
    if len(pair) == 2:
        _disagreements(preds[pair[0]], preds[pair[1]], data, split, limit, classes)
    return preds


def _disagreements(
    first: Predictions, second: Predictions, data: Dataset, split: str, limit: int, classes
) -> None:
    agree = float((first.predicted == second.predicted).mean())
    st.metric(
        "Teacher and student agree on", f"{agree:.2%}", help="share of images with the same predicted class"
    )
    images = data.split(split).images
    idx = spread_indices(len(images), limit)
    disagree = np.flatnonzero(first.predicted != second.predicted)[:12]
    if len(disagree):
        st.caption("Where they disagree (true → teacher / student):")
        cols = st.columns(6)
        for k, j in enumerate(disagree):
            cols[k % 6].image(
                render.crisp(images[idx[j]], 96),
                caption=f"{classes[first.labels[j]]} → {classes[first.predicted[j]]} / "
                f"{classes[second.predicted[j]]}",
            )


# ----------------------------------------------------------------------------------- headline


def entries(
    models: dict[str, LoadedModel],
    names: dict[str, str],
    teacher: str,
    preds: dict[str, Predictions],
    s: LatencySettings,
) -> list[Entry]:
    """The headline table's inputs: the card's sizes, measured accuracy (else the card's), latencies."""
    out = []
    for p, loaded in models.items():
        stats = loaded.card.stats or {}
        lat1 = results().get((p, "eager", 1, s.threads))
        latb = results().get((p, "eager", s.batch, s.threads))
        onnx1 = results().get((p, "onnxruntime", 1, s.threads))
        accuracy = preds[p].accuracy if p in preds else loaded.card.test_accuracy
        out.append(
            Entry(
                names[p],
                "teacher" if p == teacher else "student",
                stats.get("params", 0),
                stats.get("size_bytes", 0),
                stats.get("macs", 0),
                accuracy,
                lat1.median_ms if lat1 else None,
                latb.median_ms if latb else None,
                onnx1.median_ms if onnx1 else None,
            )
        )
    return out


def show_headline(rows: list[dict], measured: list[latency.Latency], accuracy_from: str) -> None:
    table = pd.DataFrame(rows)
    ratio = st.column_config.NumberColumn(format="%.2f")
    config = {
        "accuracy": st.column_config.NumberColumn(format="percent"),
        "teacher's accuracy kept": st.column_config.NumberColumn(format="percent"),
    }
    config.update({c: ratio for c in table.columns if "×" in c and c != "compression ×"})
    st.dataframe(table, hide_index=True, key="bench_headline", column_config=config)
    st.caption(
        f"Accuracy: {accuracy_from}. Latency: medians of this session's runs, eager PyTorch unless marked "
        "ONNX; speed-ups divide the teacher's median by the model's."
    )
    d1, d2 = st.columns(2)
    d1.download_button(
        "Download CSV", table.to_csv(index=False), "kdviz-benchmark.csv", "text/csv", key="bench_csv"
    )
    payload = {"rows": rows, "accuracy": accuracy_from, "latency": [m.summary() for m in measured]}
    d2.download_button(
        "Download JSON",
        json.dumps(payload, indent=2, default=str),
        "kdviz-benchmark.json",
        "application/json",
        key="bench_json",
    )


def comparison(
    models: dict[str, LoadedModel],
    names: dict[str, str],
    teacher: str,
    preds: dict[str, Predictions],
    s: LatencySettings,
    split: str,
    limit: int,
) -> tuple[list[dict], str]:
    rows = headline(entries(models, names, teacher, preds, s), batch=s.batch)
    where = (
        f"measured here on {limit:,} images of the {split} split"
        if preds
        else "from each model's card (its test accuracy when trained)"
    )
    return rows, where


# ----------------------------------------------------------------------------------- every run


def show_every_run(choices: list[RunInfo], threads: int) -> None:
    """Speed against accuracy of each run with a measured latency and a test accuracy; Pareto front red."""
    points = []
    for c in choices:
        m = results().get((str(c.path), "eager", 1, threads))
        acc = c.card.test_accuracy if c.card else None
        if m is not None and acc is not None:
            points.append({"name": c.name, "latency": m.median_ms, "accuracy": acc})
    missing = [c for c in choices if (str(c.path), "eager", 1, threads) not in results()]
    if missing and st.button(
        f"Measure the {len(missing)} unmeasured run(s) (batch 1, eager)", key="bench_measure_all"
    ):
        bar = st.progress(0.0)
        for i, c in enumerate(missing):
            bar.progress(i / len(missing), text=c.name)
            measure(c.path, cache.model(c.path), c.name, "eager", 1, threads, 3, 20, 2.0)
        st.rerun()
    if points:
        front = pareto_front([p["latency"] for p in points], [p["accuracy"] for p in points])
        st.plotly_chart(scatter(points, front), key="bench_scatter")
        st.caption("Red: the Pareto front, where no other run is both faster and more accurate.")
    else:
        st.caption(
            "Measure latency first: the chart shows every run with a measured latency and a test accuracy."
        )


# ----------------------------------------------------------------------------------- figures


def box(measured: list[latency.Latency]) -> go.Figure:
    fig = go.Figure()
    for m in measured:
        fig.add_trace(
            go.Box(y=m.samples_ms, name=f"{m.name} · {m.runtime} · b{m.batch}", boxpoints="outliers")
        )
    fig.update_layout(
        yaxis_title="milliseconds per batch",
        yaxis_type="log",
        height=360,
        showlegend=False,
        margin=dict(l=10, r=10, t=10, b=10),
    )
    return fig


def confusion(matrix: np.ndarray, names, title: str) -> go.Figure:
    share = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    fig = go.Figure(
        go.Heatmap(
            z=share,
            x=list(names),
            y=list(names),
            colorscale="Blues",
            zmin=0,
            zmax=1,
            text=matrix,
            texttemplate="%{text}",
            hovertemplate="true %{y}, predicted %{x}: %{text}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", title="true")
    fig.update_xaxes(title="predicted")
    fig.update_layout(title=title, height=420, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def per_class(accs: dict[str, np.ndarray], names) -> go.Figure:
    fig = go.Figure([go.Bar(name=k, x=list(names), y=v) for k, v in accs.items()])
    fig.update_layout(
        barmode="group",
        yaxis=dict(range=[0, 1], tickformat=".0%"),
        height=300,
        margin=dict(l=10, r=10, t=10, b=10),
    )
    return fig


def scatter(points: list[dict], front: np.ndarray) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[p["latency"] for p in points],
            y=[p["accuracy"] for p in points],
            mode="markers+text",
            text=[p["name"] for p in points],
            textposition="top center",
            marker=dict(size=11, color=["#d62728" if f else "#7f7f7f" for f in front]),
            hovertemplate="%{text}<br>%{x:.2f} ms, %{y:.2%}<extra></extra>",
            name="runs",
        )
    )
    on = sorted([p for p, f in zip(points, front, strict=True) if f], key=lambda p: p["latency"])
    if len(on) > 1:
        fig.add_trace(
            go.Scatter(
                x=[p["latency"] for p in on],
                y=[p["accuracy"] for p in on],
                mode="lines",
                line=dict(color="#d62728", dash="dot"),
                name="Pareto front",
            )
        )
    fig.update_layout(
        xaxis_title="latency, batch 1, ms (log)",
        xaxis_type="log",
        yaxis_title="test accuracy",
        yaxis_tickformat=".0%",
        height=420,
        margin=dict(l=10, r=10, t=10, b=10),
    )
    return fig
