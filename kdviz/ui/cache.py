"""Cached loaders: a data set is decoded once per process, a model loaded once per file version."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from kdviz.data import Dataset, load_dataset
from kdviz.models.checkpoints import WEIGHTS, LoadedModel, load_model


@st.cache_resource(
    show_spinner="Loading the data set (decoded once, then read from the cache)…", max_entries=4
)
def dataset(source: str) -> Dataset:
    return load_dataset(source)


def model(path: str | Path) -> LoadedModel:
    """The checkpoint at ``path``; retraining it (a new file time) loads it afresh."""
    path = Path(path)
    weights = path / WEIGHTS if path.is_dir() else path
    stamp = weights.stat().st_mtime_ns if weights.exists() else 0
    return _model(str(path), stamp)


@st.cache_resource(show_spinner="Loading model…", max_entries=16)
def _model(path: str, stamp: int) -> LoadedModel:
    return load_model(path)


def chosen_models(teacher: Path | None, student: Path | None) -> dict[str, tuple[Path, LoadedModel]]:
    """The sidebar's teacher and student, loaded; one that cannot be loaded gets an error box and is
    left out, so a page shows what it can with the other."""
    import streamlit as st

    from kdviz.models.checkpoints import CheckpointError

    out: dict[str, tuple[Path, LoadedModel]] = {}
    for role, path in (("teacher", teacher), ("student", student)):
        if path is None:
            continue
        try:
            out[role] = (path, model(path))
        except CheckpointError as exc:
            st.error(f"The {role} cannot be loaded: {exc}")
    return out
