"""What a model costs: parameters, bytes on disk, multiply-accumulates per image."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class ModelStats:
    params: int
    size_bytes: int  # the safetensors file kdviz would write (weights and buffers, header included)
    macs: int  # multiply-accumulates for one image (torch's FLOP counter halved)

    def as_dict(self) -> dict:
        return asdict(self)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def size_on_disk(model: nn.Module) -> int:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return len(safetensors_bytes(state))


@torch.no_grad()
def count_macs(model: nn.Module, image_size: int = 32, channels: int = 3) -> int:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(1, channels, image_size, image_size, device=device))
    model.train(was_training)
    return counter.get_total_flops() // 2


def model_stats(model: nn.Module, image_size: int = 32) -> ModelStats:
    return ModelStats(count_params(model), size_on_disk(model), count_macs(model, image_size))


def compression_ratio(teacher: ModelStats, student: ModelStats) -> float:
    """Teacher parameters over student parameters (the paper's 4.1×)."""
    return teacher.params / max(student.params, 1)
