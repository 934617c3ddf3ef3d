"""Overview: what kdviz shows, the data set at a glance, and the chosen teacher and student."""

import streamlit as st

from kdviz.ui import cache, session
from kdviz.ui.cards import teacher_and_student
from kdviz.ui.charts import sample_grid
from kdviz.ui.shell import require_app
from kdviz.ui.sidebar import safe_dataset

require_app()

st.title("kdviz: knowledge distillation, made visible")
st.markdown(
    "A small **student** network learns from a large **teacher**: from its softened predictions "
    "(knowledge distillation) and from *where it looks*: the teacher's Integrated Gradients maps, "
    "overlaid onto the training images. Pick a data set, a teacher and a student in the sidebar; "
    "train or load models on the **Models** page."
)

sel = session.selection()
data = safe_dataset(sel.source)
if data is not None:
    st.header(f"Data set: {data.name}")
    left, right = st.columns([2, 3])
    with left:
        st.metric("Classes", data.num_classes)
        st.metric("Training images", f"{len(data.train):,}")
        st.metric("Test images", f"{len(data.test):,}")
        st.caption(data.description)
    with right:
        grid = sample_grid(data.test.images, data.test.labels, data.class_names, per_class=8)
        st.image(
            grid,
            caption="Test images, one row per class: " + ", ".join(data.class_names),
            width=min(560, grid.shape[1] * 4),
            clamp=True,
        )

st.header("Teacher and student")
teacher_and_student(
    cache.chosen_models(sel.teacher, sel.student),
    "No {role} chosen: train one on the Models page, or pick one in the sidebar.",
)
