"""Memory layout and conv–batch-norm fusion: the two changes that make CPU convolutions markedly
faster without changing what a model computes (how much faster: the README, and
``benchmarks/results`` from ``bench_train.py``, ``bench_distill.py`` and ``bench_attribution.py``).

oneDNN, which PyTorch uses for CPU convolutions, works natively in channels-last ("NHWC") layout;
in the default layout every convolution reorders its tensors. Training keeps its weights
channels-last; a frozen teacher runs folded and channels-last, and ``ig-precompute`` runs IG on that
copy too: its input gradients agree with the plain model's to the float16 precision the cache stores.
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
