"""A model's card as a person reads it, and two of them side by side."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from kdviz.models import ModelStats, compression_ratio
from kdviz.models.checkpoints import ModelCard
from kdviz.training.loop import read_history

from .charts import training_curves


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def stats_of(card: ModelCard) -> ModelStats | None:
    s = card.stats or {}
    return (
        ModelStats(s["params"], s["size_bytes"], s["macs"])
        if {"params", "size_bytes", "macs"} <= set(s)
        else None
    )


def render_card(card: ModelCard, path: Path, *, title: str, reference: ModelCard | None = None) -> None:
    """Metrics first (what people compare), then the details folded away."""
    st.subheader(title)
    st.caption(f"`{card.arch}` {card.arch_kwargs or ''} · {path.name}")
    stats, ref = stats_of(card), stats_of(reference) if reference else None
    c1, c2, c3 = st.columns(3)
    if stats:
        c1.metric("Parameters", f"{stats.params:,}")
        c2.metric("Size on disk", human_bytes(stats.size_bytes))
        c3.metric("MACs / image", f"{stats.macs / 1e6:.1f} M")
    c4, c5, c6 = st.columns(3)
    acc = card.test_accuracy
    c4.metric("Test accuracy", f"{acc:.2%}" if acc is not None else "not measured")
    if stats and ref:
        c5.metric("Compression", f"{compression_ratio(ref, stats):.2f}×", help="teacher parameters / these")
    if acc is not None and reference is not None and reference.test_accuracy:
        c6.metric("Teacher's accuracy kept", f"{acc / reference.test_accuracy:.1%}")
    history = read_history(path) if path.is_dir() else []
    if history:
        st.plotly_chart(training_curves({card.name or path.name: history}), key=f"curves_{title}_{path}")
    with st.expander("Card"):
        st.json(card.to_json(), expanded=False)


def teacher_and_student(models: dict, missing: str) -> None:
    """The two cards side by side, the student's measured against the teacher's; ``missing`` says
    what to do where a role has no model (``{role}`` is replaced)."""
    cols = st.columns(2)
    teacher_card = None
    for col, role in zip(cols, ("teacher", "student"), strict=True):
        with col:
            if role not in models:
                st.info(missing.format(role=role))
                continue
            path, loaded = models[role]
            render_card(loaded.card, path, title=role.capitalize(), reference=teacher_card)
            if role == "teacher":
                teacher_card = loaded.card
