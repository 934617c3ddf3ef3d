"""How far two attribution maps agree: rank correlation, cosine, top-k overlap, structure.

All take reduced maps (H, W) (see :func:`kdviz.attribution.render.reduce_channels`); ``compare_maps`` gives
every score at once, and ``compare_batches`` does so for two stacks of maps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .render import top_k_mask


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation of the pixel values: do both maps order the pixels alike?"""
    from scipy.stats import spearmanr

    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else float("nan")


def top_k_iou(a: np.ndarray, b: np.ndarray, percent: float = 10.0) -> float:
    """Intersection over union of the two maps' top ``percent`` % pixels."""
    ma, mb = top_k_mask(a, percent), top_k_mask(b, percent)
    union = np.logical_or(ma, mb).sum()
    return float(np.logical_and(ma, mb).sum() / union) if union else float("nan")


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of the two maps, each scaled to [0, 1] first."""
    from skimage.metrics import structural_similarity

    def unit(m):
        m = np.asarray(m, dtype=np.float64)
        span = np.ptp(m)
        return (m - m.min()) / span if span > 0 else np.zeros_like(m)

    side = min(a.shape[-2:])
    win = min(7, side if side % 2 else side - 1)
    return float(structural_similarity(unit(a), unit(b), data_range=1.0, win_size=max(3, win)))


@dataclass
class Agreement:
    spearman: float
    cosine: float
    top_k_iou: float
    ssim: float

    def as_dict(self) -> dict:
        return asdict(self)


def compare_maps(a: np.ndarray, b: np.ndarray, percent: float = 10.0) -> Agreement:
    return Agreement(spearman(a, b), cosine(a, b), top_k_iou(a, b, percent), ssim(a, b))


def compare_batches(a: np.ndarray, b: np.ndarray, percent: float = 10.0) -> list[Agreement]:
    """Pairwise agreement of two stacks (N, H, W)."""
    if a.shape != b.shape:
        raise ValueError(f"map stacks differ in shape: {a.shape} and {b.shape}")
    return [compare_maps(x, y, percent) for x, y in zip(a, b, strict=True)]
