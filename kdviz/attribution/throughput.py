"""How fast a model runs IG's inner work, and the batch size that runs it fastest (for bulk IG)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn


def throughput(
    model: nn.Module, batch: int, image_size: int = 32, *, repeats: int = 3, channels: int = 3
) -> float:
    """Forward-and-backward (input gradient) images per second at one batch size: IG's inner work."""
    device = next(model.parameters()).device
    x = torch.randn(batch, channels, image_size, image_size, device=device, requires_grad=True)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        out = model(x)
        torch.autograd.grad(out[:, 0].sum(), x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first pass warms up
            times.append(time.perf_counter() - start)
    return batch / sorted(times)[len(times) // 2]


_FASTEST: dict[tuple, int] = {}


def fastest_batch_size(
    model: nn.Module, image_size: int = 32, candidates: Sequence[int] | None = None
) -> int:
    """Measure, once per architecture and device, which batch size runs IG's passes fastest.

    The default candidates are 32 to 256 at 32 px and shrink with the pixels (1 to 5 at 224 px), so
    a large image never tries a batch 49 times the memory of the small one's.
    """
    if candidates is None:
        scale = max(1, image_size * image_size // (32 * 32))
        candidates = sorted({max(1, b // scale) for b in (32, 64, 128, 256)})
    device = next(model.parameters()).device
    key = (type(model).__name__, sum(p.numel() for p in model.parameters()), image_size, str(device))
    if key not in _FASTEST:
        was_training = model.training
        model.eval()
        rates = {b: throughput(model, b, image_size, repeats=2) for b in candidates}
        model.train(was_training)
        _FASTEST[key] = max(rates, key=lambda b: rates[b])
    return _FASTEST[key]
