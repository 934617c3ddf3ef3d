"""The losses of a distilled student: Hinton's KD loss, attention transfer (:mod:`.attention`), and
train()'s objective for each arm."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .arms import DistillConfig
from .attention import at_loss, attention_map, block_at, tap
from .loop import Objective

#: the teacher asked by data-set index as well as by batch (a :class:`.teacher_cache.TeacherCache`)
IndexedTeacher = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, "torch.Tensor | None"]]


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
    *,
    teacher_outputs: IndexedTeacher | None = None,
) -> Objective:
    """train()'s objective for an arm: cross-entropy or the KD loss on the view the student sees, plus
    the attention-transfer term (β·AT at ``cfg.at_block``) for the AT arms.

    ``teacher`` gives the teacher's logits of a batch; ``teacher_outputs(x, idx)`` its logits and
    attention map (needed by AT arms; it may read them from a cache). ``forward`` replaces the model
    in the forward pass (the DistributedDataParallel wrapper).
    """
    if cfg.uses_at and teacher_outputs is None:
        raise ValueError(f"the {cfg.arm} arm needs the teacher's attention maps (teacher_outputs)")
    if teacher_outputs is None and teacher is not None:
        logits_of = teacher

        def teacher_outputs(x, idx):
            return logits_of(x), None

    def objective(model, x, y, idx):
        net = forward if forward is not None else model
        if forward is not None:
            forward.train(model.training)
        if cfg.uses_at:
            with tap(block_at(model, cfg.at_block)) as found:
                logits = net(x)
        else:
            logits = net(x)
        if not (cfg.uses_kd or cfg.uses_at):
            return F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing), logits
        assert teacher_outputs is not None  # the KD arms are given a teacher
        t_logits, t_att = teacher_outputs(x, idx)
        if cfg.uses_kd:
            loss = kd_loss(
                logits,
                t_logits,
                y,
                temperature=cfg.temperature,
                alpha=cfg.alpha,
                label_smoothing=cfg.label_smoothing,
            )
        else:
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        if cfg.uses_at:
            if t_att is None:
                raise ValueError("the teacher gave no attention map for an attention-transfer arm")
            loss = loss + at_loss(attention_map(found["out"]), t_att, cfg.at_beta)
        return loss, logits

    return objective
