"""IG's reference images: what "no evidence" looks like, built in pixel space and then normalised."""

from __future__ import annotations

from collections.abc import Sequence

import torch

BASELINES = {
    "zero": "zeros in the normalised input (the paper's choice: the normalisation's mean colour)",
    "black": "a black image",
    "blur": "the image, strongly blurred",
    "noise": "uniform noise (seeded)",
    "mean": "the data set's mean colour",
    "multi": "black, blurred and noise baselines, maps averaged",
}


def make_baseline(
    x: torch.Tensor,
    name: str,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    seed: int = 0,
    data_mean: Sequence[float] | None = None,
) -> torch.Tensor:
    """A baseline for normalised images ``x`` (N, C, H, W), built in pixel space and normalised."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    if name == "zero":
        return torch.zeros_like(x)
    if name == "black":
        return ((0.0 - m) / s).expand_as(x).contiguous()
    if name == "mean":
        dm = torch.as_tensor(data_mean if data_mean is not None else mean, dtype=x.dtype, device=x.device)
        return ((dm.view(1, -1, 1, 1) - m) / s).expand_as(x).contiguous()
    if name == "blur":
        from torchvision.transforms.functional import gaussian_blur

        side = x.shape[-1]
        kernel = max(3, (side // 2) | 1)  # odd, about half the image: the shapes are gone
        return gaussian_blur(x, [kernel, kernel], [side / 6.0, side / 6.0])
    if name == "noise":
        gen = torch.Generator().manual_seed(seed)
        u = torch.rand(x.shape, generator=gen).to(x.device, x.dtype)
        return (u - m) / s
    raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
