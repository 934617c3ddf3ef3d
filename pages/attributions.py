"""Attributions: where the teacher and the student look, side by side, on data-set images or uploads."""

import numpy as np
import streamlit as st

from kdviz.attribution import render
from kdviz.ui import attributions as ui
from kdviz.ui import cache, image_source, session
from kdviz.ui.shell import require_app
from kdviz.ui.sidebar import safe_dataset

require_app()

st.title("Attributions")
sel = session.selection()
data = safe_dataset(sel.source)
models = cache.chosen_models(sel.teacher, sel.student)
if not models:
    st.info("Choose at least one model in the sidebar (train one on the Models page).")
    st.stop()
class_names = ui.class_names(data, next(iter(models.values()))[1])

size = next(iter(models.values()))[1].card.image_size
source = image_source.choose_source("attr_source", data_available=data is not None)
if source == "data":
    picked = ui.gallery(
        data, {role: ui.gallery_predictions(path, sel.source) for role, (path, _) in models.items()}
    )
elif source == "sample":
    picked = image_source.sample_photo("attr_sample", size)
else:
    picked = image_source.upload("attr_upload", size)
if picked is None:
    st.info(
        "Upload an image to see where the models look."
        if source == "upload"
        else "No image matches these filters."
    )
    st.stop()
image, true_label = picked.image, picked.label

view = ui.controls(len(class_names), class_names)
with st.spinner("Computing attributions…"):
    results = ui.attribute_models(
        {role: loaded for role, (_path, loaded) in models.items()},
        image,
        view.options,
        true_label,
        adapt_to_load=True,
    )
ui.busy_notice(results, view.options, key="attr")
reduced = [render.reduce_channels(r.maps[0], view.sign) for r in results.values()]
scale = render.shared_scale(reduced) if view.shared_scale else None
st.caption(
    "Colour scale: "
    + ("shared by both maps (colours compare)." if scale else "each map on its own 99th percentile.")
)
cols = st.columns(len(results))
for col, (role, result) in zip(cols, results.items(), strict=True):
    with col:
        ui.panel(
            role.capitalize(),
            models[role][1],
            image,
            result,
            view,
            scale,
            class_names,
            true_label,
            key=f"attr_{role}",
        )

rows = [(role, image, r) for role, r in results.items()]
d1, d2 = st.columns(2)
d1.download_button(
    "Download the figure (PNG)",
    ui.figure_png(rows, view, scale),
    file_name="kdviz-attributions.png",
    mime="image/png",
    key="attr_download_png",
)
buffer = __import__("io").BytesIO()
np.savez(buffer, **{f"{role}_map": r.maps[0] for role, r in results.items()}, image=image)
d2.download_button(
    "Download the maps (NumPy .npz)",
    buffer.getvalue(),
    file_name="kdviz-maps.npz",
    mime="application/octet-stream",
    key="attr_download_npz",
)
