"""The Models page's training form: widgets in, a ``TrainRequest`` out (the page only starts it).

Two recipes: the fast one (airbench-style, the default for CIFAR-10 and image folders: its settings
are tuned together, so the form offers only the epochs, precision and techniques to switch off) and
the default one (every optimiser setting is a widget).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from kdviz.core import machine
from kdviz.data import source_size
from kdviz.models import get_spec
from kdviz.training.arms import ARMS, DistillConfig, arm_ingredients
from kdviz.training.distillation import DistillRequest
from kdviz.training.loop import OPTIMIZERS, TrainConfig
from kdviz.training.workflows import FAST_TECHNIQUES, RECIPES, TrainRequest, default_recipe, defaults_for
from kdviz.training.workspace import RunNameError, Workspace, now

from . import arch_picker

#: a student that learns from the labels alone: plain training, no teacher
LABELS_ONLY = "the labels only"


def form(
    source: str, workspace: Workspace, *, busy: bool, teacher: Path | None = None
) -> TrainRequest | None:
    """Draw the form; the request when *Start training* was pressed and the name is valid, else None.

    A student can learn from ``teacher`` (the sidebar's) by any arm of the ablation (KD, IG
    overlays, attention transfer): the request is then a :class:`DistillRequest`."""
    px = source_size(source)
    st.caption(
        f"Images are read at {px}×{px} px (the sidebar's image size); the model's card records it, and "
        "the model is offered with data of that size."
    )
    c0, c00 = st.columns([1, 2])
    role = c0.radio("Role", ["teacher", "student"], horizontal=True, key="train_role")
    recipes = list(RECIPES)
    recipe = c00.radio(
        "Recipe",
        recipes,
        index=recipes.index(default_recipe(source)),
        horizontal=True,
        format_func=lambda r: f"{r}: {RECIPES[r]}",
        key=f"train_recipe_{source}",
    )
    d_arch, d_kwargs, d_cfg = defaults_for(source, role, recipe)
    arm = _learn_from(teacher) if role == "student" else LABELS_ONLY
    arch_key = f"train_arch_{role}_{recipe}"
    if arm != LABELS_ONLY and teacher is not None:
        derived = arch_picker.derived_default(teacher)
        if derived is not None:  # a library teacher: its own family's student near 4x by default
            d_arch, d_kwargs = derived
            arch_key += f"_of_{teacher.name}"
    c1, c2, c3 = st.columns(3)
    arch = arch_picker.architecture(c1, d_arch, key=arch_key)
    kwargs = {}
    if "width_mult" in get_spec(arch).signature():
        kwargs["width_mult"] = c2.select_slider(
            "Width multiplier",
            [0.25, 0.35, 0.5, 0.75, 1.0],
            value=d_kwargs.get("width_mult", 1.0),
            key=f"train_width_{role}",
        )
    name = c3.text_input(
        "Run name",
        value=f"{role}-{arch}-{now()[:8]}",
        key=f"train_name_{role}_{arch}",
        help="An existing run of this name is resumed from its last finished epoch (unless another "
        "process or session is training it: then a free name is offered).",
    )
    pretrained = arch_picker.pretrained_choice(st, arch, key=f"train_start_from_{role}_{recipe}")
    if recipe == "finetune" and pretrained is None:
        st.caption("The fine-tuning recipe is made for pretrained weights: choose where they come from.")
    cfg = _fast_settings(d_cfg, arch) if recipe == "fast" else _default_settings(d_cfg)
    if arm != LABELS_ONLY:
        cfg = _distill_settings(cfg, arm, teacher)
    if not st.button("Start training", type="primary", disabled=busy, key="train_start"):
        return None
    try:
        common: dict[str, Any] = dict(
            name=workspace.path(name).name,
            arch=arch,
            dataset=source,
            arch_kwargs={**(d_kwargs if arch == d_arch else {}), **kwargs},
            role=role,
            pretrained=pretrained,
        )
        if isinstance(cfg, DistillConfig):
            return DistillRequest(**common, config=cfg, teacher=str(teacher))
        return TrainRequest(**common, config=cfg)
    except RunNameError as exc:
        st.error(str(exc))
        return None


def _learn_from(teacher: Path | None) -> str:
    """What a student learns from: the labels alone, or the sidebar's teacher by an arm."""
    if teacher is None:
        st.caption("Choose a teacher in the sidebar to distil this student from it (KD, IG overlays…).")
        return LABELS_ONLY
    options = [LABELS_ONLY, *(a for a in ARMS if a != "baseline")]
    return st.radio(
        f"Learn from (teacher `{teacher.name}`, the sidebar's)",
        options,
        horizontal=True,
        format_func=lambda a: a if a == LABELS_ONLY else f"{a}: {ARMS[a].removeprefix('+ ')}",
        key="train_learn_from",
    )


def _distill_settings(cfg: TrainConfig, arm: str, teacher: Path | None) -> DistillConfig:
    """The arm's settings (the paper's by default) on top of the recipe's training settings. The
    subset of training images becomes the distillation subset, so the teacher's IG cache covers
    exactly the images the student sees."""
    ingredients = arm_ingredients(arm)
    base = DistillConfig(arm=arm)
    values: dict = {}
    with st.expander(f"Distillation settings ({arm})"):
        a, b, c, d = st.columns(4)
        if "kd" in ingredients:
            values["temperature"] = a.number_input(
                "Temperature T", 1.0, 20.0, base.temperature, key="distill_T"
            )
            values["alpha"] = b.number_input("α (KD weight)", 0.0, 1.0, base.alpha, key="distill_alpha")
        if "ig" in ingredients:
            values["ig_steps"] = int(
                c.number_input("IG steps (teacher cache)", 2, 128, base.ig_steps, key="distill_steps")
            )
            values["overlay_p"] = d.number_input(
                "Overlay probability p", 0.0, 1.0, base.overlay_p, key="distill_p"
            )
            values["overlay_lambda"] = a.number_input(
                "Overlay strength λ", 0.0, 1.0, base.overlay_lambda, key="distill_lambda"
            )
        if "at" in ingredients:
            values["at_beta"] = b.number_input("Attention β", 0.0, 10.0, base.at_beta, key="distill_beta")
    if "ig" in ingredients:
        st.caption(
            "The teacher's IG maps of the training images are computed once before the first epoch "
            "(a bar shows it) and kept for the next student of this teacher."
        )
    own = cfg.as_dict()
    subset = own.pop("train_limit", None)
    return DistillConfig(**own, **values, arm=arm, subset=subset, teacher=str(teacher or ""))


def _common(c_epochs, cfg: TrainConfig) -> tuple[int, int, int]:
    epochs = c_epochs.number_input("Epochs", 1, 500, cfg.epochs, key="train_epochs")
    with st.expander("Seed and subset"):
        a, b = st.columns(2)
        seed = a.number_input(
            "Seed",
            0,
            2**31 - 1,
            0,
            key="train_seed",
            help="The same seed gives the same weights, here and from the CLI.",
        )
        limit = b.number_input(
            "Training images (0: all)",
            0,
            10_000_000,
            0,
            key="train_limit",
            help="A fixed random subset, for a quick look.",
        )
    return int(epochs), int(seed), int(limit)


def _fast_settings(cfg: TrainConfig, arch: str) -> TrainConfig:
    c4, c5, c6 = st.columns(3)
    epochs, seed, limit = _common(c4, cfg)
    precisions = ["float32", "bfloat16"] if machine.native_bfloat16() else ["float32"]
    precision = c5.selectbox(
        "Precision",
        precisions,
        key="train_precision",
        help="bfloat16 autocast is offered where this CPU computes it natively "
        f"({machine.cpu_name()}); about 2.5× faster, float32 is bitwise repeatable.",
    )
    off = c6.multiselect(
        "Switch off",
        list(FAST_TECHNIQUES),
        key="train_off",
        help="Each technique of the recipe can be switched off to see what it buys.",
    )
    if get_spec(arch).family != "airnet" and "whiten" not in off:
        off = [*off, "whiten"]  # only the airnet family has a whitening stem
        st.caption(f"{arch} has no whitening stem: that technique is off.")
    overrides = {k: v for t in off for k, v in FAST_TECHNIQUES[t].items()}
    return TrainConfig(
        **{
            **cfg.as_dict(),
            **overrides,
            "epochs": epochs,
            "seed": seed,
            "train_limit": limit or None,
            "precision": precision,
        }
    )


def _default_settings(cfg: TrainConfig) -> TrainConfig:
    c4, c5, c6, c7 = st.columns(4)
    epochs, seed, limit = _common(c4, cfg)
    batch = c5.number_input("Batch size", 8, 1024, cfg.batch_size, step=8, key="train_batch")
    optimizer = c6.selectbox(
        "Optimizer",
        OPTIMIZERS,
        key="train_optimizer",
        help="muon: Muon for the filters followed by a norm layer, Nesterov SGD for the rest.",
    )
    lr = c7.number_input(
        "Learning rate",
        1e-5,
        1.0,
        1e-3 if optimizer == "adamw" else cfg.lr,
        format="%.4f",
        key=f"train_lr_{optimizer}",
    )
    muon_lr = cfg.muon_lr
    if optimizer == "muon":
        muon_lr = c7.number_input(
            "Filters' learning rate (Muon)", 1e-4, 2.0, cfg.muon_lr, format="%.4f", key="train_muon_lr"
        )
    with st.expander("More settings"):
        c8, c9, c10 = st.columns(3)
        weight_decay = c8.number_input(
            "Weight decay", 0.0, 0.1, cfg.weight_decay, format="%.5f", key="train_wd"
        )
        warmup = c9.number_input("Warm-up epochs", 0.0, 20.0, cfg.warmup_epochs, key="train_warmup")
        smoothing = c10.number_input("Label smoothing", 0.0, 0.5, 0.0, key="train_smoothing")
        c13, c14 = st.columns(2)
        crop = c13.number_input("Random-crop padding (0: off)", 0, 16, cfg.crop_padding, key="train_crop")
        flip = c14.checkbox(
            "Random horizontal flip",
            value=cfg.hflip,
            key="train_flip",
            help="Off by default for digits: a mirrored 2 is not a 2.",
        )
    # the recipe's other fields (the fine-tuning recipe's backbone rate, its name) are kept
    values = dict(
        epochs=epochs,
        batch_size=int(batch),
        optimizer=optimizer,
        lr=float(lr),
        muon_lr=float(muon_lr),
        weight_decay=float(weight_decay),
        warmup_epochs=float(warmup),
        label_smoothing=float(smoothing),
        seed=seed,
        crop_padding=int(crop),
        hflip=bool(flip),
        train_limit=limit or None,
    )
    return TrainConfig(**{**cfg.as_dict(), **values})
