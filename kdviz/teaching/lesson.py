"""The lesson's numbers: how an Integrated Gradients map comes about, and what distillation passes on.

Pure torch and numpy, so the Lesson page only draws and the tests can check every number it shows.
The IG points and weights are Captum's own (its ``approximation_parameters``), so the running sum
after the last point *is* Captum's map for the same steps and rule, not a re-derivation beside it.
Baselines come from :func:`kdviz.attribution.make_baseline`, as everywhere else in kdviz.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..attribution import internal_batch_for, rule_correction
from ..data.loader import denormalize

#: Steps of the reference map that smaller step counts are measured against.
REFERENCE_STEPS = 256


def _as_batch(x: torch.Tensor) -> torch.Tensor:
    return x if x.ndim == 4 else x[None]


# ----------------------------------------------------------------------------------- the straight path


def path_points(
    x: torch.Tensor, baseline: torch.Tensor, alphas: Sequence[float] | np.ndarray
) -> torch.Tensor:
    """The images x' + α(x − x') for each α: IG's straight line from the baseline x' to the image x."""
    x, baseline = _as_batch(x)[:1], _as_batch(baseline)[:1]
    a = torch.as_tensor(np.asarray(alphas, dtype=np.float32), dtype=x.dtype, device=x.device).view(
        -1, 1, 1, 1
    )
    return baseline + a * (x - baseline)


def to_uint8(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised images (N, C, H, W) back to what a person sees: uint8 (N, H, W, 3)."""
    pixels = denormalize(x.detach().cpu().float(), mean, std).clamp(0, 1)
    return (pixels * 255).round().byte().permute(0, 2, 3, 1).numpy()


def path_strip(
    x: torch.Tensor, baseline: torch.Tensor, mean: Sequence[float], std: Sequence[float], frames: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """``frames`` images evenly along the path (α = 0 … 1) as uint8, with their α."""
    alphas = np.linspace(0.0, 1.0, max(2, frames))
    return alphas, to_uint8(path_points(x, baseline, alphas), mean, std)


@dataclass
class PathScores:
    alphas: np.ndarray  # (P,)
    logits: np.ndarray  # (P,) the target's logit F along the path: what IG integrates the gradient of
    probs: np.ndarray  # (P,) the target's probability along the path


@torch.no_grad()
def path_scores(
    model: nn.Module, x: torch.Tensor, baseline: torch.Tensor, target: int, points: int = 41
) -> PathScores:
    """The model's score for ``target`` at ``points`` images evenly along the path."""
    model.eval()
    alphas = np.linspace(0.0, 1.0, max(2, points))
    out = model(path_points(x, baseline, alphas))
    return PathScores(alphas, out[:, target].cpu().numpy(), out.softmax(1)[:, target].cpu().numpy())


# ----------------------------------------------------------------------------------- the sum of gradients


@dataclass
class Completeness:
    """IG's check: the map should sum to F(x) − F(baseline); the gap says how far off the steps are."""

    map_sum: float
    score_change: float  # F(x) − F(baseline)

    @property
    def gap(self) -> float:
        return self.map_sum - self.score_change

    @property
    def relative_gap(self) -> float:
        return abs(self.gap) / max(abs(self.score_change), 1e-6)


@dataclass
class RunningSum:
    """IG point by point: ``partial[i]`` is the map after the first i + 1 points of the rule."""

    alphas: np.ndarray  # (n,) where the gradient is taken, ascending
    weights: np.ndarray  # (n,) the weight of each point; they sum to 1 (Captum's trapezoid weights corrected)
    partial: np.ndarray  # (n, C, H, W) cumulative maps; partial[-1] is the IG map
    score: float  # F(x)
    baseline_score: float  # F(baseline)
    rule: str

    @property
    def steps(self) -> int:
        return len(self.alphas)

    @property
    def map(self) -> np.ndarray:
        return self.partial[-1]

    @property
    def totals(self) -> np.ndarray:
        """The running map's sum after each point: it climbs toward F(x) − F(baseline)."""
        return self.partial.reshape(self.steps, -1).sum(1)

    def completeness(self) -> Completeness:
        return Completeness(float(self.map.sum()), self.score - self.baseline_score)


def rule_points(steps: int, rule: str = "gausslegendre") -> tuple[np.ndarray, np.ndarray]:
    """Captum's points α and weights for ``steps`` and an integration rule, in ascending α."""
    from captum.attr._utils.approximation_methods import approximation_parameters

    if steps < 2:
        raise ValueError(f"IG needs at least 2 steps, got {steps}")
    step_sizes, alphas = approximation_parameters(rule)
    a, w = np.asarray(alphas(steps), dtype=np.float64), np.asarray(step_sizes(steps), dtype=np.float64)
    w = w * rule_correction(steps, rule)  # the same weights as kdviz.attribution's IG
    order = np.argsort(a, kind="stable")
    return a[order], w[order]


def running_sum(
    model: nn.Module,
    x: torch.Tensor,
    baseline: torch.Tensor,
    target: int,
    steps: int,
    rule: str = "gausslegendre",
    batch_size: int | None = None,
) -> RunningSum:
    """The gradient at each of the rule's points, weighted and added up one point after another
    (``batch_size`` points a pass; default: 64 at 32 px, fewer for larger images)."""
    model.eval()
    x, baseline = _as_batch(x)[:1], _as_batch(baseline)[:1]
    batch_size = batch_size or internal_batch_for(x.shape[-2], x.shape[-1], 64)
    alphas, weights = rule_points(steps, rule)
    grads = []
    for start in range(0, len(alphas), batch_size):
        pts = path_points(x, baseline, alphas[start : start + batch_size]).requires_grad_(True)
        (g,) = torch.autograd.grad(model(pts)[:, target].sum(), pts)
        grads.append(g.detach())
    grad = torch.cat(grads).double()
    w = torch.as_tensor(weights, dtype=torch.float64, device=grad.device).view(-1, 1, 1, 1)
    partial = torch.cumsum(w * grad, 0) * (x - baseline).double()
    with torch.no_grad():
        ends = model(torch.cat([x, baseline]))[:, target].double().cpu().numpy()
    return RunningSum(alphas, weights, partial.float().cpu().numpy(), float(ends[0]), float(ends[1]), rule)


def captum_map(
    model: nn.Module,
    x: torch.Tensor,
    baseline: torch.Tensor,
    target: int,
    steps: int = REFERENCE_STEPS,
    rule: str = "gausslegendre",
) -> np.ndarray:
    """Captum's own IG map (C, H, W): the yardstick the running sum is compared with."""
    from captum.attr import IntegratedGradients

    model.eval()
    attr = IntegratedGradients(model).attribute(
        _as_batch(x)[:1],
        baselines=_as_batch(baseline)[:1],
        target=target,
        n_steps=steps,
        method=rule,
        internal_batch_size=internal_batch_for(x.shape[-2], x.shape[-1], 64),
    )
    return attr[0].detach().cpu().numpy()


def map_error(a: np.ndarray, reference: np.ndarray) -> float:
    """Relative L1 distance, |a − reference|₁ / |reference|₁: 0 is the same map."""
    return float(np.abs(a - reference).sum() / max(np.abs(reference).sum(), 1e-12))


@dataclass
class ConvergencePoint:
    steps: int
    error: float  # map_error against the reference map
    gap: float  # completeness gap at this many steps


def convergence(
    model: nn.Module,
    x: torch.Tensor,
    baseline: torch.Tensor,
    target: int,
    steps: Sequence[int],
    rule: str = "gausslegendre",
    reference: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[ConvergencePoint]:
    """How the map and its completeness gap settle as the step count grows.

    The reference is Captum's Gauss–Legendre map with ``REFERENCE_STEPS`` steps, whatever ``rule`` is
    being watched, so every rule is measured against the same best estimate of the integral.
    ``progress(done, total)`` is told after the reference and after each step count (a large image
    takes seconds for each): its total counts one unit per step computed.
    """
    total = (0 if reference is not None else REFERENCE_STEPS) + sum(int(n) for n in steps)
    done = 0
    ref = reference if reference is not None else captum_map(model, x, baseline, target)
    if reference is None:
        done = REFERENCE_STEPS
        if progress is not None:
            progress(done, total)
    out = []
    for n in steps:
        walk = running_sum(model, x, baseline, target, int(n), rule)
        out.append(ConvergencePoint(int(n), map_error(walk.map, ref), walk.completeness().gap))
        done += int(n)
        if progress is not None:
            progress(done, total)
    return out


# ----------------------------------------------------------------------------------- distillation


def soften(logits: np.ndarray | torch.Tensor, temperature: float) -> np.ndarray:
    """Hinton's soft targets, softmax(z / T): T = 1 is the usual softmax; a larger T flattens it."""
    if temperature <= 0:
        raise ValueError(f"the temperature must be positive, got {temperature}")
    z = torch.as_tensor(
        np.asarray(logits, dtype=np.float64) if not isinstance(logits, torch.Tensor) else logits,
        dtype=torch.float64,
    )
    return torch.softmax(z / temperature, dim=-1).numpy()


def entropy(probs: np.ndarray) -> float:
    """Shannon entropy in bits: 0 for a one-hot answer, log2(K) for a uniform one."""
    p = np.asarray(probs, dtype=np.float64).ravel()
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


@dataclass
class KDTerms:
    """The two parts of the student's loss on one image; α weighs them."""

    soft: float  # T² · KL(teacher_T ‖ student_T): match the teacher's softened answer
    hard: float  # cross-entropy with the true label

    def total(self, alpha: float) -> float:
        return alpha * self.soft + (1.0 - alpha) * self.hard


def kd_terms(
    student_logits: np.ndarray, teacher_logits: np.ndarray, label: int, temperature: float
) -> KDTerms:
    """The training loss (:func:`kdviz.training.kd_loss`) on one image, taken apart: α = 1 and α = 0."""
    from ..training.losses import kd_loss

    s = torch.as_tensor(np.asarray(student_logits, dtype=np.float32)).view(1, -1)
    t = torch.as_tensor(np.asarray(teacher_logits, dtype=np.float32)).view(1, -1)
    y = torch.tensor([int(label)])
    soft, hard = (float(kd_loss(s, t, y, temperature=temperature, alpha=a)) for a in (1.0, 0.0))
    return KDTerms(soft, hard)


# ----------------------------------------------------------------------------------- the paper's trick


def overlay_examples(
    images: np.ndarray,
    maps: np.ndarray,
    probability: float,
    strength: float,
    *,
    seed: int = 0,
    mode: str = "blend",
) -> tuple[np.ndarray, np.ndarray]:
    """The IG-overlay augmentation on a few training images, uint8 (N, H, W, 3) and maps (N, H, W).

    Returns the images after augmentation (uint8) and which were overlaid. It calls
    :func:`kdviz.training.ig_overlay.overlay` itself, so what the lesson shows is what the student is
    trained on; the same ``seed`` draws the same images and powers whatever p and λ are.
    """
    from ..data.loader import to_float
    from ..training.ig_overlay import OverlayConfig, overlay

    out, applied = overlay(
        to_float(images),
        torch.as_tensor(np.asarray(maps, dtype=np.float32)),
        OverlayConfig(p=probability, lam=strength, mode=mode),
        torch.Generator().manual_seed(int(seed)),
    )
    pixels = (out.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    return pixels, applied.cpu().numpy()
