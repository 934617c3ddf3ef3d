"""Models: the chosen teacher and student side by side; train, upload and manage runs."""

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from kdviz.core.lock import LockHeld
from kdviz.models import list_models
from kdviz.models.checkpoints import CheckpointError
from kdviz.training.workflows import import_checkpoint
from kdviz.training.workspace import RunNameError
from kdviz.ui import arch_picker, cache, export_panel, session, train_form, training
from kdviz.ui.cards import human_bytes, teacher_and_student
from kdviz.ui.shell import require_app
from kdviz.ui.sidebar import safe_dataset

require_app()

st.title("Models")
sel = session.selection()
ws = session.workspace()
tab_cards, tab_train, tab_runs, tab_upload, tab_export = st.tabs(
    ["Teacher & student", "Train", "Runs", "Upload a checkpoint", "Export for a device"]
)

# ------------------------------------------------------------------ side by side
with tab_cards:
    teacher_and_student(
        cache.chosen_models(sel.teacher, sel.student),
        "No {role} for this data set yet: train one in the **Train** tab.",
    )

# ------------------------------------------------------------------ train
with tab_train:
    job = training.current()
    if job is not None:
        training.show(job)
    busy = job is not None and job.running
    request = train_form.form(sel.source, ws, busy=busy, teacher=sel.teacher)
    if request is not None and training.start_unless_held(request):
        st.rerun()
    training.show_refused()
    # a toggle, not an expander: an expander's content runs (and measures) on every rerun
    if st.toggle(
        "Students derived from a teacher (width and depth knobs, measured compression)", key="derive_on"
    ):
        arch_picker.derived_table(
            arch_picker.arch_of(sel.teacher, "timm:mobilenetv3_large_100"), key="derive"
        )

# ------------------------------------------------------------------ runs
with tab_runs:
    runs = ws.list()
    if not runs:
        st.info(f"The workspace `{ws.root}` holds no runs yet.")
    else:
        table = pd.DataFrame(
            [
                {
                    "run": r.name,
                    "architecture": r.card.arch if r.card else "?",
                    "role": r.card.role if r.card else "?",
                    "data set": r.card.dataset if r.card else "?",
                    "test accuracy": (r.card.metrics or {}).get("test_accuracy") if r.card else None,
                    "parameters": (r.card.stats or {}).get("params") if r.card else None,
                    "size": human_bytes((r.card.stats or {}).get("size_bytes", 0)) if r.card else "",
                    "status": r.status,
                }
                for r in runs
            ]
        )
        st.dataframe(
            table,
            hide_index=True,
            column_config={"test accuracy": st.column_config.NumberColumn(format="percent")},
        )
        picked = st.selectbox("Run", [r.name for r in runs], key="runs_pick")
        c1, c2, c3 = st.columns(3)
        picked_info = next(r for r in runs if r.name == picked)
        if picked_info.problem:
            st.error(
                f"`{picked}` cannot be used as a model: {picked_info.problem}. Rename or delete it below."
            )
        elif picked_info.card is not None:
            if c1.button("Use as teacher", key="runs_use_teacher"):
                session.choose("teacher", picked_info.path)
                st.rerun()
            if c1.button("Use as student", key="runs_use_student"):
                session.choose("student", picked_info.path)
                st.rerun()
        new_name = c2.text_input("New name", key="runs_new_name")
        if c2.button("Rename", key="runs_rename", disabled=not new_name):
            try:
                ws.rename(picked, new_name)
                st.toast(f"Renamed {picked} to {new_name}")
                st.rerun()
            except (RunNameError, FileExistsError, FileNotFoundError, LockHeld) as exc:
                st.error(str(exc))
        sure = c3.checkbox("I want to delete it", key="runs_sure")
        if c3.button("Delete", key="runs_delete", disabled=not sure):
            try:
                ws.delete(picked)
            except LockHeld as exc:
                st.error(str(exc))
            else:
                st.session_state.pop("runs_sure", None)
                st.rerun()

# ------------------------------------------------------------------ upload
with tab_upload:
    st.markdown(
        "Upload weights from elsewhere: `.safetensors`, `.pt`, `.pth` or `.th`. Pickled files are read "
        "with `torch.load(weights_only=True)`: **code inside a pickle is never run**; such a file is refused."
    )
    data = safe_dataset(sel.source)
    upload = st.file_uploader("Checkpoint", type=["safetensors", "pt", "pth", "th"], key="upload_file")
    c1, c2 = st.columns(2)
    up_arch = arch_picker.architecture(c1, list_models()[0].name, key="upload_arch", label="Its architecture")
    up_role = c2.radio("Role", ["teacher", "student"], horizontal=True, key="upload_role")
    if st.button("Add to the workspace", disabled=upload is None or data is None, key="upload_go"):
        suffix = Path(upload.name).suffix
        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp) / f"upload{suffix}"
            file.write_bytes(upload.getvalue())
            try:
                run_dir = import_checkpoint(
                    file,
                    up_arch,
                    data,
                    ws.unique_name(f"upload-{Path(upload.name).stem}"),
                    workspace=ws,
                    role=up_role,
                )
            except (CheckpointError, RunNameError) as exc:
                st.error(
                    f"Not added: {str(exc).replace(str(file), upload.name)}"
                )  # the name the person knows
            else:
                session.choose(up_role, run_dir)
                # rerun so the sidebar, drawn before this page, shows the new choice at once
                st.session_state["upload_added"] = f"Added as `{run_dir.name}` and chosen as the {up_role}."
                st.rerun()
    if added := st.session_state.pop("upload_added", None):
        st.success(added)

# ------------------------------------------------------------------ export
with tab_export:
    st.markdown(
        "An ONNX file for a device, checked against PyTorch on real test images before it is offered, "
        "with its preprocessing and class names in the file's metadata; optionally an int8 copy with "
        "its accuracy and latency against float. The same as `python -m kdviz export`."
    )
    chosen_paths = {role: path for role, path in (("teacher", sel.teacher), ("student", sel.student)) if path}
    if not chosen_paths:
        st.info("Choose a teacher or a student in the sidebar.")
    else:
        role = st.radio("Export", list(chosen_paths), horizontal=True, key="export_role")
        try:
            export_panel.panel(cache.model(chosen_paths[role]), safe_dataset(sel.source), key="models_export")
        except CheckpointError:  # the first tab already says why
            st.info(f"The {role} cannot be loaded (see the first tab).")
