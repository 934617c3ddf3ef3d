"""The image picker the Attributions and Lesson pages share: a data-set image, a sample photo or an upload.

One helper, so both pages offer the same three sources with the same URL parameter, the same upload
rules and the same note on what the models see; and both fall back to photos and uploads when the
models' data set is not on this machine (a fresh install with the shipped CIFAR-10 models).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import streamlit as st

from kdviz.data.images import MAX_BYTES, UPLOAD_TYPES, ImageError, read_image

from . import samples, urlstate

SOURCES = {"data": "From the data set", "sample": "Sample photo", "upload": "Upload your own"}


@dataclass
class Picked:
    """What the models will look at: uint8 (H, W, 3) at their input size, and its class if known."""

    image: np.ndarray
    label: int | None = None
    caption: str = ""


def choose_source(key: str, *, data_available: bool) -> str:
    """The source radio (kept in the URL as ``source``); without a data set only photos and uploads."""
    options = list(SOURCES) if data_available else ["sample", "upload"]
    urlstate.bind_choice(key, options[0], options, param="source")
    if st.session_state.get(key) not in options:
        st.session_state[key] = options[0]
    return st.radio("Image", options, format_func=SOURCES.get, horizontal=True, key=key)


def sample_photo(key: str, size: int) -> Picked:
    name, photo = samples.choose(key, size)
    samples.show(photo, name)
    return Picked(photo.model_input, None, name)


def upload(
    key: str, size: int, *, prompt: str = "An image of your own (PNG, JPEG, WebP, BMP, GIF, TIFF; any size)"
) -> Picked | None:
    """An uploaded image prepared for the model, or None (nothing uploaded, or a message on why not)."""
    file = st.file_uploader(
        prompt, type=list(UPLOAD_TYPES), key=key, max_upload_size=MAX_BYTES // 2**20
    )  # the browser refuses a bigger file unsent
    if file is None:
        return None
    try:
        loaded = read_image(file.getvalue(), size=size, name=file.name)
    except ImageError as exc:
        st.error(f"Cannot use this file: {exc}")
        return None
    samples.show(loaded, file.name, loaded.format)
    return Picked(loaded.model_input, None, file.name)
