"""Choosing an architecture on a page: kdviz's registered ones, or any torchvision or timm classifier
found with a search box (the libraries hold about 1,500 names: too many for one list)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from kdviz.models import list_models, read_card
from kdviz.models.checkpoints import CheckpointError
from kdviz.models.derive import derived_students
from kdviz.models.library import search
from kdviz.models.pretrained import DOWNLOAD


@st.cache_data(show_spinner=False, max_entries=64)
def _search(query: str) -> list[str]:
    return search(query, limit=60)


def architecture(container, default: str, *, key: str, label: str = "Architecture") -> str:
    """A search box over torchvision's and timm's names and a list of what it found, after kdviz's own."""
    query = container.text_input(
        "Search torchvision and timm",
        key=f"{key}_search",
        placeholder="e.g. mobilenetv3, timm resnet18, efficientnet_b0",
        help="Any classification model of torchvision or timm, built with this data set's classes.",
    )
    names = [s.name for s in list_models()]
    found = _search(query.strip()) if query.strip() else []
    options = found + [n for n in names if n not in found] if found else names
    if default not in options:
        options = [default, *options]
    index = 0 if found else options.index(default)
    if query.strip() and not found:
        container.caption(f"No torchvision or timm name contains '{query.strip()}'.")
    return container.selectbox(
        label,
        options,
        index=index,
        key=f"{key}__{query.strip()}" if query.strip() else key,
        help="\n".join(f"{s.name}: {s.description}" for s in list_models()),
    )


def pretrained_choice(container, arch: str, *, key: str) -> str | None:
    """Where a run's weights start: random, the library's download, or a local file (None: random)."""
    choices = ["random initialisation", "the library's pretrained weights", "a local weights file"]
    if ":" not in arch:
        choices = choices[:1] + choices[2:]
    start = container.radio("Start from", choices, horizontal=True, key=f"{key}_{arch}")
    if start == choices[0]:
        return None
    if start == "the library's pretrained weights":
        container.caption(
            "Downloaded by the library (torchvision's weights enum, timm through the Hugging Face hub). "
            "Offline, give the file's path instead."
        )
        return DOWNLOAD
    path = container.text_input(
        "Weights file on the server (safetensors or a PyTorch state dict)", key=f"{key}_path_{arch}"
    )
    return path.strip() or None


@st.cache_data(show_spinner="Measuring the derived students…", max_entries=32)
def _derived(teacher: str, ratio: float) -> list[dict]:
    return [s.as_dict() for s in derived_students(teacher, ratio=ratio)]


def derived_default(teacher_path, ratio: float = 4.0) -> tuple[str, dict] | None:
    """The student derived from the checkpoint's library architecture nearest ``ratio``× (None
    for a kdviz architecture, which has its own default student, or where no knob is known)."""
    arch = arch_of(teacher_path, "")
    if not arch or ":" not in arch:
        return None
    try:
        rows = _derived(arch, ratio)
    except (KeyError, ValueError):
        return None
    return (rows[0]["arch"], dict(rows[0]["arch_kwargs"])) if rows else None


def arch_of(path, default: str) -> str:
    """The architecture on the card of the checkpoint at ``path``; ``default`` where there is none."""
    if path is None:
        return default
    try:
        return read_card(path).arch
    except CheckpointError:
        return default


def derived_table(default_teacher: str, *, key: str) -> None:
    """Students derived from a teacher by its library's width or depth knob, compression measured."""
    c1, c2 = st.columns([3, 1])
    teacher = c1.text_input("Teacher architecture", value=default_teacher, key=f"{key}_teacher").strip()
    ratio = c2.number_input("Wanted compression (×)", 1.5, 64.0, 4.0, step=0.5, key=f"{key}_ratio")
    if not teacher:
        return
    try:
        rows = _derived(teacher, float(ratio))
    except KeyError as exc:
        st.error(str(exc))
        return
    if not rows:
        st.info(f"kdviz knows no width or depth knob of {teacher}: name the student's architecture yourself.")
        return
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "student": r["arch"],
                    "arguments": ", ".join(f"{k}={v}" for k, v in r["arch_kwargs"].items()),
                    "knob": r["knob"],
                    "parameters": r["params"],
                    "compression": f"{r['compression']:.2f}×",
                }
                for r in rows
            ]
        ),
        hide_index=True,
    )
    st.caption(f"Nearest {ratio:g}× first; parameters counted on the built model ({len(rows)} variants).")
