"""Streamlit side of the Benchmark page: measurements kept per session, figures for them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from kdviz import export, latency
from kdviz.checkpoints import LoadedModel

from .attributions import fingerprint

LATENCY_KEY = "kdviz_latency_results"  # {(path, runtime, batch, threads): Latency}


def results() -> dict:
    return st.session_state.setdefault(LATENCY_KEY, {})


@st.cache_resource(show_spinner="Exporting to ONNX and checking its outputs…", max_entries=16)
def onnx_session(path: str, stamp: str, threads: int):
    """Export once per weights (``stamp`` is their fingerprint); the check runs before any timing."""
    from . import cache

    loaded = cache.model(path)
    data = export.to_onnx(loaded.model, loaded.card.image_size)
    sess = export.session(data, threads)
    diff = export.check_equal(loaded.model, sess, loaded.card.image_size)
    return sess, diff, len(data)


def measure(path: Path, loaded: LoadedModel, name: str, runtime: str, batch: int, threads: int, warmup: int,
            repeats: int, max_seconds: float) -> latency.Latency:
    size = loaded.card.image_size
    if runtime == "eager":
        result = latency.eager(loaded.model, name, batch=batch, image_size=size, threads=threads, warmup=warmup,
                               repeats=repeats, max_seconds=max_seconds)
    else:
        sess, _, _ = onnx_session(str(path), fingerprint(loaded), threads)
        result = latency.onnxruntime(sess, name, batch=batch, image_size=size, threads=threads, warmup=warmup,
                                     repeats=repeats, max_seconds=max_seconds)
    results()[(str(path), runtime, batch, threads)] = result
    return result


def box(measured: list[latency.Latency]) -> go.Figure:
    fig = go.Figure()
    for m in measured:
        fig.add_trace(go.Box(y=m.samples_ms, name=f"{m.name} · {m.runtime} · b{m.batch}", boxpoints="outliers"))
    fig.update_layout(yaxis_title="milliseconds per batch", height=360, showlegend=False,
                      margin=dict(l=10, r=10, t=10, b=10))
    return fig


def confusion(matrix: np.ndarray, names, title: str) -> go.Figure:
    share = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    fig = go.Figure(go.Heatmap(z=share, x=list(names), y=list(names), colorscale="Blues", zmin=0, zmax=1,
                               text=matrix, texttemplate="%{text}",
                               hovertemplate="true %{y}, predicted %{x}: %{text}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title="true")
    fig.update_xaxes(title="predicted")
    fig.update_layout(title=title, height=420, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def per_class(accs: dict[str, np.ndarray], names) -> go.Figure:
    fig = go.Figure([go.Bar(name=k, x=list(names), y=v) for k, v in accs.items()])
    fig.update_layout(barmode="group", yaxis=dict(range=[0, 1], tickformat=".0%"), height=300,
                      margin=dict(l=10, r=10, t=10, b=10))
    return fig


def scatter(points: list[dict], front: np.ndarray) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[p["latency"] for p in points], y=[p["accuracy"] for p in points], mode="markers+text",
                             text=[p["name"] for p in points], textposition="top center",
                             marker=dict(size=11, color=["#d62728" if f else "#7f7f7f" for f in front]),
                             hovertemplate="%{text}<br>%{x:.2f} ms, %{y:.2%}<extra></extra>", name="runs"))
    on = sorted([p for p, f in zip(points, front) if f], key=lambda p: p["latency"])
    if len(on) > 1:
        fig.add_trace(go.Scatter(x=[p["latency"] for p in on], y=[p["accuracy"] for p in on], mode="lines",
                                 line=dict(color="#d62728", dash="dot"), name="Pareto front"))
    fig.update_layout(xaxis_title="latency, batch 1, ms (log)", xaxis_type="log", yaxis_title="test accuracy",
                      yaxis_tickformat=".0%", height=420, margin=dict(l=10, r=10, t=10, b=10))
    return fig
