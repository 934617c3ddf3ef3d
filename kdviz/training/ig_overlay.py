"""The paper's IG-overlay augmentation: the teacher's map, laid onto the training image.

With probability ``p`` an image is replaced by itself with its (precomputed) teacher IG map
overlaid, so the student sees, now and then, where the teacher looked. As in the authors' code the
map ``M`` (H × W, non-negative) is first raised to a random power ``s = exp(U(ln 1, ln 2))`` (so
``s`` lies in [1, 2], log-uniform: a sharper or softer map each time) and min-max normalised to
``M'`` in [0, 1]. Two ways to lay it on an image ``x`` in [0, 1] (pixel space, *before*
normalisation), both keeping the result in [0, 1]:

- ``blend`` (the paper's, default): ``x' = (1 − λ)·x + λ·M'``; the paper uses λ = 0.5.
- ``emphasis``: ``x' = x·((1 − λ) + λ·M')``: attributed pixels keep their colour, the rest
  darkens by up to λ; the image's content is never replaced by the map's.

The map must already be aligned with the image (cropped and flipped with it: see
:func:`kdviz.data.loader.random_crop_flip` and its ``extras``). A flat map (max = min) carries no
information and leaves its image unchanged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

MODES = {
    "blend": "x' = (1 − λ)·x + λ·M'  (the paper's, λ = 0.5)",
    "emphasis": "x' = x·((1 − λ) + λ·M')  (multiplicative emphasis of the attributed pixels)",
}


@dataclass(frozen=True)
class OverlayConfig:
    """How often and how strongly the map is laid on; ``power_max=1`` turns the random power off."""

    p: float = 0.1  # probability per image (the paper's best)
    lam: float = 0.5  # strength λ (the paper's 0.5)
    mode: str = "blend"
    power_min: float = 1.0
    power_max: float = 2.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"overlay probability p must lie in [0, 1], got {self.p}")
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"overlay strength λ must lie in [0, 1], got {self.lam}")
        if self.mode not in MODES:
            raise ValueError(f"unknown overlay mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if not 0.0 < self.power_min <= self.power_max:
            raise ValueError(
                f"the map's power range must satisfy 0 < min ≤ max, got [{self.power_min}, {self.power_max}]"
            )

    def as_dict(self) -> dict:
        return asdict(self)


def unit_maps(maps: torch.Tensor, power: torch.Tensor | float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``maps`` (N, H, W) raised to ``power`` (per image) and min-max scaled to [0, 1] per image.

    Returns the scaled maps and a mask of the images whose map was not flat (the rest are zeros).
    """
    m = maps.clamp_min(0).float()
    power = torch.as_tensor(power, dtype=m.dtype, device=m.device)
    m = m.pow(power.view(-1, 1, 1) if power.ndim else power)
    lo = m.flatten(1).amin(1).view(-1, 1, 1)
    span = m.flatten(1).amax(1).view(-1, 1, 1) - lo
    informative = span.view(-1) > 0
    return torch.where(span > 0, (m - lo) / span.clamp_min(1e-12), torch.zeros_like(m)), informative


def overlay(
    images: torch.Tensor,
    maps: torch.Tensor,
    cfg: OverlayConfig,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlay ``maps`` (N, H, W) onto ``images`` (N, C, H, W, pixel space [0, 1]) with probability ``cfg.p``.

    Returns the new images and the boolean mask of those that were changed. The same random numbers
    are drawn whatever ``p`` is, so a seeded epoch stays reproducible when p changes elsewhere.
    """
    n = images.shape[0]
    if maps.shape != (n, *images.shape[2:]):
        raise ValueError(
            f"maps must be (N, H, W) = {(n, *images.shape[2:])} to match the images, got {tuple(maps.shape)}"
        )
    chosen = torch.rand(n, generator=generator) < cfg.p
    u = torch.rand(n, generator=generator)
    power = torch.exp(math.log(cfg.power_min) + u * (math.log(cfg.power_max) - math.log(cfg.power_min)))
    chosen, power = chosen.to(images.device), power.to(images.device)
    if not bool(chosen.any()):
        return images, chosen
    unit, informative = unit_maps(maps.to(images.device), power)
    chosen = chosen & informative
    m = unit.unsqueeze(1)  # one map for every colour channel
    if cfg.mode == "blend":
        changed = (1.0 - cfg.lam) * images + cfg.lam * m
    else:
        changed = images * ((1.0 - cfg.lam) + cfg.lam * m)
    return torch.where(chosen.view(n, 1, 1, 1), changed, images), chosen
