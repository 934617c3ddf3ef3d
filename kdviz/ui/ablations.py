"""Streamlit side of the Ablations page: study jobs, the arms' table (intervals, Holm-corrected
paired tests) and figures, maps per arm, committed summaries read-only, the compression sweep, the
overlay preview, and the hyperparameter search's figures."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch
from plotly.subplots import make_subplots

from kdviz.attribution import AttributionOptions, attribute, render
from kdviz.core.jobs import Job
from kdviz.data import Dataset
from kdviz.data.loader import to_float
from kdviz.experiments.ablation import (
    StudyConfig,
    StudyEvent,
    StudyView,
    csv_table,
    markdown_table,
    run_study,
    studies_root,
    summarise,
)
from kdviz.experiments.hpo import SearchView
from kdviz.models import list_models
from kdviz.models.checkpoints import LoadedModel
from kdviz.training import ARMS, CORE_ARMS
from kdviz.training.ig_overlay import MODES, OverlayConfig, overlay
from kdviz.training.workflows import defaults_for
from kdviz.training.workspace import RunNameError, check_name, now

from . import compute, job_panel, session

if TYPE_CHECKING:
    import optuna

JOB_KEY = "kdviz_ablation_job"
ARM_COLOURS = {
    "baseline": "#7f7f7f",
    "kd": "#1f77b4",
    "ig": "#2ca02c",
    "kd+ig": "#d62728",
    "at": "#9467bd",
    "kd+at": "#17becf",
    "kd+ig+at": "#ff7f0e",
}
UP = 4  # pixels per map pixel on screen: 32×32 maps shown at 128×128, crisp


def big(image: np.ndarray) -> np.ndarray:
    return np.kron(image, np.ones((UP, UP, 1), dtype=np.uint8))


# ---------------------------------------------------------------------------------- jobs


def start_study(folder: Path, config: StudyConfig, data: Dataset) -> Job:
    """Run (or resume) a study in a worker thread; the page watches ``job.progress`` and ``job.data``."""

    def work(job: Job):
        def report(event: StudyEvent) -> None:
            job.report(event.fraction, event.message, run=event.run, history=list(event.history))

        return run_study(folder, config, data=data, report=report, should_stop=job.should_stop)

    job = session.start_job(JOB_KEY, f"study {folder.name}", work, kind="study")
    job.report(folder=str(folder))
    return job


def study_option(job: Job | None) -> str | None:
    """The studies list's entry of the study this session started last (shown first: a person who
    just started one wants to watch it, not a committed summary)."""
    folder = job.data.get("folder") if job is not None and job.kind == "study" else None
    return f"study:{folder}" if folder else None


def current_job() -> Job | None:
    return session.current_job(JOB_KEY)


STUDY_TEXT = job_panel.PanelText(
    stop_label="Stop",
    stop_help="Ends after the current step; finished runs and epochs are kept.",
    done=lambda job: f"{job.title} finished in {job.elapsed:.0f} s.",
    stopped=lambda job: f"{job.title} stopped: start it again to resume where it stopped.",
    failed=lambda job: f"{job.title} failed: {job.error}",
)


def _running_student_curves(job: Job):
    history = job.data.get("history") or []
    return curves({job.data.get("run") or "run": history}) if history else None


def show_job(job: Job) -> None:
    """Progress, the running student's curves and a stop button; refreshes itself while the job runs."""
    job_panel.show(job, STUDY_TEXT, key="abl_", chart=_running_student_curves, live_only=True)


def start_form(sel: session.Selection, data: Dataset | None, busy: bool) -> None:
    """A small study of the sidebar's teacher on the sidebar's data set, started as a background job."""
    if sel.teacher is None or data is None:
        st.info("Choose a data set and a teacher in the sidebar first.")
        return
    d_arch, d_kwargs, d_cfg = defaults_for(sel.source, "student")
    names = [s.name for s in list_models()]
    c1, c2, c3 = st.columns(3)
    name = c1.text_input(
        "Study name",
        value=f"study-{now()}",
        key="abl_new_name",
        help="An existing study of this name with the same settings is resumed.",
    )
    student = c2.selectbox("Student", names, index=names.index(d_arch), key="abl_new_student")
    arms = c3.multiselect("Arms", list(ARMS), default=list(CORE_ARMS), key="abl_new_arms")
    c4, c5, c6, c7 = st.columns(4)
    seeds = c4.number_input("Seeds", 1, 10, 2, key="abl_new_seeds")
    epochs = c5.number_input("Epochs", 1, 200, 2, key="abl_new_epochs")
    subset = c6.number_input("Training images (0: all)", 0, 1_000_000, 300, step=100, key="abl_new_subset")
    steps = c7.number_input("IG steps (teacher cache)", 2, 64, 8, key="abl_new_steps")
    c8, c9, c10, c11 = st.columns(4)
    temperature = c8.number_input("Temperature T", 1.0, 20.0, 4.0, key="abl_new_T")
    alpha = c9.number_input("α (KD weight)", 0.0, 1.0, 0.5, key="abl_new_alpha")
    p = c10.number_input("Overlay probability p", 0.0, 1.0, 0.1, key="abl_new_p")
    lam = c11.number_input("Overlay strength λ", 0.0, 1.0, 0.5, key="abl_new_lam")
    st.caption(
        f"Teacher: `{sel.teacher.name}` (the sidebar's) · data: `{sel.source}` · "
        f"{len(arms) * seeds} short runs."
    )
    if st.button("Start the study", type="primary", disabled=busy or not arms, key="abl_new_start"):
        try:
            folder = studies_root() / check_name(name)
            config = StudyConfig(
                dataset=sel.source,
                teacher=str(sel.teacher),
                student=student,
                student_kwargs=d_kwargs if student == d_arch else {},
                arms=arms,
                seeds=list(range(int(seeds))),
                train=dict(
                    epochs=int(epochs),
                    batch_size=d_cfg.batch_size,
                    lr=d_cfg.lr,
                    hflip=d_cfg.hflip,
                    subset=int(subset) or None,
                    ig_steps=int(steps),
                    temperature=float(temperature),
                    alpha=float(alpha),
                    overlay_p=float(p),
                    overlay_lambda=float(lam),
                ),
                probe=8,
                probe_steps=min(16, int(steps)),
                latency_seconds=0.5,
            )
        except (RunNameError, ValueError) as exc:
            st.error(str(exc))
        else:
            start_study(folder, config, data)
            st.rerun()


# ---------------------------------------------------------------------------------- table and figures


def _pct(v):
    return None if v is None or v != v else round(100 * v, 2)


def _rounded(v, digits: int = 3):
    return None if v is None or v != v else round(v, digits)


def table(rows: list[dict]) -> pd.DataFrame:
    """The arms as a table a person reads: percentages, mean ± sd, 95 % intervals, paired differences
    in points with their intervals, Holm-corrected p-values and the effect size."""

    def interval(r: dict, key: str) -> str | None:
        low, high = r[f"{key} ci low"], r[f"{key} ci high"]
        return None if low != low else f"[{100 * low:+.2f}, {100 * high:+.2f}]"

    return pd.DataFrame(
        [
            {
                "arm": r["arm"],
                "what": r["what"],
                "seeds": f"{r['seeds done']}/{r['of']}",
                "accuracy %": _pct(r["accuracy"]),
                "± std": _pct(r["accuracy std"]),
                "95 % CI low": _pct(r["accuracy ci low"]),
                "95 % CI high": _pct(r["accuracy ci high"]),
                "Δ vs baseline (points)": _pct(r["Δ vs baseline"]),
                "Δ vs baseline 95 % CI": interval(r, "Δ vs baseline"),
                "p vs baseline": _rounded(r["p vs baseline"]),
                "p vs baseline (Holm)": _rounded(r["p vs baseline (Holm)"]),
                "d_z vs baseline": _rounded(r["d_z vs baseline"], 2),
                "Δ vs KD (points)": _pct(r["Δ vs kd"]),
                "Δ vs KD 95 % CI": interval(r, "Δ vs kd"),
                "p vs KD (Holm)": _rounded(r["p vs kd (Holm)"]),
                "teacher's accuracy kept %": _pct(r["teacher's accuracy kept"]),
                "agreement with teacher %": _pct(r["agreement with teacher"]),
                "IG Spearman": _rounded(r["IG spearman"]),
                "IG top-10 % IoU": _rounded(r["IG top_k_iou"]),
                "compression ×": _rounded(r["compression ×"], 2),
                "latency ms": _rounded(r["latency ms"], 2),
                "speed-up ×": _rounded(r["speed-up ×"], 2),
                "minutes per run": _rounded(r["wall minutes per run"], 1),
            }
            for r in rows
        ]
    )


def accuracy_bars(
    rows: list[dict], teacher_accuracy: float | None, view: StudyView | None = None
) -> go.Figure:
    """Mean test accuracy per arm with its 95 % interval over seeds as error bars, each seed's run as a
    point (so a reader sees how few seeds an interval rests on); the teacher as a line."""
    done = [r for r in rows if r["seeds done"]]

    def half(r: dict) -> float:
        return (
            0.0
            if r["accuracy ci high"] != r["accuracy ci high"]
            else 100 * (r["accuracy ci high"] - r["accuracy"])
        )

    fig = go.Figure(
        go.Bar(
            x=[r["arm"] for r in done],
            y=[100 * r["accuracy"] for r in done],
            error_y=dict(type="data", array=[half(r) for r in done], visible=True),
            marker_color=[ARM_COLOURS.get(r["arm"], "#1f77b4") for r in done],
            text=[f"{100 * r['accuracy']:.2f} %" for r in done],
            textposition="inside",
            insidetextanchor="start",  # at the bar's foot, clear of the interval and the seeds' points
            name="mean (95 % CI)",
            hovertemplate="%{x}: %{y:.2f} % ± %{error_y.array:.2f} (95 % CI)<extra></extra>",
        )
    )
    values = [100 * r["accuracy"] for r in done] + ([100 * teacher_accuracy] if teacher_accuracy else [])
    if view is not None:
        points = [(r.arm, r.seed, r.metrics["test_accuracy"]) for r in view.runs if r.metrics]
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in points],
                y=[100 * p[2] for p in points],
                mode="markers",
                marker=dict(color="black", size=7, symbol="diamond-open"),
                name="one seed",
                text=[f"seed {p[1]}" for p in points],
                hovertemplate="%{x}, %{text}: %{y:.2f} %<extra></extra>",
            )
        )
        values += [100 * p[2] for p in points]
    if teacher_accuracy:
        fig.add_hline(
            y=100 * teacher_accuracy,
            line_dash="dash",
            annotation_text=f"teacher {100 * teacher_accuracy:.2f} %",
        )
    if values:
        spread = [
            100 * (r["accuracy ci high"] - r["accuracy"])
            for r in done
            if r["accuracy ci high"] == r["accuracy ci high"]
        ]
        lo, hi = min(values) - max(spread, default=0), max(values) + max(spread, default=0)
        fig.update_yaxes(range=[max(0.0, lo - 2 - 0.3 * (hi - lo)), min(100.0, hi + 2 + 0.3 * (hi - lo))])
    fig.update_layout(
        title="Test accuracy per arm (mean, 95 % interval over seeds, each seed a point)",
        yaxis_title="test accuracy %",
        height=380,
        margin=dict(l=10, r=10, t=40, b=10),
        legend=dict(orientation="h", y=-0.2),
    )
    return fig


def curves(histories: dict) -> go.Figure:
    """Training loss and test accuracy per epoch; one line per run, coloured by arm, seeds dotted apart."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "test accuracy %"))
    shown: set[str] = set()
    for name, history in histories.items():
        arm = next(
            (a for a in sorted(ARMS, key=len, reverse=True) if name.startswith(a.replace("+", "-"))), name
        )
        colour = ARM_COLOURS.get(arm)
        epochs = [r.epoch for r in history]
        for col, (key, scale) in enumerate((("train_loss", 1.0), ("test_acc", 100.0)), 1):
            fig.add_trace(
                go.Scatter(
                    x=epochs,
                    y=[scale * getattr(r, key) for r in history],
                    mode="lines+markers",
                    name=arm,
                    legendgroup=arm,
                    showlegend=col == 1 and arm not in shown,
                    line=dict(color=colour),
                    hovertext=name,
                    hovertemplate=f"{name}<br>epoch %{{x}}: %{{y:.3f}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        shown.add(arm)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.25))
    return fig


def runs_line(view: StudyView) -> str:
    """How many runs finished, of those the study's parts plan where that is fewer than it allows."""
    planned = set(view.state.get("planned_runs") or [r.name for r in view.runs])
    if len(planned) == len(view.runs):
        return f"{view.finished_runs} of {len(view.runs)} runs finished"
    done = sum(r.metrics is not None for r in view.runs if r.name in planned)
    extra = view.finished_runs - done
    return (
        f"{done} of the {len(planned)} planned runs finished"
        + (f" and {extra} more" if extra else "")
        + f" (its configuration allows {len(view.runs)})"
    )


def render_study(view: StudyView, data: Dataset | None) -> None:
    """Everything about one study or committed summary: status, table, bars, curves, and the maps per
    arm where the students' weights are on this machine."""
    from kdviz.experiments.summary import weights_of

    state, cfg = view.state, view.config
    teacher = state.get("teacher", {})
    st.markdown(
        f"**{view.name}**: {view.status}, {runs_line(view)} · "
        f"data `{cfg.dataset}`"
        + (f" ({state['subset_size']:,} training images)" if state.get("subset_size") else "")
        + (
            f" · teacher `{teacher.get('arch')}` {100 * teacher['test_accuracy']:.2f} %"
            if teacher.get("test_accuracy")
            else ""
        )
        + f" · student `{cfg.student}` · seeds {', '.join(map(str, cfg.seeds))}"
    )
    if view.summary:
        parts = state.get("parts", {})
        st.caption(
            f"A committed summary (read-only, `{view.folder}`): numbers, histories and agreement figures, "
            "no weights. Parts so far: "
            + (", ".join(f"{k} ({len(v.get('runs', []))} runs)" for k, v in parts.items()) or "none")
            + "."
        )
    if state.get("error"):
        st.error(f"The study stopped with an error: {state['error']}")
    rows = summarise(view)
    if not view.finished_runs:
        st.info("No run of this study has finished yet.")
        return
    st.dataframe(table(rows), hide_index=True, key="abl_table")
    st.caption(
        "Mean ± standard deviation over seeds and the 95 % t-interval of the mean. Δ: the mean of the "
        "per-seed differences against the baseline (or KD), in percentage points, with its 95 % interval: "
        "the arms of a seed share initial weights, batches and crops, so they are compared seed by seed. "
        "p: paired t-test; Holm: corrected over every comparison in the table (read this one); d_z: the "
        "mean difference over the differences' standard deviation. With 3–5 seeds only a large, steady "
        "effect reaches Holm p < 0.05; an interval that spans zero does not show a difference (nor its "
        "absence). Agreement: share of test images where the student predicts what the teacher predicts."
    )
    c1, c2 = st.columns(2)
    c1.download_button(
        "Download the table (Markdown)",
        markdown_table(rows),
        file_name=f"{view.name}.md",
        key="abl_download_md",
    )
    c2.download_button(
        "Download the table (CSV)", csv_table(rows), file_name=f"{view.name}.csv", key="abl_download_csv"
    )
    st.plotly_chart(accuracy_bars(rows, teacher.get("test_accuracy"), view), key="abl_bars")
    st.plotly_chart(curves({r.name: r.history for r in view.runs if r.history}), key="abl_curves")
    if data is None:
        return
    weights = weights_of(view)
    if weights is None:
        st.info(
            "The students' weights of this summary are not on this machine, so their IG maps cannot be "
            "shown; run the study here (`python -m kdviz ablate --part …`) to see them."
        )
        return
    inspection(weights, data)


def render_sweep(sweep: dict) -> None:
    """The compression sweep: accuracy against latency and against compression, and its numbers."""
    from kdviz.experiments.sweep import LATENCY_KEYS, figure, not_run, trained_in

    latency = st.radio(
        "Latency",
        list(LATENCY_KEYS),
        format_func=lambda k: k[:-3].replace("b", "batch ").replace("onnx", "ONNX Runtime"),
        horizontal=True,
        key="abl_sweep_latency",
    )
    st.plotly_chart(figure(sweep, latency), key="abl_sweep_fig")
    m = sweep.get("machine", {})
    st.caption(
        f"Latency: median on {m.get('cpu', '?')} ({m.get('cores', '?')} cores, {m.get('torch_threads', '?')} "
        "threads). Filled points lie on their arm's Pareto front (nothing is both cheaper and more "
        "accurate); hollow ones do not. Accuracy: mean over the seeds done (bars: sd)."
    )
    precisions = trained_in(sweep)
    if len(precisions) > 1:
        st.caption(
            "Not every point trained alike: "
            + "; ".join(f"{p}: {', '.join(students)}" for p, students in sorted(precisions.items()))
            + ". Both arms of a point share its precision (`python -m kdviz ablate --plan`)."
        )
    missing = not_run(sweep)
    if missing:
        st.info(
            f"Not run yet, so not drawn: {', '.join(missing)}. Their costs are in the table; their parts "
            "are in `python -m kdviz ablate --plan`."
        )
    frame = pd.DataFrame(sweep["rows"])
    st.dataframe(frame, hide_index=True, key="abl_sweep_table")


def inspection(view: StudyView, data: Dataset) -> None:
    """The probe images, the teacher's IG map and each arm's student map beside it, agreement under each."""
    st.subheader("Where each arm's student looks")
    probe = view.probe()
    if probe is None:
        st.info("The probe maps are made when the first run finishes.")
        return
    indices, teacher_maps = probe
    if data.source != view.config.dataset or indices.max(initial=0) >= len(data.test):
        st.info(f"Choose the data set `{view.config.dataset}` in the sidebar to see the study's images.")
        return
    seeds = sorted({r.seed for r in view.runs if r.metrics})
    c1, c2, c3 = st.columns(3)
    seed = c1.selectbox("Seed", seeds, key="abl_seed")
    count = c2.slider("Images", 1, len(indices), min(4, len(indices)), key="abl_count")
    shared = c3.toggle(
        "One colour scale per image",
        value=True,
        key="abl_shared",
        help="On: the teacher's and every student's map of an image share one scale, so colours compare.",
    )
    runs = [r for r in view.runs if r.seed == seed and r.metrics]
    # a finished run (one with metrics) wrote its probe maps before its metrics
    maps = {r.arm: cast(np.ndarray, view.probe_maps(r)) for r in runs}
    names = list(data.class_names)
    for i in range(count):
        idx = int(indices[i])
        row = [teacher_maps[i]] + [maps[r.arm][i] for r in runs]
        scale = render.shared_scale(row) if shared else None
        cols = st.columns(2 + len(runs))
        cols[0].image(
            big(data.test.images[idx]), caption=f"#{idx}: {names[data.test.labels[idx]]}", width="stretch"
        )
        cols[1].image(big(render.heatmap(teacher_maps[i], scale=scale)), caption="teacher", width="stretch")
        for col, run in zip(cols[2:], runs, strict=True):
            metrics = cast(dict, run.metrics)  # runs without metrics were left out above
            score = metrics["attribution_per_image"]["spearman"][i]
            pred = metrics["probe_predictions"][i] if "probe_predictions" in metrics else None
            said = f" · says {names[pred]}" if pred is not None else ""
            col.image(
                big(render.heatmap(maps[run.arm][i], scale=scale)),
                width="stretch",
                caption=f"{run.arm}: Spearman {score:.2f}{said}",
            )
    st.caption(
        "Maps: absolute Integrated Gradients of the true class, summed over colour channels; Spearman: "
        "rank correlation of the student's map with the teacher's (1: the same pixels in the same order)."
    )


# ---------------------------------------------------------------------------------- overlay preview


def teacher_maps(teacher: LoadedModel, data: Dataset, indices: np.ndarray, steps: int) -> np.ndarray:
    """The teacher's IG maps (true class, |·| summed over channels, as in the IG cache) of a few training
    images, through the attribution front door and its cache: seen once, never recomputed."""
    card = teacher.card

    def work() -> np.ndarray:
        result = attribute(
            teacher.model,
            teacher.preprocess(data.train.images[indices]),
            AttributionOptions(method="ig", steps=steps, target="true"),
            mean=card.mean,
            std=card.std,
            labels=torch.as_tensor(data.train.labels[indices]),
        )
        return np.abs(result.maps).sum(1)

    # on the server's compute queue; sessions asking for the same maps meanwhile share one call
    key = ("overlay-preview", teacher.fingerprint, data.source, tuple(int(i) for i in indices), steps)
    return compute.run_shared(work, "the teacher's maps", key=key, kind="attribution")


def overlay_preview(
    data: Dataset, indices: np.ndarray, maps: np.ndarray, cfg: OverlayConfig, draw: int
) -> int:
    """Originals, the teacher's maps, what training would feed the student in this draw at probability p,
    and every image overlaid at strength λ; returns how many images the draw overlaid."""
    images = to_float(data.train.images[indices])
    gen = torch.Generator().manual_seed(draw)
    drawn, chosen = overlay(images, torch.as_tensor(maps), cfg, gen)
    always, _ = overlay(
        images,
        torch.as_tensor(maps),
        OverlayConfig(p=1.0, lam=cfg.lam, mode=cfg.mode, power_min=cfg.power_min, power_max=cfg.power_max),
        torch.Generator().manual_seed(draw),
    )

    def to_uint8(t: torch.Tensor) -> np.ndarray:
        return (t.permute(0, 2, 3, 1).clamp(0, 1).numpy() * 255).round().astype(np.uint8)

    rows = [
        ("image", data.train.images[indices], None),
        ("teacher's IG map", np.stack([render.heatmap(m) for m in maps]), None),
        (f"training view at p = {cfg.p:.2f}", to_uint8(drawn), chosen.numpy()),
        (f"overlaid, λ = {cfg.lam:.2f}", to_uint8(always), None),
    ]
    names = list(data.class_names)
    for title, pictures, flags in rows:
        st.markdown(f"**{title}**")
        cols = st.columns(len(indices))
        for j, col in enumerate(cols):
            caption = (
                ("overlaid" if flags[j] else "unchanged")
                if flags is not None
                else f"#{int(indices[j])}: {names[data.train.labels[indices[j]]]}"
            )
            col.image(big(pictures[j]), caption=caption, width="stretch")
    return int(chosen.sum())


def mode_label(mode: str) -> str:
    return f"{mode}: {MODES[mode]}"


# ---------------------------------------------------------------------------------- search


def render_search(view: SearchView) -> optuna.Study | None:
    """A search's status, trials and Optuna's own figures; returns the Optuna study (None if unreadable)."""
    from kdviz.experiments.hpo import figures

    try:
        study = view.study()
    except Exception as exc:  # noqa: BLE001 - a missing or foreign storage is a message, not a crash
        st.error(f"The search's storage cannot be read: {exc}")
        return None
    trials = study.trials
    states = [t.state.name for t in trials]
    st.markdown(
        f"**{view.name}**: {view.state.get('status')}, {states.count('COMPLETE')} complete, "
        f"{states.count('PRUNED')} pruned, {states.count('FAIL')} failed of {view.config.trials} · "
        f"arm `{view.config.arm}` · validated on {view.config.holdout} held-out training images · "
        f"storage `{view.state.get('storage') or 'optuna.db in the search folder'}`"
    )
    if trials:
        rows = [
            {
                "trial": t.number,
                "state": t.state.name.lower(),
                "validation accuracy %": None if t.value is None else round(100 * t.value, 2),
                "epochs": len(t.intermediate_values),
                **{k: round(v, 5) for k, v in t.params.items()},
            }
            for t in trials
        ]
        st.dataframe(pd.DataFrame(rows), hide_index=True, key="hpo_trials")
    for title, fig in figures(study).items():
        st.plotly_chart(fig, key=f"hpo_fig_{title}")
        st.caption(title)
    return study


def best_trial(view: SearchView, study: optuna.Study | None, data: Dataset | None) -> None:
    """The best trial's values and a button that distils a student with them into the workspace."""
    from kdviz.experiments.hpo import train_best

    complete = [t for t in (study.trials if study is not None else []) if t.state.name == "COMPLETE"]
    if not complete:
        return
    best = max(complete, key=lambda t: cast(float, t.value))  # a complete trial has its value
    st.markdown(
        f"**Best trial {best.number}**: validation accuracy {100 * cast(float, best.value):.2f} % with "
        + ", ".join(f"{k} = {v:.4g}" for k, v in best.params.items())
    )
    c1, c2 = st.columns(2)
    run_name = c1.text_input("Student run name", value=f"student-best-{view.name}", key="hpo_best_name")
    epochs = int(
        c2.number_input(
            "Epochs", 1, 500, int(view.config.base.train.get("epochs", 10)), key="hpo_best_epochs"
        )
    )
    job = current_job()
    if st.button(
        "Train a student from the best trial",
        type="primary",
        key="hpo_best_go",
        disabled=job is not None and job.running,
    ):
        try:
            run_dir = session.workspace().create(check_name(run_name), exist_ok=True)
        except (RunNameError, OSError) as exc:
            st.error(str(exc))
            return

        def work(job: Job):
            def on_event(e):
                job.report(
                    e.fraction,
                    f"epoch {e.epoch}/{e.epochs}, step {e.step}/{e.steps}",
                    run=run_name,
                    history=list(e.history),
                )

            return train_best(
                view,
                run_name,
                run_dir,
                epochs=epochs,
                data=data,
                callback=on_event,
                should_stop=job.should_stop,
            )

        session.start_job(JOB_KEY, f"student {run_name}", work, kind="distill")
        session.choose("student", run_dir)
        st.rerun()
    if job is not None and job.kind == "distill":
        show_job(job)
