"""The sample-photo picker the Lesson and Attributions pages share, and how a prepared photo is shown."""

from __future__ import annotations

import streamlit as st

from kdviz.attribution import render
from kdviz.data.images import LoadedImage, from_array
from kdviz.data.samples import SAMPLES, load_sample, sample_names

from . import urlstate


@st.cache_data(show_spinner=False, max_entries=32)
def prepared(name: str, size: int) -> LoadedImage:
    """The photo cropped and resized for a ``size``×``size`` model, as an upload would be."""
    return from_array(load_sample(name), size=size, name=SAMPLES[name].title)


def choose(key: str, size: int, *, param: str = "sample") -> tuple[str, LoadedImage]:
    """A select box of the sample photos (its choice kept in the URL); returns the title and the
    prepared photo."""
    names = sample_names()
    urlstate.bind_choice(key, names[0], names, param=param)
    name = st.selectbox(
        "Sample photo",
        names,
        format_func=lambda n: f"{SAMPLES[n].title}: {SAMPLES[n].note}",
        key=key,
        help="Real photographs that ship inside scikit-image: no network, no file of your own needed.",
    )
    return SAMPLES[name].title, prepared(name, size)


def show(image: LoadedImage, title: str, detail: str = "") -> None:
    """The photo as it is, what was done to it, and what the model sees (as for an upload)."""
    size = image.model_input.shape[0]
    c1, c2 = st.columns([1, 3])
    caption = f"{title}: {image.original_size[0]}×{image.original_size[1]}" + (f" {detail}" if detail else "")
    c1.image(image.original, caption=caption)
    c2.markdown("**What the models see:** " + ("; ".join(image.notes) or "the image as it is") + ".")
    c2.image(render.crisp(image.model_input), caption=f"model input, {size}×{size}")
