"""Accuracy and predictions of a model on a split, in batches, with progress and stop."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.base import ImageSplit
from ..data.loader import iterate_batches, num_batches


@dataclass
class Predictions:
    logits: np.ndarray  # float32 (N, C)
    labels: np.ndarray  # int64 (N,)

    @property
    def predicted(self) -> np.ndarray:
        return self.logits.argmax(1)

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.labels).mean()) if len(self.labels) else float("nan")

    def per_class_accuracy(self, num_classes: int) -> np.ndarray:
        out = np.full(num_classes, np.nan)
        for c in range(num_classes):
            mask = self.labels == c
            if mask.any():
                out[c] = (self.predicted[mask] == c).mean()
        return out


def tta_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Test-time augmentation (airbench's): the mean of a view and its mirror image, averaged half
    and half with the same for the view shifted one pixel up-left and one pixel down-right."""

    def mirrored(v: torch.Tensor) -> torch.Tensor:
        return 0.5 * (model(v) + model(v.flip(3)))

    h, w = x.shape[2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = 0.5 * (mirrored(padded[:, :, :h, :w]) + mirrored(padded[:, :, 2:, 2:]))
    return 0.5 * mirrored(x) + 0.5 * shifted


def spread_indices(n: int, limit: int | None) -> np.ndarray:
    """``limit`` indices spread evenly over ``range(n)``: folders are sorted by class, so the first
    N images would all be airplanes; an even spread keeps every class in a quick evaluation."""
    if not limit or limit >= n:
        return np.arange(n)
    return np.linspace(0, n - 1, limit).round().astype(np.int64)


@torch.no_grad()
def predict(
    model: nn.Module,
    split: ImageSplit,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 256,
    limit: int | None = None,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    tta: bool = False,
) -> Predictions:
    """Logits for ``split`` (or ``limit`` images spread evenly over it), model in eval mode.

    ``tta=True`` returns test-time augmented logits (six views an image, :func:`tta_logits`); they
    are a separate figure, never mixed with the plain one.
    """
    was_training = model.training
    model.eval().to(device)
    indices = spread_indices(len(split), limit)
    total = num_batches(len(indices), batch_size)
    outs, ys = [], []
    for i, (x, y, _) in enumerate(
        iterate_batches(split, batch_size, mean=mean, std=std, device=device, indices=indices)
    ):
        outs.append((tta_logits(model, x) if tta else model(x)).float().cpu())
        ys.append(y.cpu())
        if progress:
            progress(i + 1, total)
        if should_stop and should_stop():
            break
    model.train(was_training)
    if not outs:
        return Predictions(np.zeros((0, 0), np.float32), np.zeros(0, np.int64))
    return Predictions(torch.cat(outs).numpy(), torch.cat(ys).numpy())


def accuracy(model: nn.Module, split: ImageSplit, **kwargs) -> float:
    return predict(model, split, **kwargs).accuracy
