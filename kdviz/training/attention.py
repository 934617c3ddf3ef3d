"""Attention transfer (Zagoruyko & Komodakis 2017): the student is taught where the teacher's
activations are strong, at a matched block, as well as what it answers.

A block's spatial attention is the mean over channels of |activation|^p (p = 2), flattened and
L2-normalised per image; the loss is (β/2)·‖q_student − q_teacher‖₂ averaged over the batch (the
paper's Eq. 2 with its p = 2 norm). The extended IG paper used β = 0.8 at a middle block. When the
two blocks differ in size, the student's map is resized to the teacher's (bilinear) before it is
normalised. Blocks are read with forward hooks, so no model needs to change to be distilled this way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

#: attributes holding a model's blocks, in the order they are looked for
_BLOCK_SEQUENCES = ("layers", "features", "blocks", "stages")


def feature_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's main blocks in order: ``layers``/``features``/``blocks``/``stages`` (a sequence of
    blocks, as airnet, MobileNet-V2 and timm models have), else ``layer1``, ``layer2``, … (ResNets)."""
    for name in _BLOCK_SEQUENCES:
        seq = getattr(model, name, None)
        if isinstance(seq, (nn.Sequential, nn.ModuleList)) and len(seq) > 1:
            return list(seq)
    numbered = [getattr(model, f"layer{i}") for i in range(1, 9) if hasattr(model, f"layer{i}")]
    if len(numbered) > 1:
        return numbered
    raise ValueError(
        f"{type(model).__name__} has no sequence of blocks kdviz knows (layers, features, blocks, "
        "stages or layer1, layer2, …): attention transfer cannot tap it"
    )


def block_at(model: nn.Module, index: int = -1) -> nn.Module:
    """The block whose attention is matched: ``index`` into :func:`feature_blocks`, -1 for the middle."""
    blocks = feature_blocks(model)
    if index == -1:
        return blocks[len(blocks) // 2]
    if not 0 <= index < len(blocks):
        raise ValueError(f"block {index} does not exist: {type(model).__name__} has {len(blocks)} blocks")
    return blocks[index]


@contextmanager
def tap(module: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """While open, ``found["out"]`` holds ``module``'s latest output (a forward hook, removed on exit)."""
    found: dict[str, torch.Tensor] = {}

    def hook(_m, _inputs, output):
        found["out"] = output

    handle = module.register_forward_hook(hook)
    try:
        yield found
    finally:
        handle.remove()


def attention_map(features: torch.Tensor, p: int = 2) -> torch.Tensor:
    """(N, C, H, W) activations → (N, H, W) spatial attention: the mean over channels of |a|^p, in float32."""
    return features.float().abs().pow(p).mean(1)


def normalised(maps: torch.Tensor, size: tuple[int, ...] | None = None) -> torch.Tensor:
    """(N, H, W) maps → (N, H·W) unit vectors, resized to ``size`` first when it differs."""
    if size is not None and tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False)[:, 0]
    return F.normalize(maps.flatten(1), dim=1)


def at_loss(student_maps: torch.Tensor, teacher_maps: torch.Tensor, beta: float) -> torch.Tensor:
    """(β/2)·‖q_s − q_t‖₂, the batch mean; both (N, H, W) attention maps (:func:`attention_map`).

    The teacher's side is detached: the loss moves the student only.
    """
    teacher = normalised(teacher_maps.detach())
    student = normalised(student_maps, tuple(teacher_maps.shape[-2:]))
    return 0.5 * beta * (student - teacher).norm(dim=1).mean()
