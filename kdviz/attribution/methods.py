"""The attribution methods, one entry each in :data:`METHOD_TABLE`.

An entry says what the method is called, which options change its maps (for the cache key) and how
it computes them. Adding a method means adding one function and one entry here: the options'
validation, the cache key and the front door read the table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .baselines import make_baseline

if TYPE_CHECKING:
    from .options import AttributionOptions

IG_RULES = {
    "gausslegendre": "Gauss–Legendre",
    "riemann_trapezoid": "Riemann (trapezoid)",
    "riemann_middle": "Riemann (midpoint)",
    "riemann_left": "Riemann (left)",
    "riemann_right": "Riemann (right)",
}


@dataclass(frozen=True)
class MethodInput:
    """What a method gets besides the model: the batch, its targets and the settings of the call."""

    x: torch.Tensor  # normalised images (N, C, H, W)
    targets: torch.Tensor  # (N,) class per image
    options: AttributionOptions
    mean: Sequence[float]
    std: Sequence[float]
    data_mean: Sequence[float] | None
    internal_batch_size: int
    progress: Callable[[int, int], None] | None = None  # IG: expanded inputs done, of all
    should_stop: Callable[[], bool] | None = None  # IG: asked between step-chunks


class AttributionStopped(Exception):
    """IG was asked to stop between two chunks of its steps; nothing is returned or cached."""


class _Watched(nn.Module):
    """The model as IG sees it: each forward pass is one chunk of the expanded inputs (at most
    ``internal_batch_size`` of them); between chunks it reports progress and honours a stop."""

    def __init__(self, model: nn.Module, total: int, progress, should_stop) -> None:
        super().__init__()
        self.model, self.total, self.done = model, total, 0
        self.progress, self.should_stop = progress, should_stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.should_stop is not None and self.should_stop():
            raise AttributionStopped(f"stopped after {self.done} of {self.total} IG evaluations")
        out = self.model(x)
        self.done = min(self.total, self.done + x.shape[0])
        if self.progress is not None:
            self.progress(self.done, self.total)
        return out


#: A method's work: maps (N, C, H, W) and, for IG, the target's score at the baseline (else None).
Compute = Callable[[nn.Module, MethodInput], "tuple[torch.Tensor, torch.Tensor | None]"]


@dataclass(frozen=True)
class AttributionMethod:
    label: str
    compute: Compute
    key_fields: Callable[[AttributionOptions], dict[str, Any]]  # the options its maps depend on


def rule_correction(steps: int, rule: str) -> float:
    """The factor that makes Captum's weights for ``rule`` add up to one.

    Captum's ``riemann_trapezoid`` puts its n points 1/(n − 1) apart but weighs them 1/n (ends
    halved), so its weights add up to (n − 1)/n and every map falls short of F(x) − F(baseline) by
    about 1/n of it. The other rules already add up to one.
    """
    return steps / (steps - 1) if rule == "riemann_trapezoid" and steps > 1 else 1.0


def last_conv_layer(model: nn.Module, x: torch.Tensor | None = None) -> nn.Module:
    """Grad-CAM's layer: the last convolution whose output is still spatial (found, not configured).

    With an input ``x`` the convolutions are taken in the order they run on it, and one whose output
    is a single pixel is passed over: timm's MobileNet-V3 ends with a 1×1 ``conv_head`` after
    the global pooling, where a map would be one flat value. Without ``x``, the last one defined.
    """
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer for Grad-CAM")
    if x is None:
        return convs[-1]
    ran: list[tuple[nn.Module, int]] = []
    hooks = [
        m.register_forward_hook(lambda mod, _in, out: ran.append((mod, out.shape[-1] * out.shape[-2])))
        for m in convs
    ]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(x[:1])  # eval: a probe must not move batch-norm statistics
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    spatial = [m for m, pixels in ran if pixels > 1]
    return spatial[-1] if spatial else (ran[-1][0] if ran else convs[-1])


def _integrated_gradients(model: nn.Module, inp: MethodInput) -> tuple[torch.Tensor, torch.Tensor | None]:
    from captum.attr import IntegratedGradients

    opts, x, targets = inp.options, inp.x, inp.targets
    names = ["black", "blur", "noise"] if opts.baseline == "multi" else [opts.baseline]
    watched = inp.progress is not None or inp.should_stop is not None
    total = len(names) * opts.steps * x.shape[0]
    ig = IntegratedGradients(_Watched(model, total, inp.progress, inp.should_stop) if watched else model)
    maps, base_scores = [], []
    for name in names:
        base = make_baseline(x, name, inp.mean, inp.std, seed=opts.seed, data_mean=inp.data_mean)
        attr = ig.attribute(
            x,
            baselines=base,
            target=targets,
            n_steps=opts.steps,
            method=opts.rule,
            internal_batch_size=inp.internal_batch_size,
        )
        maps.append(attr.detach() * rule_correction(opts.steps, opts.rule))
        with torch.no_grad():
            base_scores.append(model(base).gather(1, targets[:, None])[:, 0])
    return torch.stack(maps).mean(0), torch.stack(base_scores).mean(0)


def _saliency(model: nn.Module, inp: MethodInput) -> tuple[torch.Tensor, torch.Tensor | None]:
    from captum.attr import Saliency

    # a leaf that asks for its gradient: Captum would otherwise set the flag itself and warn
    return Saliency(model).attribute(inp.x.detach().requires_grad_(), target=inp.targets, abs=False), None


def _smoothgrad(model: nn.Module, inp: MethodInput) -> tuple[torch.Tensor, torch.Tensor | None]:
    from captum.attr import NoiseTunnel, Saliency

    opts, x = inp.options, inp.x
    torch.manual_seed(opts.seed)
    spread = float((x.amax() - x.amin()).item()) or 1.0
    maps = NoiseTunnel(Saliency(model)).attribute(
        x,
        nt_type="smoothgrad",
        nt_samples=opts.samples,
        nt_samples_batch_size=inp.internal_batch_size,
        stdevs=opts.noise * spread,
        target=inp.targets,
        abs=False,
    )
    return maps, None


def _gradcam(model: nn.Module, inp: MethodInput) -> tuple[torch.Tensor, torch.Tensor | None]:
    from captum.attr import LayerAttribution, LayerGradCam

    cam = LayerGradCam(model, last_conv_layer(model, inp.x)).attribute(
        inp.x, target=inp.targets, relu_attributions=True
    )
    return LayerAttribution.interpolate(cam, tuple(inp.x.shape[-2:]), interpolate_mode="bilinear"), None


def _occlusion(model: nn.Module, inp: MethodInput) -> tuple[torch.Tensor, torch.Tensor | None]:
    from captum.attr import Occlusion

    opts, c = inp.options, inp.x.shape[1]
    maps = Occlusion(model).attribute(
        inp.x,
        sliding_window_shapes=(c, opts.window, opts.window),
        strides=(c, opts.stride, opts.stride),
        baselines=0.0,
        target=inp.targets,
        perturbations_per_eval=64,
    )
    return maps, None


def _ig_fields(o: AttributionOptions) -> dict[str, Any]:
    return {
        "steps": o.steps,
        "rule": o.rule,
        "baseline": o.baseline,
        "seed": o.seed if o.baseline in ("noise", "multi") else 0,
    }


def _no_fields(o: AttributionOptions) -> dict[str, Any]:
    return {}


METHOD_TABLE: dict[str, AttributionMethod] = {
    "ig": AttributionMethod("Integrated Gradients", _integrated_gradients, _ig_fields),
    "saliency": AttributionMethod("Saliency (gradient)", _saliency, _no_fields),
    "smoothgrad": AttributionMethod(
        "SmoothGrad (noise tunnel over the gradient)",
        _smoothgrad,
        lambda o: {"samples": o.samples, "noise": o.noise, "seed": o.seed},
    ),
    "gradcam": AttributionMethod("Grad-CAM (last convolution, upsampled)", _gradcam, _no_fields),
    "occlusion": AttributionMethod(
        "Occlusion (sliding grey patch)", _occlusion, lambda o: {"window": o.window, "stride": o.stride}
    ),
}
#: Method name -> what the pages and the CLI call it.
METHODS = {name: method.label for name, method in METHOD_TABLE.items()}
