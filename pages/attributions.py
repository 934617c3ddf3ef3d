"""Attributions: where the teacher and the student look, side by side, on data-set images or uploads."""

import numpy as np
import streamlit as st

from kdviz.attribution import render
from kdviz.data.images import MAX_BYTES, ImageError, read_image
from kdviz.models.checkpoints import CheckpointError
from kdviz.models.evaluate import spread_indices
from kdviz.ui import attributions as ui
from kdviz.ui import cache, samples, session, urlstate
from kdviz.ui.shell import require_app
from kdviz.ui.sidebar import safe_dataset

require_app()

st.title("Attributions")
sel = session.selection()
data = safe_dataset(sel.source)
models = {}
for role, path in (("teacher", sel.teacher), ("student", sel.student)):
    if path is None:
        continue
    try:
        models[role] = (path, cache.model(path))
    except CheckpointError as exc:
        st.error(f"The {role} cannot be loaded: {exc}")
if data is None or not models:
    st.info("Choose a data set and at least one model in the sidebar (train one on the Models page).")
    st.stop()

class_names = list(data.class_names)
SOURCES = ["From the data set", "Sample photo", "Upload your own"]
urlstate.bind_choice("attr_source", SOURCES[0], SOURCES, param="source")
source = st.radio("Image", SOURCES, horizontal=True, key="attr_source")
image, true_label = None, None

if source == "From the data set":
    pool = spread_indices(len(data.test), ui.GALLERY_POOL)
    preds = {role: ui.gallery_predictions(path, sel.source) for role, (path, _) in models.items()}
    labels = data.test.labels[pool]
    f1, f2 = st.columns(2)
    urlstate.bind_choice("attr_class", "all", ["all", *range(len(class_names))], param="class")
    cls = f1.selectbox(
        "Class",
        ["all", *range(len(class_names))],
        format_func=lambda c: c if c == "all" else f"{c}: {class_names[c]}",
        key="attr_class",
    )
    filters = ["all", "teacher right", "teacher wrong"]
    if "student" in preds:
        filters += ["student wrong", "teacher and student disagree"]
    which = f2.selectbox("Show", filters, key="attr_filter")
    keep = np.ones(len(pool), bool) if cls == "all" else labels == cls
    t_pred = preds.get("teacher", next(iter(preds.values())))
    keep &= {
        "all": np.ones(len(pool), bool),
        "teacher right": t_pred == labels,
        "teacher wrong": t_pred != labels,
        "student wrong": preds.get("student", t_pred) != labels,
        "teacher and student disagree": preds.get("student", t_pred) != t_pred,
    }[which]
    candidates = pool[keep]
    st.caption(f"{len(candidates)} of {len(pool)} test images match.")
    if len(candidates) == 0:
        st.info("No image matches these filters.")
        st.stop()
    shown = candidates[:24]
    urlstate.bind_int("attr_index", int(shown[0]), 0, len(data.test) - 1, param="image")
    if st.session_state.get("attr_index") not in set(candidates.tolist()):
        st.session_state["attr_index"] = int(shown[0])
    thumbs = st.columns(12)
    for i, idx in enumerate(shown):
        with thumbs[i % 12]:
            st.image(np.kron(data.test.images[idx], np.ones((2, 2, 1), np.uint8)), width="stretch")
            if st.button(
                f"#{idx}",
                key=f"attr_pick_{idx}",
                type="primary" if idx == st.session_state["attr_index"] else "secondary",
            ):
                st.session_state["attr_index"] = int(idx)
                st.rerun()
    index = st.session_state["attr_index"]
    image, true_label = data.test.images[index], int(data.test.labels[index])
    st.caption(f"Test image #{index}, true class **{class_names[true_label]}**.")
elif source == "Sample photo":
    name, photo = samples.choose("attr_sample", next(iter(models.values()))[1].card.image_size)
    samples.show(photo, name)
    image = photo.model_input
else:
    upload = st.file_uploader(
        "An image of your own (PNG, JPEG, WebP, BMP, GIF, TIFF; any size)",
        type=["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"],
        key="attr_upload",
        max_upload_size=MAX_BYTES // 2**20,
    )  # the browser refuses a bigger file unsent
    if upload is None:
        st.info("Upload an image to see where the models look.")
        st.stop()
    size = next(iter(models.values()))[1].card.image_size
    try:
        loaded_image = read_image(upload.getvalue(), size=size, name=upload.name)
    except ImageError as exc:
        st.error(f"Cannot use this file: {exc}")
        st.stop()
    image = loaded_image.model_input
    c1, c2 = st.columns([1, 3])
    c1.image(
        loaded_image.original,
        caption=f"{upload.name}: {loaded_image.original_size[0]}×{loaded_image.original_size[1]} "
        f"{loaded_image.format}",
    )
    c2.markdown("**What the models see:** " + ("; ".join(loaded_image.notes) or "the image as it is") + ".")
    c2.image(np.kron(image, np.ones((4, 4, 1), np.uint8)), caption=f"model input, {size}×{size}")

view = ui.controls(len(class_names), class_names)
results = {}
with st.spinner("Computing attributions…"):
    for role, (_path, loaded) in models.items():
        results[role] = ui.attribute_image(loaded, image, view.options, true_label)
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
