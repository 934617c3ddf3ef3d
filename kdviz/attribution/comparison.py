"""Teacher against student over a set of images: their maps, how far they agree, how faithful each is.

The library side of the Compare page, usable from a script: choose images, get a table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..data.base import ImageSplit
from ..models.checkpoints import LoadedModel
from .agreement import compare_maps, spearman
from .faithfulness import Curves, deletion_insertion, randomized_copy
from .front import attribute
from .options import AttributionOptions
from .render import reduce_channels

Progress = Callable[[float, str], None]


def choose_images(
    split: ImageSplit,
    how: str,
    *,
    n: int = 32,
    label: int | None = None,
    seed: int = 0,
    teacher_pred: np.ndarray | None = None,
    student_pred: np.ndarray | None = None,
) -> np.ndarray:
    """Indices into ``split``: ``"class"`` (of ``label``), ``"random"``, or ``"disagree"`` (the two
    models' predictions differ)."""
    rng = np.random.default_rng(seed)
    if how == "class":
        pool = np.flatnonzero(split.labels == label)
    elif how == "random":
        pool = np.arange(len(split))
    elif how == "disagree":
        if teacher_pred is None or student_pred is None:
            raise ValueError("'disagree' needs both models' predictions")
        pool = np.flatnonzero(teacher_pred != student_pred)
    else:
        raise ValueError(f"unknown selection {how!r}: class, random or disagree")
    if len(pool) > n:
        pool = np.sort(rng.choice(pool, n, replace=False))
    return pool


@dataclass
class Comparison:
    indices: np.ndarray  # into the split
    labels: np.ndarray
    teacher_maps: np.ndarray  # (N, H, W), reduced with |.| summed over channels
    student_maps: np.ndarray
    teacher_pred: np.ndarray
    student_pred: np.ndarray
    agreement: dict[str, np.ndarray]  # metric -> (N,)

    def table(self, class_names: Sequence[str]) -> list[dict]:
        rows = []
        for i, idx in enumerate(self.indices):
            rows.append(
                {
                    "image": int(idx),
                    "class": class_names[self.labels[i]],
                    "teacher": class_names[self.teacher_pred[i]],
                    "student": class_names[self.student_pred[i]],
                    **{k: float(v[i]) for k, v in self.agreement.items()},
                }
            )
        return rows

    def most_different(self, metric: str = "spearman", k: int = 6) -> np.ndarray:
        """Positions (into this comparison) of the ``k`` least agreeing images, least first."""
        values = np.nan_to_num(self.agreement[metric], nan=np.inf)
        return np.argsort(values, kind="stable")[:k]


def _maps(
    loaded: LoadedModel,
    images: np.ndarray,
    labels: np.ndarray,
    options: AttributionOptions,
    batch: int,
    progress: Progress | None,
    what: str,
    start: float,
    span: float,
):
    card = loaded.card
    maps, preds = [], []
    for b in range(0, len(images), batch):
        x = loaded.preprocess(images[b : b + batch])
        result = attribute(
            loaded.model,
            x,
            options,
            mean=card.mean,
            std=card.std,
            labels=torch.as_tensor(labels[b : b + batch]),
        )
        maps.append(np.stack([reduce_channels(m, "absolute") for m in result.maps]))
        preds.append(result.predicted)
        if progress:
            progress(
                start + span * min(1.0, (b + batch) / len(images)),
                f"{what}: {min(b + batch, len(images))}/{len(images)}",
            )
    return np.concatenate(maps), np.concatenate(preds)


def compare(
    teacher: LoadedModel,
    student: LoadedModel,
    split: ImageSplit,
    indices: np.ndarray,
    options: AttributionOptions,
    *,
    top_k_percent: float = 10.0,
    batch: int = 16,
    progress: Progress | None = None,
) -> Comparison:
    """Both models' maps of the same images and four agreement scores per image."""
    images, labels = split.images[indices], split.labels[indices]
    t_maps, t_pred = _maps(teacher, images, labels, options, batch, progress, "teacher maps", 0.0, 0.5)
    s_maps, s_pred = _maps(student, images, labels, options, batch, progress, "student maps", 0.5, 0.5)
    scores = [compare_maps(a, b, top_k_percent) for a, b in zip(t_maps, s_maps, strict=True)]
    agreement = {
        k: np.array([getattr(s, k) for s in scores]) for k in ("spearman", "cosine", "top_k_iou", "ssim")
    }
    return Comparison(np.asarray(indices), labels, t_maps, s_maps, t_pred, s_pred, agreement)


def faithfulness(
    loaded: LoadedModel,
    split: ImageSplit,
    indices: np.ndarray,
    maps: np.ndarray,
    target: np.ndarray,
    steps: int = 16,
) -> Curves:
    """Deletion and insertion curves of one model's maps on its own images (baseline: zeros)."""
    x = loaded.preprocess(split.images[indices])
    return deletion_insertion(loaded.model, x, maps, target, steps=steps)


@dataclass
class SanityCheck:
    trained_maps: np.ndarray
    random_maps: np.ndarray
    similarity: np.ndarray  # Spearman per image; near 1 would mean the map ignores the weights


def sanity_check(
    loaded: LoadedModel,
    split: ImageSplit,
    indices: np.ndarray,
    options: AttributionOptions,
    trained_maps: np.ndarray,
    seed: int = 0,
) -> SanityCheck:
    """Maps of the same architecture with random weights, and their similarity to the trained maps."""
    rand = LoadedModel(randomized_copy(loaded.model, seed), loaded.card, loaded.path)
    labels = split.labels[indices]
    random_maps, _ = _maps(rand, split.images[indices], labels, options, 16, None, "", 0, 0)
    sims = np.array([spearman(a, b) for a, b in zip(trained_maps, random_maps, strict=True)])
    return SanityCheck(trained_maps, random_maps, sims)
