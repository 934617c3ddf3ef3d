"""Ablations: the arms side by side (committed study summaries and studies run here), where each
student looks, the compression sweep, the overlay itself, and the search."""

import streamlit as st

from kdviz.experiments.ablation import StudyError, list_studies, load_study, studies_root
from kdviz.experiments.hpo import list_searches
from kdviz.experiments.summary import list_summaries, load_summary, results_root
from kdviz.experiments.sweep import load_sweep
from kdviz.models.checkpoints import CheckpointError
from kdviz.models.evaluate import spread_indices
from kdviz.training.ig_overlay import MODES, OverlayConfig
from kdviz.ui import ablations as ui
from kdviz.ui import cache, session
from kdviz.ui.shell import require_app
from kdviz.ui.sidebar import safe_dataset

require_app()

st.title("Ablations")
st.markdown(
    "The paper's ablation: the student alone, **+ KD** (the teacher's softened outputs), **+ IG** "
    "(the teacher's IG maps overlaid on training images) and **+ both**, and the extended paper's "
    "**attention transfer** arms (AT, KD + AT, KD + IG + AT), each with several seeds. Committed "
    f"results are read from `{results_root()}`; studies started here and with `python -m kdviz ablate` "
    f"live in `{studies_root()}`."
)
sel = session.selection()
data = safe_dataset(sel.source)
tab_study, tab_sweep, tab_preview, tab_search = st.tabs(
    ["Studies", "Compression sweep", "Overlay preview", "Hyperparameter search"]
)

with tab_study:
    job = ui.current_job()
    if job is not None and job.kind == "study":
        ui.show_job(job)
    summaries = [s for s in list_summaries() if s.name != "sweep"]
    studies = list_studies()
    with st.expander("Start a small study", expanded=not (studies or summaries)):
        ui.start_form(sel, data, busy=job is not None and job.running)
    if not (studies or summaries):
        st.info(
            "No study yet: start one above, or run `python -m kdviz ablate --preset digits` "
            "(`python -m kdviz ablate --plan` lists the parts of the CIFAR-10 study)."
        )
    else:
        labels = {
            **{
                f"summary:{s.folder}": f"{s.name} · committed summary · {s.status} · {s.finished_runs} runs"
                for s in summaries
            },
            **{
                f"study:{s.folder}": f"{s.name} · {s.status} · {s.finished_runs}/{len(s.runs)} runs"
                for s in studies
            },
        }
        options = list(labels)
        started = ui.study_option(job)
        if started in options and st.session_state.get("abl_study_followed") != started:
            st.session_state["abl_study"] = started  # a study just started here is shown, once
            st.session_state["abl_study_followed"] = started
        picked = st.selectbox("Study", options, format_func=labels.get, key="abl_study")
        kind, _, path = picked.partition(":")
        try:
            ui.render_study(load_summary(path) if kind == "summary" else load_study(path), data)
        except StudyError as exc:
            st.error(str(exc))

with tab_sweep:
    sweep = load_sweep()
    if sweep is None:
        st.info(
            "No compression sweep yet. Its parts are studies (`python -m kdviz ablate --part sweep-16x`, "
            "see `--plan`); `python -m kdviz sweep` then measures each student's cost and writes "
            f"`{results_root() / 'sweep'}`."
        )
    else:
        ui.render_sweep(sweep)

with tab_preview:
    st.markdown(
        "What the student is fed: with probability **p** an image is replaced by the image with its "
        "teacher's IG map laid on at strength **λ** (the map raised to a random power in [1, 2] and "
        "scaled to [0, 1] first, as in the paper)."
    )
    if sel.teacher is None or data is None:
        st.info("Choose a data set and a teacher in the sidebar to preview the overlay on its maps.")
    else:
        c1, c2, c3, c4 = st.columns(4)
        p = c1.slider("Probability p", 0.0, 1.0, 0.5, 0.05, key="abl_prev_p")
        lam = c2.slider("Strength λ", 0.0, 1.0, 0.5, 0.05, key="abl_prev_lam")
        mode = c3.radio("Blend", list(MODES), format_func=ui.mode_label, key="abl_prev_mode")
        draw = int(
            c4.number_input(
                "Draw",
                0,
                10_000,
                0,
                key="abl_prev_draw",
                help="Another random draw of which images are overlaid.",
            )
        )
        try:
            teacher = cache.model(sel.teacher)
        except CheckpointError as exc:
            st.error(f"The teacher cannot be loaded: {exc}")
        else:
            indices = spread_indices(len(data.train), 6)
            maps = ui.teacher_maps(teacher, data, indices, steps=16)  # computed once, then cached
            shown = ui.overlay_preview(data, indices, maps, OverlayConfig(p=p, lam=lam, mode=mode), draw)
            st.caption(
                f"This draw overlays {shown} of {len(indices)} images (on average p × {len(indices)} = "
                f"{p * len(indices):.1f}). In training each map is also cropped and flipped with its image."
            )

with tab_search:
    searches = list_searches()
    if not searches:
        st.info(
            "No hyperparameter search yet. Start one with `python -m kdviz hpo --preset digits --trials 20` "
            "(any Optuna storage with `--storage`); it shows up here."
        )
    else:
        labels = {str(s.folder): f"{s.name} · {s.state.get('status')}" for s in searches}
        picked = st.selectbox("Search", list(labels), format_func=labels.get, key="hpo_pick")
        view = next(s for s in searches if str(s.folder) == picked)
        ui.best_trial(view, ui.render_search(view), data)
