"""The sidebar every page shares: which data set, which teacher, which student."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from kdviz.core import settings
from kdviz.data import DataError, find_cifar10
from kdviz.training.workspace import RunInfo, model_choices, unusable_runs

from . import presentation, session

BUILT_IN, CIFAR, FOLDER = "Built-in digits (offline)", "CIFAR-10", "Image folder…"
#: A CIFAR-10 choice whose images are not on this machine: the CIFAR-10 models still judge photos.
PHOTOS_ONLY = "cifar10"


def _source_widget() -> str:
    kinds = [CIFAR, BUILT_IN, FOLDER]
    if "sidebar_data_kind" not in st.session_state:
        st.session_state["sidebar_data_kind"] = BUILT_IN if settings.default_data() == "digits" else CIFAR
    default_root = settings.data_root()
    kind = st.sidebar.selectbox(
        "Data set",
        kinds,
        key="sidebar_data_kind",
        help="CIFAR-10's shipped teacher and student judge photos even without its images; "
        "the built-in digits ship with scikit-learn. Both need no network.",
    )
    if kind == BUILT_IN:
        return "digits"
    if kind == CIFAR:
        root = st.sidebar.text_input(
            "Data folder (KDVIZ_DATA)",
            value=str(default_root or ""),
            key="sidebar_data_root",
            help="The folder holding cifar10/train/<class>/*.jpg, or cifar-10-batches-py.",
        )
        found = find_cifar10(Path(root)) if root else None
        if found is None:
            st.sidebar.info(
                f"CIFAR-10's images are not under `{root}`: the CIFAR-10 models judge sample photos and "
                "uploads; the gallery, Compare and Benchmark need the images "
                "(`python -m kdviz data cifar10 --download`)."
            )
            return PHOTOS_ONLY
        return f"cifar10:{found[1] if found[0] == 'folder' else found[1].parent}"
    folder = st.sidebar.text_input("Image folder (train/<class>/, test/<class>/)", key="sidebar_folder")
    if not folder:
        st.sidebar.info("Enter a folder path; using the built-in digits until then.")
        return "digits"
    if not (Path(folder) / "train").is_dir() or not (Path(folder) / "test").is_dir():
        st.sidebar.warning(f"`{folder}` needs train/<class>/ and test/<class>/ sub-folders.")
        return "digits"
    return str(Path(folder).expanduser().resolve())


def _model_widget(role: str, options: list[RunInfo]) -> None:
    key = session.TEACHER if role == "teacher" else session.STUDENT
    if not options:
        st.sidebar.caption(f"No {role} for this data set yet: train one on the Models page.")
        st.session_state[key] = None
        return
    paths = [str(o.path) for o in options]
    labels = {str(o.path): o.label for o in options}
    widget_key = f"sidebar_{role}"
    # A choice made on a page (session.choose) wins, then the select box's own value, then the last
    # choice; else the newest of this role, else the first.
    for current in (
        st.session_state.pop(session.PENDING[role], None),
        st.session_state.get(widget_key),
        st.session_state.get(key),
    ):
        if current in paths:
            break
    else:
        preferred = [o for o in options if o.card and o.card.role == role]
        current = str((preferred or options)[0].path)
    # Set through the session state, before the widget exists: the browser's select box then shows
    # it too (a changed ``index`` alone leaves the browser showing, and later sending, the old value).
    st.session_state[widget_key] = current
    chosen = st.sidebar.selectbox(role.capitalize(), paths, format_func=labels.__getitem__, key=widget_key)
    st.session_state[key] = chosen


def render() -> session.Selection:
    """Draw the sidebar and return what it says; pages read the same through ``session.selection``."""
    source = _source_widget()
    st.session_state[session.DATA_SOURCE] = source
    options = model_choices(session.workspace(), source)
    _model_widget("teacher", options)
    _model_widget("student", options)
    _unusable_note(source)
    st.sidebar.caption(f"Workspace: `{session.workspace().root}`")
    _unwritable_note()
    presentation.render()
    return session.selection()


def _unusable_note(source: str) -> None:
    """Broken run folders are not offered above; say which and why, so nothing vanishes silently."""
    broken = unusable_runs(session.workspace(), source)
    if broken:

        def short(text: str) -> str:
            return text if len(text) <= 140 else text[:139] + "…"

        st.sidebar.warning(
            f"Not offered, cannot be loaded ({len(broken)}): "
            + "; ".join(f"**{r.name}**: {short(r.problem or '')}" for r in broken)
            + ". The Runs tab of the Models page shows the whole reason."
        )


def safe_dataset(source: str):
    """The data set, or None with a message (a page then shows what it can without it).

    CIFAR-10 chosen without its images is not an error: photos and uploads still work, so the page
    is told there is no data set and says so itself.
    """
    from . import cache

    if source == PHOTOS_ONLY:
        return None
    try:
        return cache.dataset(source)
    except DataError as exc:
        st.error(f"Cannot load the data set: {exc}")
        return None


#: what each folder kdviz writes holds, for the note when it cannot be written
CANNOT_SAVE = {
    "workspace": "training, uploaded checkpoints, renames and deletions cannot be saved; "
    "everything that only looks still works",
    "cache": "attribution maps and decoded images are computed but not kept (slower to see again)",
}


def _unwritable_note() -> None:
    """A read-only workspace or cache folder is not an error: say what cannot be saved."""
    for what, folder, why in settings.unwritable():
        st.sidebar.warning(f"The {what} folder `{folder}` cannot be written ({why}): {CANNOT_SAVE[what]}.")
