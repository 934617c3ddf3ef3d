"""Streamlit side of the Compare page: what it computes, kept across reruns.

Every widget change reruns the page; the maps come from the attribution cache, but the deletion
and insertion curves are hundreds of forward passes and were computed again on every rerun (the
page took seconds to redraw with nothing changed). Cached here per weights, images and maps.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from kdviz.attribution import comparison
from kdviz.attribution.faithfulness import Curves
from kdviz.data.base import ImageSplit
from kdviz.models.checkpoints import LoadedModel


def faithfulness(
    loaded: LoadedModel,
    split: ImageSplit,
    where: str,
    indices: np.ndarray,
    maps: np.ndarray,
    labels: np.ndarray,
) -> Curves:
    """:func:`kdviz.attribution.comparison.faithfulness`, computed once per weights, split
    (``where``: the data set's source and the split's name), images and maps."""
    return _faithfulness(loaded, split, loaded.fingerprint, where, np.asarray(indices), maps, labels)


@st.cache_data(show_spinner="Deletion and insertion curves…", max_entries=32)
def _faithfulness(
    _loaded: LoadedModel,
    _split: ImageSplit,
    weights: str,
    where: str,
    indices: np.ndarray,
    maps: np.ndarray,
    labels: np.ndarray,
) -> Curves:
    return comparison.faithfulness(_loaded, _split, indices, maps, labels)
