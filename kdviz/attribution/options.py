"""What a person asks of an attribution: the method and its settings, checked once, hashable."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .baselines import BASELINES
from .methods import IG_RULES, METHOD_TABLE, METHODS

#: IG's default steps: the fewest Gauss–Legendre steps from which the median completeness gap stays
#: under 1 % of |F(x) − F(baseline)| for the pretrained ResNet-20 on 48 real CIFAR-10 test images
#: (benchmarks/bench_attribution.py, "attribution_default_steps"; the README gives the figures).
#: The data-set IG cache keeps 32: its maps only steer an augmentation.
DEFAULT_IG_STEPS = 72
#: IG's steps while a server is busy (others' maps wait in its queue): the data-set IG cache's number.
#: On a CPU a map costs per step, so a room of people at 72 steps waits several times as long as one
#: person (benchmarks/bench_room.py); the page says so and offers the full steps.
BUSY_IG_STEPS = 32


@dataclass(frozen=True)
class AttributionOptions:
    """Everything that changes a map; hashable, and part of the cache key."""

    method: str = "ig"
    steps: int = DEFAULT_IG_STEPS  # IG: Gauss–Legendre steps
    rule: str = "gausslegendre"  # IG integration rule
    baseline: str = "zero"
    target: str | int = "pred"  # "pred", "true", or a class index
    samples: int = 16  # SmoothGrad: noisy samples
    noise: float = 0.15  # SmoothGrad: noise std, as a fraction of the input range
    window: int = 4  # Occlusion: patch side (pixels)
    stride: int = 2  # Occlusion: patch step (pixels)
    seed: int = 0  # noise baseline and SmoothGrad draws

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.baseline not in BASELINES:
            raise ValueError(f"unknown baseline {self.baseline!r}; choose one of {', '.join(BASELINES)}")
        if self.rule not in IG_RULES:
            raise ValueError(f"unknown IG rule {self.rule!r}; choose one of {', '.join(IG_RULES)}")
        if self.steps < 1:
            raise ValueError("steps must be at least 1")

    def key_fields(self) -> dict:
        """Only the fields the method uses, so an unrelated slider does not miss the cache."""
        return {"method": self.method, "target": self.target, **METHOD_TABLE[self.method].key_fields(self)}


def under_load(options: AttributionOptions) -> AttributionOptions:
    """The options a busy server serves instead: IG at :data:`BUSY_IG_STEPS` when the person left
    the steps at their default (a number they chose is kept), everything else unchanged."""
    if options.method == "ig" and options.steps == DEFAULT_IG_STEPS:
        return replace(options, steps=BUSY_IG_STEPS)
    return options
