"""Lesson: one story in six steps, from what the teacher sees to what the student costs and gains."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
import torch

from kdviz.attribution import BASELINES, IG_RULES, AttributionOptions, attribute, render
from kdviz.attribution.agreement import compare_maps
from kdviz.data import Dataset
from kdviz.models.checkpoints import CheckpointError, LoadedModel
from kdviz.teaching import lesson
from kdviz.training.workspace import model_choices
from kdviz.ui import attributions as attr_ui
from kdviz.ui import benchmark as bench_ui
from kdviz.ui import cache, image_source, presentation, session, urlstate
from kdviz.ui import lesson as ui
from kdviz.ui.cards import human_bytes
from kdviz.ui.shell import require_app
from kdviz.ui.sidebar import safe_dataset

require_app()

LESSON_BASELINES = ("zero", "black", "blur", "noise")  # one straight path each ("multi" averages three)
TRAINING_EXAMPLES = 8
MOST_RUNS = 12


@dataclass
class Context:
    data: Dataset | None
    teacher: LoadedModel
    teacher_path: Path
    student: LoadedModel | None
    student_path: Path | None
    image: np.ndarray  # uint8 (H, W, 3), what the models see
    label: int | None  # the true class, when the image comes from the data set
    baseline: str

    @property
    def names(self) -> list[str]:
        return attr_ui.class_names(self.data, self.teacher)

    def options(self, target: str | int = "pred") -> AttributionOptions:
        return AttributionOptions(method="ig", steps=32, baseline=self.baseline, target=target)


st.title("Lesson: how a small network learns from a large one")
sel = session.selection()
data = safe_dataset(sel.source)
loaded = {role: model for role, (_, model) in cache.chosen_models(sel.teacher, sel.student).items()}
if "teacher" not in loaded:
    st.info(
        "Choose a teacher in the sidebar (the models in assets/ work offline, on photos with no data set)."
    )
    st.stop()

step = ui.navigation()

# ------------------------------------------------------------------ the image every step looks at
with presentation.controls("Image and baseline"):
    size = loaded["teacher"].card.image_size
    c1, c2 = st.columns([3, 1])
    with c1:
        source = image_source.choose_source("lesson_source", data_available=data is not None)
    with c2:
        urlstate.bind_choice("lesson_baseline", "zero", LESSON_BASELINES, param="baseline")
        baseline = st.selectbox(
            "IG baseline",
            LESSON_BASELINES,
            key="lesson_baseline",
            format_func=lambda b: f"{b}: {BASELINES[b]}",
            help="Where IG's straight path starts. 'zero' is the paper's choice.",
        )
    picked = None
    if source == "data":
        picked = ui.test_image(data, "lesson_index")
    elif source == "sample":
        picked = image_source.sample_photo("lesson_sample", size)
    else:
        picked = image_source.upload("lesson_upload", size, prompt="An image of your own")
if picked is None:
    st.info("Upload an image, or pick a sample photo.")
    st.stop()
image, label = picked.image, picked.label

ctx = Context(
    data, loaded["teacher"], sel.teacher, loaded.get("student"), sel.student, image, label, baseline
)
teacher_fp = attr_ui.fingerprint(ctx.teacher)
seen = attr_ui.attribute_image(ctx.teacher, image, ctx.options(), label)  # the teacher's answer and map
target = int(seen.predicted[0])
st.divider()


# ------------------------------------------------------------------ the six steps
def step_1() -> None:
    probs = seen.probs[0]
    scale = render.percentile_scale(render.reduce_channels(seen.maps[0]))
    left, right = st.columns([3, 2])
    with left:
        cols = st.columns(3)
        cols[0].image(ui.crisp(image), caption="the image", width="stretch")
        cols[1].image(
            ui.crisp(render.heatmap(seen.maps[0], scale=scale)), caption="its IG map", width="stretch"
        )
        cols[2].image(
            ui.crisp(render.blend(image, seen.maps[0], scale=scale)),
            caption="the map on the image",
            width="stretch",
        )
    with right:
        st.markdown(
            f"The **teacher** answers **{ctx.names[target]}**, with {probs[target]:.0%} of its confidence. "
            "Its Integrated Gradients map colours each pixel by how much it moved that answer: bright "
            "pixels carried the decision, dark ones did not matter."
        )
        st.plotly_chart(attr_ui.top5_chart(probs, ctx.names, target), key="lesson_top5")
        st.caption("Change the image above and watch the answer and the map follow.")


def step_2() -> None:
    urlstate.bind_int("lesson_steps", 8, 2, 64, param="steps")
    urlstate.bind_choice("lesson_rule", "riemann_middle", list(IG_RULES), param="rule")
    with presentation.controls("Steps"):
        c1, c2 = st.columns([3, 1])
        steps = c1.slider(
            "Steps: the points on the path where the gradient is taken", 2, 64, key="lesson_steps"
        )
        rule = c2.selectbox(
            "Rule",
            list(IG_RULES),
            format_func=IG_RULES.get,
            key="lesson_rule",
            help="Where the points sit and how they are weighed. Midpoint: n evenly spaced points, "
            "each weighing 1/n. Captum's default is Gauss–Legendre. (Captum's own trapezoid weights "
            "add up to (n − 1)/n; kdviz scales them back to one.)",
        )
    st.markdown(
        f"IG walks a **straight line** from the baseline (α = 0) to the image (α = 1), asks the teacher for "
        f"the gradient of its score for *{ctx.names[target]}* at {steps} points on the way, and adds "
        "the gradients up, weighted, times (image − baseline). The sum is the map."
    )
    alphas, frames, scores = ui.path_view(ctx.teacher, teacher_fp, image, baseline, target)
    st.image([ui.crisp(f, 96) for f in frames], caption=[f"α = {a:.2f}" for a in alphas])
    walked = ui.walk(ctx.teacher, teacher_fp, image, baseline, target, steps, rule)
    st.plotly_chart(ui.path_figure(scores, walked, ctx.names[target]), key="lesson_path")
    reference, points = ui.convergence(ctx.teacher, teacher_fp, image, baseline, target, rule)
    marks = sorted({max(1, round(walked.steps * q)) for q in (0.25, 0.5, 0.75, 1.0)})
    shown = [walked.partial[k - 1] for k in marks] + [reference]
    scale = render.shared_scale([render.reduce_channels(m, "both") for m in shown])
    st.image(
        [ui.crisp(render.heatmap(m, sign="both", scale=scale), 128) for m in shown],
        caption=[f"after {k} of {walked.steps} points" for k in marks] + ["Captum, 256 steps"],
    )
    st.caption("Red pixels raise the score, blue ones lower it; one colour scale for all five maps.")
    done = walked.completeness()
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Sum of the map", f"{done.map_sum:.3f}")
    m2.metric("F(image) − F(baseline)", f"{done.score_change:.3f}")
    m3.metric(
        "Completeness gap",
        f"{done.gap:+.3f}",
        help="Sum of the map minus the change in score: 0 when the steps are enough.",
    )
    m4.metric("Distance to the 256-step map", f"{lesson.map_error(walked.map, reference):.1%}")
    st.markdown(
        "**Completeness**: the map's pixels add up to the change in the score from the baseline to the "
        "image. The chart below shows both the map and the gap settling as the steps grow."
    )
    st.plotly_chart(ui.convergence_figure(points, steps), key="lesson_convergence")


def step_3() -> None:
    urlstate.bind_float("lesson_temperature", 2.5, 1.0, 20.0, param="T")
    urlstate.bind_float("lesson_alpha", 0.5, 0.0, 1.0, param="alpha")
    with presentation.controls("Temperature and α"):
        c1, c2 = st.columns(2)
        temperature = c1.slider("Temperature T", 1.0, 20.0, step=0.5, key="lesson_temperature")
        alpha = c2.slider(
            "α: the weight of the teacher's soft answer", 0.0, 1.0, step=0.01, key="lesson_alpha"
        )
    logits = seen.logits[0]
    plain, soft = lesson.soften(logits, 1.0), lesson.soften(logits, temperature)
    truth = label if label is not None else target
    one_hot = np.eye(len(ctx.names))[truth]
    left, right = st.columns([3, 2])
    left.plotly_chart(ui.soft_targets_figure(ctx.names, one_hot, plain, soft, temperature), key="lesson_soft")
    with right:
        st.markdown(
            "A label says only *which* class. The teacher's probabilities say more: which other classes "
            "the image resembles. Dividing the logits by a **temperature** T before the softmax "
            "flattens them, so that this *dark knowledge* becomes visible to the student."
        )
        if label is None:
            st.caption(
                "This image has no label: the one-hot bar stands on the teacher's answer, "
                f"{ctx.names[target]}."
            )
        e1, e2 = st.columns(2)
        e1.metric("Entropy at T = 1", f"{lesson.entropy(plain):.2f} bits")
        e2.metric(
            f"Entropy at T = {temperature:g}",
            f"{lesson.entropy(soft):.2f} bits",
            help=f"0 bits is a one-hot answer; {np.log2(len(ctx.names)):.2f} bits is a uniform one.",
        )
        st.metric("Left for the other classes", f"{1 - soft[target]:.1%}")
    st.markdown(
        "The student's loss weighs the two: **α · T² · KL(teacher ‖ student)** (match the softened "
        "answer) + **(1 − α) · cross-entropy** (match the label). The paper's best was α = 0.01, T = 2.5."
    )
    if ctx.student is not None:
        with torch.no_grad():
            student_logits = ctx.student.model.eval()(ui.model_input(ctx.student, image))[0].numpy()
        terms = lesson.kd_terms(student_logits, logits, truth, temperature)
        k1, k2, k3 = st.columns(3)
        k1.metric("Soft part, T²·KL", f"{terms.soft:.3f}")
        k2.metric("Hard part, cross-entropy", f"{terms.hard:.3f}")
        k3.metric(f"Loss at α = {alpha:g}", f"{terms.total(alpha):.3f}")
        st.caption("These are the chosen student's numbers on this image.")


def _draw_again() -> None:
    st.session_state["lesson_seed"] = st.session_state.get("lesson_seed", 0) + 1


def step_4() -> None:
    urlstate.bind_float("lesson_p", 0.5, 0.0, 1.0, param="p")
    urlstate.bind_float("lesson_lambda", 0.5, 0.0, 1.0, param="lambda")
    seed = urlstate.bind_int("lesson_seed", 0, 0, 10**9, param="seed")
    with presentation.controls("p and λ"):
        c1, c2, c3 = st.columns([2, 2, 1])
        p = c1.slider("p: the chance that an image gets its map", 0.0, 1.0, step=0.05, key="lesson_p")
        lam = c2.slider("λ: how strongly the map is laid on", 0.0, 1.0, step=0.05, key="lesson_lambda")
        c3.button(
            "Draw again", key="lesson_draw", on_click=_draw_again, help="Another roll of the dice for p."
        )
    st.markdown(
        "The paper computes the teacher's IG map of every **training** image once (target: the true "
        "class, baseline zero, 50 steps). While the student trains, each image is, with probability "
        "**p**, replaced by a blend with its map, x′ = (1 − λ)·x + λ·M′, where M′ is the map raised to a "
        "random power in [1, 2] and scaled to [0, 1]: the student is *shown* where the teacher looked. "
        "The paper's best p was 0.1."
    )
    images, labels = ui.training_examples(ctx.data, TRAINING_EXAMPLES, ctx.teacher.card.image_size)
    if labels is None:
        st.caption(
            "No training set on this machine: the sample photos stand in, each mapped for the class "
            "the teacher sees."
        )
    card = ctx.teacher.card
    with st.spinner("The teacher's maps of these training images…"):
        result = attribute(
            ctx.teacher.model,
            ui.model_input(ctx.teacher, images),
            AttributionOptions(
                method="ig", steps=50, baseline="zero", target="pred" if labels is None else "true"
            ),
            mean=card.mean,
            std=card.std,
            labels=None if labels is None else torch.as_tensor(labels),
            fingerprint=teacher_fp,
        )
    if labels is None:
        labels = result.predicted
    maps = np.stack([render.reduce_channels(m) for m in result.maps])
    changed, applied = lesson.overlay_examples(images, maps, p, lam, seed=seed)
    for col, original, m, after, label_k, hit in zip(
        st.columns(len(images)), images, maps, changed, labels, applied, strict=True
    ):
        col.image(ui.crisp(original, 96), caption=ctx.names[int(label_k)], width="stretch")
        col.image(ui.crisp(render.heatmap(m), 96), caption="its map", width="stretch")
        col.image(ui.crisp(after, 96), caption="overlaid" if hit else "as it is", width="stretch")
    st.caption(
        f"{int(applied.sum())} of {len(applied)} images got their map this time (p = {p:g}, λ = {lam:g}, "
        f"draw {seed}). The blend is kdviz.training.ig_overlay's, the one training uses."
    )


def step_5() -> None:
    if ctx.student is None:
        st.info("Choose a student in the sidebar to compare it with the teacher.")
        return
    urlstate.bind_bool("lesson_shared", True, param="shared")
    with presentation.controls("Colour scale"):
        shared = st.toggle("One colour scale for both maps", key="lesson_shared")
    options = ctx.options(target)
    mine = attr_ui.attribute_image(ctx.student, image, options, label)
    t_map, s_map = render.reduce_channels(seen.maps[0]), render.reduce_channels(mine.maps[0])
    scale = render.shared_scale([t_map, s_map]) if shared else None
    cols = st.columns(2)
    for col, role, _model, result in (
        (cols[0], "Teacher", ctx.teacher, seen),
        (cols[1], "Student", ctx.student, mine),
    ):
        pred = int(result.predicted[0])
        col.subheader(role)
        col.markdown(
            f"answers **{ctx.names[pred]}** ({result.probs[0][pred]:.0%}); map for *{ctx.names[target]}*"
        )
        col.image(
            [
                ui.crisp(render.heatmap(result.maps[0], scale=scale), 160),
                ui.crisp(render.blend(image, result.maps[0], scale=scale), 160),
            ],
            caption=["IG map", "on the image"],
        )
    agree = compare_maps(t_map, s_map)
    st.markdown(
        "Do they look at the same pixels? Four ways to say how alike the two maps are (1 is identical):"
    )
    a1, a2, a3, a4 = st.columns(4)
    a1.metric("Spearman rank correlation", f"{agree.spearman:.2f}")
    a2.metric("Cosine similarity", f"{agree.cosine:.2f}")
    a3.metric("Top-10 % overlap (IoU)", f"{agree.top_k_iou:.2f}")
    a4.metric("SSIM", f"{agree.ssim:.2f}")
    with st.spinner("Timing both models on this machine…"):
        t_speed = ui.speed(ctx.teacher_path, ctx.teacher, "teacher")
        s_speed = ui.speed(ctx.student_path, ctx.student, "student")
    t_stats, s_stats = ctx.teacher.card.stats or {}, ctx.student.card.stats or {}
    s1, s2, s3, s4 = st.columns(4)
    s1.metric(
        "Teacher parameters", f"{t_stats.get('params', 0):,}", help=human_bytes(t_stats.get("size_bytes", 0))
    )
    s2.metric(
        "Student parameters",
        f"{s_stats.get('params', 0):,}",
        delta=f"{t_stats.get('params', 0) / max(s_stats.get('params', 1), 1):.1f}× fewer",
        delta_color="off",
    )
    s3.metric("Teacher, one image", f"{t_speed.median_ms:.1f} ms")
    s4.metric(
        "Student, one image",
        f"{s_speed.median_ms:.1f} ms",
        delta=f"{t_speed.median_ms / max(s_speed.median_ms, 1e-9):.1f}× faster",
        delta_color="off",
    )
    st.caption(
        "Median of a short eager PyTorch measurement on this machine (batch 1); "
        "the Benchmark page measures more."
    )


def step_6() -> None:
    runs = [r for r in model_choices(session.workspace(), sel.source)[:MOST_RUNS] if r.card is not None]
    by_path = {str(r.path): r for r in runs}
    with presentation.controls("Runs"):
        chosen = st.multiselect(
            "Runs shown",
            list(by_path),
            default=list(by_path),
            key="lesson_runs",
            format_func=lambda p: by_path[p].label,
        )
    st.markdown(
        "Every run in the workspace for this data set (and the models in assets/): its test accuracy, "
        "from its card, against its speed, measured here. Distillation is worth it when the student "
        "moves up on this chart without moving right."
    )
    bar = st.progress(0.0, text="Timing the runs…")
    rows = []
    for i, path in enumerate(chosen):
        run = by_path[path]
        bar.progress(i / max(len(chosen), 1), text=f"Timing {run.label}…")
        try:
            timing = ui.speed(run.path, cache.model(path), run.name)
        except CheckpointError as exc:
            st.warning(f"{run.label} is left out: {exc}")
            continue
        rows.append(
            {
                "run": run.label,
                "role": run.card.role,
                "parameters": (run.card.stats or {}).get("params"),
                "test accuracy": (run.card.metrics or {}).get("test_accuracy"),
                "latency ms (batch 1)": round(timing.median_ms, 2),
            }
        )
    bar.progress(1.0, text=f"{len(rows)} runs timed (batch 1, eager PyTorch, a short measurement)")
    bench_ui.show_every_run([by_path[p] for p in chosen], ui.THREADS)
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, key="lesson_runs_table")


{1: step_1, 2: step_2, 3: step_3, 4: step_4, 5: step_5, 6: step_6}[step]()
