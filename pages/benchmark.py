"""Benchmark: latency and accuracy of the teacher and its students, on this machine, in one click."""

import os

import streamlit as st

from kdviz.models.checkpoints import CheckpointError
from kdviz.training.workspace import model_choices
from kdviz.ui import benchmark as ui
from kdviz.ui import cache, export_panel, session
from kdviz.ui.shell import require_app
from kdviz.ui.sidebar import safe_dataset

require_app()

st.title("Benchmark")
st.markdown(
    "The paper's claim is speed on the edge: **140 ms → 13 ms** at 4.1× compression (per batch of 64 "
    "on a GPU). Here it is tested on *this* machine, for *your* teacher and students."
)
sel = session.selection()
data = safe_dataset(sel.source)
choices = model_choices(session.workspace(), sel.source)
if data is None or sel.teacher is None:
    st.info("Choose a data set and a teacher in the sidebar.")
    st.stop()
by_path = {str(c.path): c for c in choices}
extra = [p for p in by_path if p not in (str(sel.teacher), str(sel.student))]
more = st.multiselect("More students", extra, format_func=lambda p: by_path[p].label, key="bench_more")
paths = [str(sel.teacher)] + ([str(sel.student)] if sel.student else []) + more
models = {}
for p in paths:
    try:
        models[p] = cache.model(p)
    except CheckpointError as exc:
        st.error(f"{p} cannot be loaded: {exc}")
teacher = paths[0]
if teacher not in models:
    st.stop()
names = {
    p: ("teacher: " if p == teacher else "") + (by_path[p].name if p in by_path else os.path.basename(p))
    for p in models
}

st.header("Latency")
timing = ui.latency_controls()
if st.button("Measure latency", type="primary", key="bench_run_latency"):
    ui.run_latency(models, names, timing)
measured = ui.show_latency(models, names, timing.threads)

st.header("Accuracy")
split, limit = ui.accuracy_controls(data)
if st.button("Measure accuracy", key="bench_run_accuracy"):
    ui.run_accuracy(models, names, data, split, limit)
preds = ui.show_accuracy(models, names, data, split, limit)

st.header("The headline table")
rows, accuracy_from = ui.comparison(models, names, teacher, preds, timing, split, limit)
ui.show_headline(rows, measured, accuracy_from)

st.header("Speed against accuracy, every run")
ui.show_every_run(choices, timing.threads)

st.header("Export for a device")
export_path = st.selectbox(
    "Model", list(models), format_func=lambda p: names[p], index=len(models) - 1, key="bench_export_pick"
)
export_panel.panel(models[export_path], data, key="bench_export")
