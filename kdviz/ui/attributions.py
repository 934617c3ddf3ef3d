"""Streamlit pieces for attribution views: the controls, a model's panel, predictions for filters."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from streamlit.errors import StreamlitAPIException

from kdviz.attribution import (
    BASELINES,
    DEFAULT_IG_STEPS,
    IG_RULES,
    METHODS,
    AttributionOptions,
    AttributionResult,
    batching,
    render,
    under_load,
)
from kdviz.core.scheduler import Lighter
from kdviz.data import Dataset
from kdviz.models.checkpoints import LoadedModel
from kdviz.models.evaluate import predict, spread_indices

from . import cache, compute, urlstate
from .image_source import Picked

#: Above this share of |F(x) − F(baseline)| the IG map is called incomplete on the page.
DELTA_WARNING = 0.05
#: From this image size up, an IG map shows a progress bar and a stop button (it takes seconds).
PROGRESS_FROM = 96
#: The data-set gallery looks at most this many test images (spread over every class).
GALLERY_POOL = 2000
#: From this many other sessions with maps in the server's queue, a page that adapts to load asks
#: for lighter maps (:func:`kdviz.attribution.under_load`).
BUSY_FROM = 1
#: The session-state flag of "compute these maps at the full steps", set by the busy notice's button.
FULL_STEPS = "attr_full_steps"
_groups = itertools.count(1)  # one group per call: its roles' maps are served back to back


@dataclass
class ViewSettings:
    options: AttributionOptions
    sign: str
    cmap: str | None
    strength: float
    shared_scale: bool


def controls(num_classes: int, class_names, key: str = "attr") -> ViewSettings:
    """The method and the look of the maps, in one row of widgets plus an expander."""
    c1, c2, c3, c4 = st.columns(4)
    urlstate.bind_choice(f"{key}_method", "ig", list(METHODS), param="method")  # kept in the URL
    method = c1.selectbox("Method", list(METHODS), format_func=METHODS.__getitem__, key=f"{key}_method")
    target_kind = c2.selectbox(
        "Target class",
        ["predicted", "true", "choose…"],
        key=f"{key}_target_kind",
        help="Whose evidence the map shows: the class each model predicts, the true label, or any class.",
    )
    target: str | int = {"predicted": "pred", "true": "true"}.get(target_kind, "pred")
    if target_kind == "choose…":
        target = c2.selectbox(
            "Class",
            list(range(num_classes)),
            format_func=lambda k: f"{k}: {class_names[k]}",
            key=f"{key}_target_class",
        )
    sign = c3.selectbox(
        "Sign", list(render.SIGNS), format_func=lambda s: f"{s}: {render.SIGNS[s]}", key=f"{key}_sign"
    )
    urlstate.bind_float(f"{key}_strength", 0.6, 0.0, 1.0, param="strength")
    strength = c4.slider("Overlay strength", 0.0, 1.0, step=0.05, key=f"{key}_strength")
    with st.expander("Method settings and colours"):
        e1, e2, e3, e4 = st.columns(4)
        urlstate.bind_int(f"{key}_steps", DEFAULT_IG_STEPS, 4, 128, param="steps")
        steps = e1.slider("IG steps", 4, 128, step=4, key=f"{key}_steps", disabled=method != "ig")
        rule = e2.selectbox(
            "IG rule",
            list(IG_RULES),
            format_func=IG_RULES.__getitem__,
            key=f"{key}_rule",
            disabled=method != "ig",
        )
        baseline = e3.selectbox(
            "IG baseline",
            list(BASELINES),
            format_func=lambda b: f"{b}: {BASELINES[b]}",
            key=f"{key}_baseline",
            disabled=method != "ig",
        )
        cmap = e4.selectbox("Colour map", ["auto", *render.COLORMAPS], key=f"{key}_cmap")
        shared = st.toggle(
            "One colour scale for teacher and student",
            value=True,
            key=f"{key}_shared",
            help=(
                "On: both maps are divided by one scale, so colours compare. "
                "Off: each map uses its own 99th percentile."
            ),
        )
    options = AttributionOptions(method=method, steps=steps, rule=rule, baseline=baseline, target=target)
    return ViewSettings(options, sign, None if cmap == "auto" else cmap, strength, shared)


def attribute_image(
    loaded: LoadedModel, image: np.ndarray, options: AttributionOptions, label: int | None = None
) -> AttributionResult:
    """One uint8 image through one model (cached per weights, image and options)."""
    return attribute_models({"model": loaded}, image, options, label)["model"]


def attribute_models(
    models: dict[str, LoadedModel],
    image: np.ndarray,
    options: AttributionOptions,
    label: int | None = None,
    *,
    slot: str = "attr",
    adapt_to_load: bool = False,
) -> dict[str, AttributionResult]:
    """One uint8 image through each model, by role: a cached map at once, the others through the
    server's compute queue (batched with other sessions' images for the same model, the roles'
    maps served back to back), the page showing its place and an estimate while it waits.

    ``adapt_to_load``: maps not cached at the asked options are made with
    :func:`~kdviz.attribution.under_load`'s lighter ones while :data:`BUSY_FROM` other sessions
    have maps in the queue, as seen now or when the server starts the map (each result's
    ``options`` says which); lighter maps already made are shown again rather than silently
    replaced; :func:`busy_notice` tells the person and offers the full steps."""
    requests = {role: batching.ImageRequest(loaded, image, options, label) for role, loaded in models.items()}
    results = _cached(requests)
    full = adapt_to_load and st.session_state.pop(FULL_STEPS, False)
    lighter = under_load(options)
    adapt = adapt_to_load and not full and lighter != options and len(results) < len(requests)
    light = {  # maps already made at the asked options stay as they are
        role: req if role in results else batching.ImageRequest(req.loaded, image, lighter, label)
        for role, req in requests.items()
    }
    if adapt:
        made = _cached(light)
        # lighter maps made in a busy moment stay until the person asks for the full ones
        if len(made) == len(light) or compute.others_waiting("attribution") >= BUSY_FROM:
            requests, results, adapt = light, made, False
    group = ("maps", next(_groups))
    tickets = {
        role: compute.submit(
            batching.attribute_batch,
            req,
            key=batching.batch_key(req),
            kind="attribution",
            max_batch=batching.max_batch(req),
            slot=f"{slot}_{role}",
            dedupe=batching.dedupe_token(req),
            group=group,
            lighter=Lighter(batching.batch_key(light[role]), light[role], BUSY_FROM) if adapt else None,
        )
        for role, req in requests.items()
        if role not in results and not _large_ig(req)
    }
    for role, req in requests.items():  # large IG maps one at a time, each with a bar and a stop
        if role not in results and role not in tickets:
            results[role] = _with_progress(req)
    if tickets:
        results.update(compute.wait(tickets, "the maps"))
    return {role: results[role] for role in requests}


def _cached(requests: dict[str, batching.ImageRequest]) -> dict[str, AttributionResult]:
    return {role: hit for role, req in requests.items() if (hit := batching.cached(req)) is not None}


def busy_notice(results: dict[str, AttributionResult], asked: AttributionOptions, key: str) -> None:
    """Say when a busy server made lighter maps than asked, with a button for the full ones."""
    used = {r.options.steps for r in results.values() if r.options.method == "ig"}
    if asked.method != "ig" or not used or used == {asked.steps}:
        return
    steps = min(used)
    st.info(
        f"The server is busy (others' maps are in its queue), so these maps use {steps} IG steps "
        f"instead of {asked.steps}: they come several times sooner, and the completeness check "
        "below each map says how exact they are."
    )
    if st.button(f"Compute them at {asked.steps} steps", key=f"{key}_full_steps"):
        st.session_state[FULL_STEPS] = True
        st.rerun()


def _large_ig(request: batching.ImageRequest) -> bool:
    return request.options.method == "ig" and request.loaded.card.image_size >= PROGRESS_FROM


def _with_progress(request: batching.ImageRequest) -> AttributionResult:
    """IG on a large image, on the compute thread, with a bar that moves per chunk of steps and a
    button that stops it.

    Pressing the button reruns the page: the wait is interrupted, the computation told to stop at
    its next chunk, and the rerun sees the button pressed and stops there instead of starting again.
    """
    loaded, size = request.loaded, request.loaded.card.image_size
    box = st.empty()
    with box.container():
        bar = st.progress(0.0, text=f"Integrated Gradients on a {size}×{size} image…")
        try:
            stopped = st.button("Stop this map", key=f"ig_stop_{loaded.fingerprint}")
        except StreamlitAPIException:  # the same model's map twice in one run: the first has the button
            stopped = False
    if stopped:
        box.empty()
        st.info("The map was stopped. Change any setting, or pick the image again, to compute it.")
        st.stop()
    stop = threading.Event()

    def work(report: Callable[[float, str], None]) -> AttributionResult:
        def progress(done: int, total: int) -> None:
            report(done / max(total, 1), f"Integrated Gradients on a {size}×{size} image: {done}/{total}")

        return batching.attribute_alone(request, progress=progress, should_stop=stop.is_set)

    try:
        result = compute.run_with_progress(work, "the map", bar, kind="attribution")
    finally:
        stop.set()  # a rerun or a closed tab interrupts the wait: the map stops at its next chunk
    box.empty()
    return result


def fingerprint(loaded: LoadedModel) -> str:
    """The old name of ``loaded.fingerprint``, kept until ``pages/lesson.py`` moves."""
    return loaded.fingerprint


def top5_chart(probs: np.ndarray, class_names, highlight: int | None = None) -> go.Figure:
    top = np.argsort(-probs)[:5][::-1]
    colours = ["#d62728" if k == highlight else "#1f77b4" for k in top]
    fig = go.Figure(
        go.Bar(
            x=probs[top],
            y=[f"{class_names[k]}" for k in top],
            orientation="h",
            marker_color=colours,
            text=[f"{p:.1%}" for p in probs[top]],
            textposition="auto",
        )
    )
    fig.update_layout(height=180, margin=dict(l=0, r=0, t=0, b=0), xaxis=dict(range=[0, 1], tickformat=".0%"))
    return fig


def panel(
    title: str,
    loaded: LoadedModel,
    image: np.ndarray,
    result: AttributionResult,
    view: ViewSettings,
    scale: float | None,
    class_names,
    true_label: int | None,
    key: str,
) -> None:
    """Image, map, overlay, prediction and the completeness check of one model."""
    st.subheader(title)
    m2d = render.reduce_channels(result.maps[0], view.sign)
    pred = int(result.predicted[0])
    target = int(result.target[0])
    verdict = (
        ""
        if true_label is None
        else (" ✓" if pred == true_label else f" ✗ (true: {class_names[true_label]})")
    )
    st.markdown(
        f"**{class_names[pred]}**{verdict} · map for class *{class_names[target]}*"
        + (" · from the cache" if result.cached[0] else "")
    )
    cols = st.columns(3)

    def big(a: np.ndarray) -> np.ndarray:
        return render.crisp(a, 160)

    cols[0].image(big(image), caption="input", width="stretch")
    cols[1].image(
        big(render.heatmap(result.maps[0], sign=view.sign, cmap=view.cmap, scale=scale)),
        caption=f"{METHODS[result.options.method]}",
        width="stretch",
    )
    cols[2].image(
        big(
            render.blend(
                image, result.maps[0], strength=view.strength, sign=view.sign, cmap=view.cmap, scale=scale
            )
        ),
        caption="overlay",
        width="stretch",
    )
    with st.expander("Map with values (hover)"):
        st.plotly_chart(render.figure(m2d, sign=view.sign, cmap=view.cmap, scale=scale), key=f"{key}_fig")
    st.plotly_chart(top5_chart(result.probs[0], class_names, pred), key=f"{key}_top5")
    delta, score, base_score, rel_delta = (
        result.delta,
        result.score,
        result.baseline_score,
        result.relative_delta,
    )
    if delta is not None and score is not None and base_score is not None and rel_delta is not None:  # IG
        rel = float(rel_delta[0])
        text = (
            f"Completeness: the map sums to {result.maps[0].sum():.3f}; F(x) − F(baseline) = "
            f"{float(score[0] - base_score[0]):.3f}; "
            f"gap {float(delta[0]):+.3f} ({rel:.1%})."
        )
        if rel > DELTA_WARNING:
            st.warning(
                text + " The gap is large: the map does not account for the whole change in the score. "
                "More steps or the Gauss–Legendre rule usually close it; ReLU networks sometimes keep a gap."
            )
        else:
            st.caption(text)


def figure_png(
    rows: list[tuple[str, np.ndarray, AttributionResult]], view: ViewSettings, scale: float | None
) -> bytes:
    """The side-by-side figure as one PNG: a row per model, image | map | overlay."""
    tiles = []
    for _, image, result in rows:
        heat = render.heatmap(result.maps[0], sign=view.sign, cmap=view.cmap, scale=scale)
        over = render.blend(
            image, result.maps[0], strength=view.strength, sign=view.sign, cmap=view.cmap, scale=scale
        )
        gap = np.full((image.shape[0], 2, 3), 255, np.uint8)
        tiles.append(np.concatenate([image, gap, heat, gap, over], axis=1))
    sep = np.full((2, tiles[0].shape[1], 3), 255, np.uint8)
    grid = np.concatenate([t if i == 0 else np.concatenate([sep, t]) for i, t in enumerate(tiles)])
    return render.to_png(grid, upscale=max(1, 256 // rows[0][1].shape[0]))


@st.cache_data(show_spinner="Predicting the gallery images…", max_entries=8)
def _gallery_predictions(path: str, stamp: int, source: str, pool: int) -> np.ndarray:
    loaded = cache.model(path)
    data = cache.dataset(source)
    idx = spread_indices(len(data.test), pool)

    def work():  # on the compute thread; sessions opening the same gallery at once share it
        return predict(loaded.model, data.test.subset(idx), mean=loaded.card.mean, std=loaded.card.std)

    preds = compute.run_shared(
        work, "the gallery's predictions", key=("gallery", path, stamp, source, pool), kind="predict"
    )
    return preds.predicted


def gallery_predictions(path: Path, source: str) -> np.ndarray:
    weights = path / "model.safetensors" if path.is_dir() else path
    return _gallery_predictions(str(path), weights.stat().st_mtime_ns, source, GALLERY_POOL)


#: the gallery's filters: which test images to offer, from the labels and each model's predictions
GALLERY_FILTERS = {
    "all": lambda labels, teacher, student: np.ones(len(labels), bool),
    "teacher right": lambda labels, teacher, student: teacher == labels,
    "teacher wrong": lambda labels, teacher, student: teacher != labels,
    "student wrong": lambda labels, teacher, student: student != labels,
    "teacher and student disagree": lambda labels, teacher, student: student != teacher,
}
STUDENT_FILTERS = ("student wrong", "teacher and student disagree")


def class_names(data: Dataset | None, loaded: LoadedModel) -> list[str]:
    """The data set's class names, else the model's own (photos and uploads with no data set here)."""
    if data is not None:
        return list(data.class_names)
    card = loaded.card
    return list(card.class_names) or [str(k) for k in range(card.num_classes)]


def gallery(data: Dataset, predictions: dict[str, np.ndarray], key: str = "attr") -> Picked | None:
    """Thumbnails of test images, filtered by class and by what the models got right; None when none match."""
    pool = spread_indices(len(data.test), GALLERY_POOL)
    labels = data.test.labels[pool]
    names = list(data.class_names)
    f1, f2 = st.columns(2)
    classes = ["all", *range(len(names))]
    urlstate.bind_choice(f"{key}_class", "all", classes, param="class")
    cls = f1.selectbox(
        "Class", classes, format_func=lambda c: c if c == "all" else f"{c}: {names[c]}", key=f"{key}_class"
    )
    filters = [f for f in GALLERY_FILTERS if "student" in predictions or f not in STUDENT_FILTERS]
    which = f2.selectbox("Show", filters, key=f"{key}_filter")
    teacher = predictions.get("teacher", next(iter(predictions.values())))
    keep = GALLERY_FILTERS[which](labels, teacher, predictions.get("student", teacher))
    if cls != "all":
        keep &= labels == cls
    candidates = pool[keep]
    st.caption(f"{len(candidates)} of {len(pool)} test images match.")
    if len(candidates) == 0:
        return None
    shown = candidates[:24]
    index_key = f"{key}_index"
    urlstate.bind_int(index_key, int(shown[0]), 0, len(data.test) - 1, param="image")
    if st.session_state.get(index_key) not in set(candidates.tolist()):
        st.session_state[index_key] = int(shown[0])
    thumbs = st.columns(12)
    for i, idx in enumerate(shown):
        with thumbs[i % 12]:
            st.image(render.crisp(data.test.images[idx], 64), width="stretch")
            current = idx == st.session_state[index_key]
            if st.button(f"#{idx}", key=f"{key}_pick_{idx}", type="primary" if current else "secondary"):
                st.session_state[index_key] = int(idx)
                st.rerun()
    index = st.session_state[index_key]
    label = int(data.test.labels[index])
    st.caption(f"Test image #{index}, true class **{names[label]}**.")
    return Picked(data.test.images[index], label, f"test image #{index}")
