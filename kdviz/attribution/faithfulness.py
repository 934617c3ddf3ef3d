"""Do the maps point at what the model uses? Deletion and insertion curves, and a sanity check.

Deletion: remove pixels (set to the baseline) in the order of the map, most attributed first; a
faithful map makes the target's probability fall fast (small area under the curve). Insertion:
start from the baseline and add pixels in that order; a faithful map makes it rise fast (large
area). Both are batched: each step is one forward pass over all images.

Sanity check (Adebayo et al. 2018): a map that barely changes when the model's weights are
randomised says more about the image than about the model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class Curves:
    fractions: np.ndarray  # (S,) share of pixels removed or inserted
    deletion: np.ndarray  # (N, S) probability of the target
    insertion: np.ndarray  # (N, S)

    @property
    def deletion_auc(self) -> np.ndarray:
        return np.trapezoid(self.deletion, self.fractions, axis=1)

    @property
    def insertion_auc(self) -> np.ndarray:
        return np.trapezoid(self.insertion, self.fractions, axis=1)


@torch.no_grad()
def deletion_insertion(
    model: nn.Module,
    x: torch.Tensor,
    maps2d: np.ndarray,
    target: np.ndarray,
    *,
    baseline: torch.Tensor | None = None,
    steps: int = 16,
) -> Curves:
    """Curves for images ``x`` (N, C, H, W, normalised) ranked by ``maps2d`` (N, H, W)."""
    model.eval()
    n, c, h, w = x.shape
    base = torch.zeros_like(x) if baseline is None else baseline.expand_as(x)
    order = torch.as_tensor(np.argsort(-maps2d.reshape(n, -1), axis=1, kind="stable").copy())
    fractions = np.linspace(0, 1, steps + 1)
    tgt = torch.as_tensor(target, dtype=torch.long)[:, None]
    deletion, insertion = [], []
    for f in fractions:
        k = int(round(f * h * w))
        mask = torch.zeros(n, h * w, dtype=torch.bool)
        if k:
            mask.scatter_(1, order[:, :k], True)
        mask = mask.view(n, 1, h, w)
        removed = torch.where(mask, base, x)
        inserted = torch.where(mask, x, base)
        probs = model(torch.cat([removed, inserted])).softmax(1).gather(1, torch.cat([tgt, tgt]))[:, 0]
        deletion.append(probs[:n].numpy())
        insertion.append(probs[n:].numpy())
    return Curves(fractions, np.stack(deletion, 1), np.stack(insertion, 1))


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """The same architecture with every layer re-initialised (Adebayo et al.'s cascading end point)."""
    torch.manual_seed(seed)
    clone = copy.deepcopy(model)
    for module in clone.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
    return clone.eval()
