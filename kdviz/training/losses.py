"""The losses of a distilled student: Hinton's KD loss, and train()'s objective for each arm."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .arms import DistillConfig
from .loop import Objective


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """α·T²·KL(teacher ‖ student at temperature T) + (1 − α)·CE(student, labels).

    T² keeps the soft term's gradients on the scale of the hard term's as T changes (Hinton et al.).
    ``label_smoothing`` smooths the hard term's labels (the fast recipe's 0.2; none in the paper's).
    """
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)
    hard = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    return alpha * soft + (1.0 - alpha) * hard


def distill_objective(
    cfg: DistillConfig,
    teacher: Callable[[torch.Tensor], torch.Tensor] | None,
    forward: nn.Module | None = None,
) -> Objective:
    """train()'s objective for an arm: cross-entropy, or the KD loss on the view the student sees.

    ``forward`` replaces the model in the forward pass (the DistributedDataParallel wrapper).
    """

    def objective(model, x, y, idx):
        net = forward if forward is not None else model
        if forward is not None:
            forward.train(model.training)
        logits = net(x)
        if not cfg.uses_kd:
            return F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing), logits
        return kd_loss(
            logits,
            teacher(x),
            y,
            temperature=cfg.temperature,
            alpha=cfg.alpha,
            label_smoothing=cfg.label_smoothing,
        ), logits

    return objective
