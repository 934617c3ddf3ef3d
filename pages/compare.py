"""Compare: do the teacher and the student look at the same pixels, and are their maps faithful?"""

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from kdviz.attribution import BASELINES, METHODS, AttributionOptions, comparison, render
from kdviz.models.checkpoints import CheckpointError
from kdviz.models.evaluate import spread_indices
from kdviz.ui import attributions as attr_ui
from kdviz.ui import cache, compute, session
from kdviz.ui import compare as compare_ui
from kdviz.ui.shell import require_app
from kdviz.ui.sidebar import safe_dataset

require_app()

METRICS = {
    "spearman": "Spearman rank correlation",
    "cosine": "cosine similarity",
    "top_k_iou": "top-k % intersection over union",
    "ssim": "SSIM",
}

st.title("Compare teacher and student")
sel = session.selection()
data = safe_dataset(sel.source)
if data is None or sel.teacher is None or sel.student is None:
    st.info("Choose a data set, a teacher and a student in the sidebar.")
    st.stop()
try:
    teacher, student = cache.model(sel.teacher), cache.model(sel.student)
except CheckpointError as exc:
    st.error(f"A model cannot be loaded: {exc}")
    st.stop()
names = list(data.class_names)

c1, c2, c3, c4 = st.columns(4)
how = c1.selectbox(
    "Images",
    ["random", "class", "disagree"],
    key="cmp_how",
    format_func={
        "random": "a random sample",
        "class": "one class",
        "disagree": "where the predictions disagree",
    }.get,
)
label = c2.selectbox(
    "Class", range(len(names)), format_func=lambda k: names[k], key="cmp_class", disabled=how != "class"
)
n = c3.slider("How many", 4, 200, 16, 4, key="cmp_n")
seed = c4.number_input("Sample seed", 0, 10_000, 0, key="cmp_seed")
c5, c6, c7, c8 = st.columns(4)
method = c5.selectbox("Method", list(METHODS), format_func=METHODS.get, key="cmp_method")
steps = c6.slider("IG steps", 4, 64, 16, 4, key="cmp_steps", disabled=method != "ig")
baseline = c7.selectbox("IG baseline", list(BASELINES), key="cmp_baseline", disabled=method != "ig")
top_k = c8.slider("Top-k %", 1, 50, 10, key="cmp_topk")
options = AttributionOptions(method=method, steps=steps, baseline=baseline, target="true")

if how == "disagree":
    t_pred = attr_ui.gallery_predictions(sel.teacher, sel.source)
    s_pred = attr_ui.gallery_predictions(sel.student, sel.source)
    pool = spread_indices(len(data.test), attr_ui.GALLERY_POOL)
    picked = comparison.choose_images(
        data.test.subset(pool), "disagree", n=n, seed=int(seed), teacher_pred=t_pred, student_pred=s_pred
    )
    indices = pool[picked]
else:
    indices = comparison.choose_images(data.test, how, n=n, label=label, seed=int(seed))
if len(indices) == 0:
    st.info("No images match: the teacher and the student agree on every gallery image.")
    st.stop()

bar = st.progress(0.0, text="Computing maps…")
result = compute.run_with_progress(  # on the server's compute thread, its progress drawn here
    lambda report: comparison.compare(
        teacher, student, data.test, indices, options, top_k_percent=top_k, progress=report
    ),
    "the comparison",
    bar,
    kind="compare",
)
bar.empty()

st.header("Agreement")
cols = st.columns(4)
for col, (key, title) in zip(cols, METRICS.items(), strict=True):
    col.metric(title, f"{np.nanmean(result.agreement[key]):.3f}", help=f"mean over {len(indices)} images")
table = pd.DataFrame(result.table(names))
metric = st.selectbox("Per class", list(METRICS), format_func=METRICS.get, key="cmp_metric")
st.plotly_chart(
    px.box(
        table,
        x="class",
        y=metric,
        points="all",
        title=f"{METRICS[metric]} per class",
        category_orders={"class": names},
    ).update_layout(height=320),
    key="cmp_box",
)

st.subheader("Where they disagree most")
worst = result.most_different(metric, k=min(6, len(indices)))
for pos in worst:
    idx = int(result.indices[pos])
    a, b = result.teacher_maps[pos], result.student_maps[pos]
    scale = render.shared_scale([a, b])
    row = st.columns([1, 1, 1, 2])
    up = render.crisp
    row[0].image(up(data.test.images[idx]), caption=f"#{idx}: {names[result.labels[pos]]}")
    row[1].image(up(render.heatmap(a, scale=scale)), caption=f"teacher → {names[result.teacher_pred[pos]]}")
    row[2].image(up(render.heatmap(b, scale=scale)), caption=f"student → {names[result.student_pred[pos]]}")
    row[3].markdown("  \n".join(f"{METRICS[k]}: **{result.agreement[k][pos]:.3f}**" for k in METRICS))
with st.expander("Every image"):
    st.dataframe(table, hide_index=True)
    st.download_button(
        "Download the table (CSV)",
        table.to_csv(index=False),
        "kdviz-agreement.csv",
        "text/csv",
        key="cmp_csv",
    )

st.header("Faithfulness")
st.markdown(
    "Pixels are removed (**deletion**) or added to a blank image (**insertion**) in the order of each "
    "model's own map, most attributed first. A faithful map makes the probability of the true class "
    "fall fast on deletion (small area) and rise fast on insertion (large area)."
)
curves = {  # cached: a rerun with the same images and maps computes no curves again
    "teacher": compare_ui.faithfulness(
        teacher, data.test, f"{sel.source}|test", indices, result.teacher_maps, result.labels
    ),
    "student": compare_ui.faithfulness(
        student, data.test, f"{sel.source}|test", indices, result.student_maps, result.labels
    ),
}
fig = go.Figure()
for role, c in curves.items():
    colour = "#1f77b4" if role == "teacher" else "#d62728"
    fig.add_trace(
        go.Scatter(
            x=c.fractions,
            y=c.deletion.mean(0),
            name=f"{role} deletion (AUC {c.deletion_auc.mean():.3f})",
            line=dict(color=colour),
        )
    )
    fig.add_trace(
        go.Scatter(
            x=c.fractions,
            y=c.insertion.mean(0),
            name=f"{role} insertion (AUC {c.insertion_auc.mean():.3f})",
            line=dict(color=colour, dash="dash"),
        )
    )
fig.update_layout(
    xaxis_title="share of pixels removed / inserted",
    yaxis_title="probability of the true class",
    height=340,
    yaxis=dict(range=[0, 1.02]),
)
st.plotly_chart(fig, key="cmp_faith")

st.header("Sanity check")
st.markdown(
    "Adebayo et al. (2018): a map should change when the model's weights are randomised. "
    "High similarity between the trained and the random teacher's maps would mean the map shows the image, "
    "not the model."
)
check = comparison.sanity_check(teacher, data.test, indices[:8], options, result.teacher_maps[:8])
st.metric(
    "Spearman, trained vs random teacher",
    f"{np.nanmean(check.similarity):.3f}",
    help="mean over the first 8 images; near 0 is what a faithful method gives",
)
row = st.columns(min(4, len(check.similarity)))
for i, col in enumerate(row):
    col.image(render.crisp(render.heatmap(check.trained_maps[i])), caption="trained")
    col.image(
        render.crisp(render.heatmap(check.random_maps[i])),
        caption=f"random weights (ρ {check.similarity[i]:.2f})",
    )
