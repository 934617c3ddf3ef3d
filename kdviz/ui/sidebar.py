"""The sidebar every page shares: which data set at which image size, which teacher, which student.

A model is offered only with data of its size (its card records the size): models of the same data
set at other sizes are named in a note, with the size to choose to use them.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from kdviz.core import settings
from kdviz.data import DEFAULT_IMAGE_SIZE, IMAGE_SIZES, DataError, find_cifar10, split_size, with_size
from kdviz.training.workspace import RunInfo, model_choices, same_dataset, unusable_runs

from . import presentation, session

BUILT_IN, SHAPES, CIFAR, FOLDER = (
    "Built-in digits (offline)",
    "Built-in shapes (offline, any size)",
    "CIFAR-10",
    "Image folder…",
)
IMAGE_SIZE_KEY = "sidebar_image_size"
#: A CIFAR-10 choice whose images are not on this machine: the CIFAR-10 models still judge photos.
PHOTOS_ONLY = "cifar10"


def _image_size_widget(what: str) -> int:
    """The size the chosen data set is read at; the models offered are those of that size."""
    if st.session_state.get(IMAGE_SIZE_KEY) not in IMAGE_SIZES:
        st.session_state[IMAGE_SIZE_KEY] = DEFAULT_IMAGE_SIZE
    return st.sidebar.selectbox(
        "Image size",
        IMAGE_SIZES,
        key=IMAGE_SIZE_KEY,
        format_func=lambda px: f"{px}×{px} px",
        help=f"{what} is read at this size (each image resized, decoded once per size and kept in a "
        "memory-mapped cache). Only models trained at this size are offered below; the card of each "
        "model records its size.",
    )


def _source_widget() -> str:
    source = _base_source_widget()
    if source == "digits":
        return source  # 8×8 scans shown at 32×32: a larger size would only blur them
    what = {"shapes": "The shapes data set"}.get(
        source, "CIFAR-10 (upscaled)" if source.startswith("cifar10") else "The folder"
    )
    return with_size(source, _image_size_widget(what))


def _base_source_widget() -> str:
    kinds = [CIFAR, BUILT_IN, SHAPES, FOLDER]
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
    if kind == SHAPES:
        return "shapes"
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
            return PHOTOS_ONLY  # the size is added by the caller
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


def _other_sizes_note(source: str, pending: dict[str, str | None]) -> None:
    """Models of this data set made at another size are not offered; say which, and how to get them."""
    size = split_size(source)[1] or DEFAULT_IMAGE_SIZE
    any_size = with_size(source, DEFAULT_IMAGE_SIZE)
    others = [
        r
        for r in model_choices(session.workspace())
        if r.card is not None
        and r.card.image_size != size
        and same_dataset(with_size(r.card.dataset, DEFAULT_IMAGE_SIZE), any_size)
    ]
    for role, path in pending.items():  # a model chosen on a page that the sidebar cannot offer
        match = next((r for r in others if str(r.path) == path), None)
        if match is not None and match.card is not None:
            px = match.card.image_size
            st.sidebar.warning(
                f"**{match.name}** takes {px}×{px} images but the data set is read at {size}×{size}: "
                f"choose image size {px}×{px} px to use it as the {role}."
            )
    if others:
        sizes = sorted({r.card.image_size for r in others if r.card is not None})
        st.sidebar.caption(
            f"{len(others)} model(s) of this data set take other sizes "
            f"({', '.join(f'{px}×{px}' for px in sizes)} px) and are not offered at {size}×{size}: "
            "choose their image size above to use them."
        )


def render() -> session.Selection:
    """Draw the sidebar and return what it says; pages read the same through ``session.selection``."""
    source = _source_widget()
    st.session_state[session.DATA_SOURCE] = source
    options = model_choices(session.workspace(), source)
    offered = {str(o.path) for o in options}
    pending = {
        role: st.session_state.get(session.PENDING[role])
        for role in ("teacher", "student")
        if st.session_state.get(session.PENDING[role]) not in offered
    }
    _model_widget("teacher", options)
    _model_widget("student", options)
    _other_sizes_note(source, pending)
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

    if split_size(source)[0] == PHOTOS_ONLY:
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
