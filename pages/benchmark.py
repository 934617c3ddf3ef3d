"""Benchmark: latency and accuracy of the teacher and its students, on this machine, in one click."""

import json
import os

import numpy as np
import pandas as pd
import streamlit as st
from sklearn.metrics import confusion_matrix

from kdviz.checkpoints import CheckpointError
from kdviz.export import ExportError
from kdviz.runs import model_choices
from kdviz.scorecard import Entry, cached_predictions, headline, pareto_front
from kdviz.ui import benchmark as ui
from kdviz.ui import cache, session
from kdviz.ui.attributions import fingerprint
from kdviz.ui.sidebar import safe_dataset

st.title("Benchmark")
st.markdown("The paper's claim is speed on the edge: **140 ms → 13 ms** at 4.1× compression (per batch of 64 "
            "on a GPU). Here it is tested on *this* machine, for *your* teacher and students.")
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
for i, p in enumerate(paths):
    try:
        models[p] = cache.model(p)
    except CheckpointError as exc:
        st.error(f"{p} cannot be loaded: {exc}")
names = {p: ("teacher: " if i == 0 else "") + (by_path[p].name if p in by_path else os.path.basename(p))
         for i, p in enumerate(paths)}

# ------------------------------------------------------------------ latency
st.header("Latency")
c1, c2, c3, c4, c5 = st.columns(5)
batch = c1.select_slider("Batch size (besides 1)", [1, 8, 16, 32, 64, 128, 256], value=64, key="bench_batch")
threads = c2.number_input("Threads", 1, os.cpu_count() or 1, min(2, os.cpu_count() or 1), key="bench_threads")
warmup = c3.number_input("Warm-up runs", 0, 50, 5, key="bench_warmup")
repeats = c4.number_input("Repeats", 3, 500, 30, key="bench_repeats")
max_s = c5.number_input("Seconds per model at most", 1.0, 60.0, 4.0, key="bench_seconds")
runtimes = st.multiselect("Runtimes", ["eager", "onnxruntime"], default=["eager", "onnxruntime"], key="bench_runtimes",
                          help="ONNX Runtime runs the exported graph; the export is checked for equal outputs first.")
if st.button("Measure latency", type="primary", key="bench_run_latency"):
    jobs = [(p, rt, b) for p in models for rt in runtimes for b in sorted({1, int(batch)})]
    bar = st.progress(0.0)
    for i, (p, rt, b) in enumerate(jobs):
        bar.progress(i / len(jobs), text=f"{names[p]} · {rt} · batch {b}")
        try:
            ui.measure(p, models[p], names[p], rt, b, int(threads), int(warmup), int(repeats), float(max_s))
        except ExportError as exc:
            st.error(f"{names[p]}: {exc}")
    bar.progress(1.0, text="done")
measured = [r for (p, rt, b, t), r in ui.results().items() if p in models and t == threads]
if measured:
    st.plotly_chart(ui.box(measured), key="bench_box")
    st.dataframe(pd.DataFrame([m.summary() for m in measured]), hide_index=True, key="bench_latency_table")
else:
    st.caption("Press *Measure latency*: each model takes a few seconds.")

# ------------------------------------------------------------------ accuracy
st.header("Accuracy")
a1, a2 = st.columns(2)
split = a1.selectbox("Split", ["test", "train"], key="bench_split")
n_split = len(data.split(split))
limit = a2.number_input(f"Images (of {n_split:,}; spread over the classes)", 10, n_split, min(n_split, 2000),
                        key="bench_limit")
names_cls = list(data.class_names)
if st.button("Measure accuracy", key="bench_run_accuracy"):
    bar = st.progress(0.0)
    for i, p in enumerate(models):
        cached_predictions(models[p], data, split, int(limit), fingerprint=fingerprint(models[p]),
                           progress=lambda d, t, i=i: bar.progress((i + d / t) / len(models), text=f"{names[p]}: {d}/{t} batches"))
    bar.progress(1.0, text="done")
    st.session_state["bench_accuracy_for"] = (split, int(limit))
preds = {}
if st.session_state.get("bench_accuracy_for") == (split, int(limit)):
    preds = {p: cached_predictions(models[p], data, split, int(limit), fingerprint=fingerprint(models[p])) for p in models}
    cols = st.columns(len(preds))
    for col, (p, pr) in zip(cols, preds.items()):
        col.metric(names[p], f"{pr.accuracy:.2%}", help=f"{len(pr.labels):,} images")
    st.plotly_chart(ui.per_class({names[p]: pr.per_class_accuracy(len(names_cls)) for p, pr in preds.items()}, names_cls),
                    key="bench_per_class")
    first, second = list(preds)[:2] if len(preds) > 1 else (list(preds)[0], None)
    mats = st.columns(2 if second else 1)
    for col, p in zip(mats, [q for q in (first, second) if q]):
        col.plotly_chart(ui.confusion(confusion_matrix(preds[p].labels, preds[p].predicted, labels=range(len(names_cls))),
                                      names_cls, names[p]), key=f"bench_cm_{p}")
    if second:
        t_pred, s_pred = preds[first].predicted, preds[second].predicted
        agree = float((t_pred == s_pred).mean())
        st.metric("Teacher and student agree on", f"{agree:.2%}", help="share of images with the same predicted class")
        from kdviz.evaluate import spread_indices

        idx = spread_indices(n_split, int(limit))
        disagree = np.flatnonzero(t_pred != s_pred)[:12]
        if len(disagree):
            st.caption("Where they disagree (true → teacher / student):")
            cols = st.columns(6)
            for k, j in enumerate(disagree):
                image = data.split(split).images[idx[j]]
                cols[k % 6].image(np.kron(image, np.ones((3, 3, 1), np.uint8)),
                                  caption=f"{names_cls[preds[first].labels[j]]} → {names_cls[t_pred[j]]} / {names_cls[s_pred[j]]}")

# ------------------------------------------------------------------ headline table
st.header("The headline table")
entries = []
for p, loaded in models.items():
    stats = loaded.card.stats or {}
    lat1 = ui.results().get((p, "eager", 1, threads))
    latb = ui.results().get((p, "eager", int(batch), threads))
    onnx1 = ui.results().get((p, "onnxruntime", 1, threads))
    entries.append(Entry(names[p], "teacher" if p == paths[0] else "student", stats.get("params", 0),
                         stats.get("size_bytes", 0), stats.get("macs", 0),
                         preds[p].accuracy if p in preds else (loaded.card.metrics or {}).get("test_accuracy"),
                         lat1.median_ms if lat1 else None, latb.median_ms if latb else None,
                         onnx1.median_ms if onnx1 else None))
table = pd.DataFrame(headline(entries))
st.dataframe(table, hide_index=True, key="bench_headline", column_config={
    "accuracy": st.column_config.NumberColumn(format="percent"),
    "teacher's accuracy kept": st.column_config.NumberColumn(format="percent"),
    "speed-up ×": st.column_config.NumberColumn(format="%.2f"),
    "ONNX speed-up over eager ×": st.column_config.NumberColumn(format="%.2f")})
d1, d2 = st.columns(2)
d1.download_button("Download CSV", table.to_csv(index=False), "kdviz-benchmark.csv", "text/csv", key="bench_csv")
d2.download_button("Download JSON", json.dumps({"rows": headline(entries),
                                               "latency": [m.summary() for m in measured]}, indent=2, default=str),
                   "kdviz-benchmark.json", "application/json", key="bench_json")

# ------------------------------------------------------------------ every run
st.header("Speed against accuracy, every run")
points = []
for c in choices:
    m = ui.results().get((str(c.path), "eager", 1, threads))
    acc = (c.card.metrics or {}).get("test_accuracy") if c.card else None
    if m is not None and acc is not None:
        points.append({"name": c.name, "latency": m.median_ms, "accuracy": acc})
missing = [c for c in choices if (str(c.path), "eager", 1, threads) not in ui.results()]
if missing and st.button(f"Measure the {len(missing)} unmeasured run(s) (batch 1, eager)", key="bench_measure_all"):
    bar = st.progress(0.0)
    for i, c in enumerate(missing):
        bar.progress(i / len(missing), text=c.name)
        ui.measure(c.path, cache.model(c.path), c.name, "eager", 1, int(threads), 3, 20, 2.0)
    st.rerun()
if points:
    front = pareto_front([p["latency"] for p in points], [p["accuracy"] for p in points])
    st.plotly_chart(ui.scatter(points, front), key="bench_scatter")
    st.caption("Red: the Pareto front, where no other run is both faster and more accurate.")
else:
    st.caption("Measure latency first: the chart shows every run with a measured latency and a test accuracy.")
