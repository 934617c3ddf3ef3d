"""Plotly figures the pages share."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kdviz.training.loop import EpochRecord


def training_curves(histories: dict[str, Sequence[EpochRecord]], title: str = "") -> go.Figure:
    """Loss (left) and accuracy (right) per epoch, one colour per run, train dashed, test solid."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    for i, (name, history) in enumerate(histories.items()):
        if not history:
            continue
        colour = palette[i % len(palette)]
        epochs = [r.epoch for r in history]
        for col, measure in enumerate(("loss", "acc"), 1):
            for split, dash in (("train", "dash"), ("test", None)):
                fig.add_trace(
                    go.Scatter(
                        x=epochs,
                        y=[getattr(r, f"{split}_{measure}") for r in history],
                        mode="lines+markers",
                        name=f"{name} {split}",
                        line=dict(color=colour, dash=dash),
                        legendgroup=name,
                        showlegend=col == 1,
                    ),
                    row=1,
                    col=col,
                )
    fig.update_xaxes(title_text="epoch", dtick=1 if len(next(iter(histories.values()), [])) < 15 else None)
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    fig.update_layout(
        title=title or None,
        height=340,
        margin=dict(l=10, r=10, t=40, b=10),
        legend=dict(orientation="h", y=-0.25),
    )
    return fig


THUMBNAIL = 64


def sample_grid(
    images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], per_class: int = 6
) -> np.ndarray:
    """A mosaic, one row per class, of the first ``per_class`` images of each (uint8 HWC); images
    larger than ``THUMBNAIL`` px are reduced to it (an overview of 224-px images need not be 2,000 px)."""
    from kdviz.data.folder import resize_image

    rows = []
    size = min(images.shape[1], THUMBNAIL)
    gap = max(1, size // 16)
    blank = np.full((size, size, 3), 255, np.uint8)
    for c in range(len(class_names)):
        idx = np.flatnonzero(labels == c)[:per_class]
        tiles = [resize_image(images[i], size) for i in idx] + [blank] * (per_class - len(idx))
        row = np.concatenate(
            [np.pad(t, ((gap, gap), (gap, gap), (0, 0)), constant_values=255) for t in tiles], axis=1
        )
        rows.append(row)
    return np.concatenate(rows, axis=0)
