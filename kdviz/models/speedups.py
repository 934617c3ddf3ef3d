"""Memory layout and conv–batch-norm fusion: the two changes that make CPU convolutions markedly
faster without changing what a model computes.

Measured on 2 CPU cores, batch 64 (``benchmarks/bench_train.py``, ``bench_distill.py``):
channels-last weights raised training throughput 1.52× for the MobileNet-V2 teacher, 1.81× for the
paper's student and 1.24× for the edge student; folded and channels-last, a frozen teacher's
forward pass took 88 ms instead of 172 (digits MobileNet-V2) and 85 instead of 111 (ResNet-56).
``ig-precompute`` runs IG on the folded copy too (8 to 37 % more maps a second; the input
gradients agree to a few parts in a thousand, the precision the cache stores in float16).
oneDNN, which PyTorch uses for CPU convolutions, works natively in channels-last ("NHWC") layout;
in the default layout every convolution reorders its tensors.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def channels_last(model: nn.Module) -> nn.Module:
    """Store ``model``'s 4-D weights channels-last, in place (values unchanged; 2-D weights untouched).

    Inputs need no conversion: a convolution whose weight is channels-last computes in that layout.
    Saved files are unaffected (checkpoints write contiguous tensors).
    """
    return model.to(memory_format=torch.channels_last)


def fused_for_inference(model: nn.Module, example: torch.Tensor, *, rtol: float = 1e-4) -> nn.Module:
    """A frozen copy of ``model`` with each convolution and its batch norm folded into one layer,
    channels-last: for a teacher whose weights never change (its logits for KD, its IG maps for
    the cache).

    The copy is checked on ``example`` (a real batch) against the model: when its outputs differ by
    more than ``rtol`` of their scale, or the model cannot be traced (``torch.fx``), the model itself
    is returned (in eval mode), and nothing is lost but speed. The copy's parameters need no
    gradients; gradients with respect to the input (IG) still flow.
    """
    from torch.fx.experimental.optimization import fuse

    model = model.eval()
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model  # nothing to fold
    try:
        fast = channels_last(fuse(copy.deepcopy(model), inplace=True)).requires_grad_(False)
        with torch.no_grad():
            want, got = model(example), fast(example)
    except Exception:  # noqa: BLE001 - a model fx cannot trace only means no fusion
        return model
    if got.shape != want.shape or float((got - want).abs().max()) > rtol * max(1.0, float(want.abs().max())):
        return model
    return fast
