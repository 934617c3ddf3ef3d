"""One front door for attributions, the method a parameter (as Captum's ``attribute()``).

``attribute(model, x, options)`` runs Captum's Integrated Gradients, Saliency, SmoothGrad,
Grad-CAM or Occlusion on a batch of normalised images and returns the maps together with what a
person needs to read them: the target class, the probabilities and, for IG, the scores at the image
and at the baseline and the completeness gap (convergence delta).

Results are cached per image under a key made of the model's weights, the image's bytes and the
options, in memory and on disk: looking at an image again returns the same maps without calling
the model.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..core import atomic, settings

METHODS = {
    "ig": "Integrated Gradients",
    "saliency": "Saliency (gradient)",
    "smoothgrad": "SmoothGrad (noise tunnel over the gradient)",
    "gradcam": "Grad-CAM (last convolution, upsampled)",
    "occlusion": "Occlusion (sliding grey patch)",
}
BASELINES = {
    "zero": "zeros in the normalised input (the paper's choice: the normalisation's mean colour)",
    "black": "a black image",
    "blur": "the image, strongly blurred",
    "noise": "uniform noise (seeded)",
    "mean": "the data set's mean colour",
    "multi": "black, blurred and noise baselines, maps averaged",
}
IG_RULES = {"gausslegendre": "Gauss–Legendre", "riemann_trapezoid": "Riemann (trapezoid)",
            "riemann_middle": "Riemann (midpoint)", "riemann_left": "Riemann (left)", "riemann_right": "Riemann (right)"}
#: IG's expanded inputs per pass when not measured (the page's single images need no more; bulk work
#: such as ``ig-precompute`` measures the fastest size with :func:`fastest_batch_size`).
DEFAULT_INTERNAL_BATCH = 128
#: IG's default steps: the fewest Gauss–Legendre steps from which the median completeness gap stays
#: under 1 % of |F(x) − F(baseline)| for the pretrained ResNet-20 on 48 real CIFAR-10 test images
#: (64: 1.01 %, 72: 0.58 %, 80: 0.91 %, 128: 0.46 %; benchmarks/bench_attribution.py,
#: "attribution_default_steps"). The data-set IG cache keeps 32: its maps only steer an
#: augmentation, and 32 costs 2.25 times less over 50,000 images.
DEFAULT_IG_STEPS = 72
#: Part of every cache key: raised when the maps for the same options change (2: trapezoid weights fixed).
CACHE_VERSION = 2


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
        used = {"method": self.method, "target": self.target}
        if self.method == "ig":
            used.update(steps=self.steps, rule=self.rule, baseline=self.baseline,
                        seed=self.seed if self.baseline in ("noise", "multi") else 0)
        elif self.method == "smoothgrad":
            used.update(samples=self.samples, noise=self.noise, seed=self.seed)
        elif self.method == "occlusion":
            used.update(window=self.window, stride=self.stride)
        return used


@dataclass
class Attribution:
    """Maps and readings for a batch of N images (numpy, on the CPU)."""

    maps: np.ndarray  # float32 (N, C, H, W) in the model's input space; Grad-CAM has C = 1
    target: np.ndarray  # int64 (N,)
    logits: np.ndarray  # float32 (N, K)
    options: AttributionOptions
    score: np.ndarray | None = None  # IG: logit of the target at the image
    baseline_score: np.ndarray | None = None  # IG: the same logit at the baseline
    delta: np.ndarray | None = None  # IG: sum of the map minus (score - baseline_score)
    cached: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # which images came from the cache

    @property
    def probs(self) -> np.ndarray:
        z = self.logits - self.logits.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    @property
    def predicted(self) -> np.ndarray:
        return self.logits.argmax(1)

    @property
    def relative_delta(self) -> np.ndarray | None:
        """|delta| / |F(x) − F(baseline)|: how far from complete the IG sum is, as a fraction."""
        if self.delta is None:
            return None
        return np.abs(self.delta) / np.maximum(np.abs(self.score - self.baseline_score), 1e-6)

    def item(self, i: int) -> "Attribution":
        pick = lambda a: None if a is None else a[i : i + 1]  # noqa: E731
        return Attribution(self.maps[i : i + 1], self.target[i : i + 1], self.logits[i : i + 1], self.options,
                           pick(self.score), pick(self.baseline_score), pick(self.delta), self.cached[i : i + 1])


# ----------------------------------------------------------------------------------- baselines


def make_baseline(
    x: torch.Tensor, name: str, mean: Sequence[float], std: Sequence[float], *, seed: int = 0,
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


# ----------------------------------------------------------------------------------- the methods


def _resolve_targets(target: str | int, logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    if target == "pred":
        return logits.argmax(1)
    if target == "true":
        if labels is None:
            raise ValueError("target 'true' needs the images' labels")
        return labels.to(logits.device).long()
    k = int(target)
    if not 0 <= k < logits.shape[1]:
        raise ValueError(f"target class {k} is outside 0..{logits.shape[1] - 1}")
    return torch.full((logits.shape[0],), k, dtype=torch.long, device=logits.device)


def last_conv_layer(model: nn.Module) -> nn.Module:
    """Grad-CAM's layer: the last convolution whose output is still spatial (found, not configured)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer for Grad-CAM")
    return convs[-1]


def rule_correction(steps: int, rule: str) -> float:
    """The factor that makes Captum's weights for ``rule`` add up to one.

    Captum's ``riemann_trapezoid`` puts its n points 1/(n − 1) apart but weighs them 1/n (ends
    halved), so its weights add up to (n − 1)/n and every map falls short of F(x) − F(baseline) by
    about 1/n of it. The other rules already add up to one.
    """
    return steps / (steps - 1) if rule == "riemann_trapezoid" and steps > 1 else 1.0


def _integrated_gradients(model, x, targets, opts, mean, std, data_mean, internal_batch_size):
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(model)
    names = ["black", "blur", "noise"] if opts.baseline == "multi" else [opts.baseline]
    maps, base_scores = [], []
    for name in names:
        base = make_baseline(x, name, mean, std, seed=opts.seed, data_mean=data_mean)
        attr = ig.attribute(x, baselines=base, target=targets, n_steps=opts.steps, method=opts.rule,
                            internal_batch_size=internal_batch_size)
        maps.append(attr.detach() * rule_correction(opts.steps, opts.rule))
        with torch.no_grad():
            base_scores.append(model(base).gather(1, targets[:, None])[:, 0])
    m = torch.stack(maps).mean(0)
    base_score = torch.stack(base_scores).mean(0)
    return m, base_score


def _compute(model, x, labels, opts: AttributionOptions, mean, std, data_mean, internal_batch_size):
    """Run one method on a batch; returns maps, targets, logits and (IG) scores."""
    with torch.no_grad():
        logits = model(x)
    targets = _resolve_targets(opts.target, logits, labels)
    score = logits.gather(1, targets[:, None])[:, 0]
    out = {"logits": logits, "target": targets}
    if opts.method == "ig":
        maps, base_score = _integrated_gradients(model, x, targets, opts, mean, std, data_mean, internal_batch_size)
        out.update(score=score, baseline_score=base_score,
                   delta=maps.flatten(1).sum(1) - (score - base_score))
    elif opts.method == "saliency":
        from captum.attr import Saliency

        # a leaf that asks for its gradient: Captum would otherwise set the flag itself and warn
        maps = Saliency(model).attribute(x.detach().requires_grad_(), target=targets, abs=False)
    elif opts.method == "smoothgrad":
        from captum.attr import NoiseTunnel, Saliency

        torch.manual_seed(opts.seed)
        spread = float((x.amax() - x.amin()).item()) or 1.0
        maps = NoiseTunnel(Saliency(model)).attribute(
            x, nt_type="smoothgrad", nt_samples=opts.samples, nt_samples_batch_size=internal_batch_size,
            stdevs=opts.noise * spread, target=targets, abs=False)
    elif opts.method == "gradcam":
        from captum.attr import LayerAttribution, LayerGradCam

        cam = LayerGradCam(model, last_conv_layer(model)).attribute(x, target=targets, relu_attributions=True)
        maps = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    else:  # occlusion
        from captum.attr import Occlusion

        c = x.shape[1]
        maps = Occlusion(model).attribute(x, sliding_window_shapes=(c, opts.window, opts.window),
                                          strides=(c, opts.stride, opts.stride), baselines=0.0, target=targets,
                                          perturbations_per_eval=64)
    out["maps"] = maps.detach()
    return out


# ----------------------------------------------------------------------------------- cache


def model_fingerprint(model: nn.Module) -> str:
    """A hash of the weights (and buffers): the same file gives the same key in any process."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def image_hash(x: torch.Tensor) -> str:
    return hashlib.blake2b(x.detach().cpu().contiguous().numpy().tobytes(), digest_size=16).hexdigest()


class AttributionCache:
    """Per-image results, in memory (bounded LRU) and on disk (one ``.npz`` per key)."""

    def __init__(self, directory: str | Path | None = None, *, memory_items: int = 512, disk: bool = True) -> None:
        self.directory = Path(directory) if directory is not None else settings.cache_dir() / "attributions"
        self.disk = disk
        self.memory_items = memory_items
        self._memory: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @staticmethod
    def key(fingerprint: str, image: str, opts: AttributionOptions, extra: str = "") -> str:
        text = f"v{CACHE_VERSION}|{fingerprint}|{image}|{sorted(opts.key_fields().items())}|{extra}"
        return hashlib.blake2b(text.encode(), digest_size=20).hexdigest()

    def get(self, key: str) -> dict | None:
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                self.hits += 1
                return self._memory[key]
        path = self.directory / key[:2] / f"{key}.npz"
        if self.disk and path.is_file():
            try:
                with np.load(path) as npz:
                    entry = {k: npz[k] for k in npz.files}
            except (OSError, ValueError):
                return None  # a damaged entry is recomputed
            self._remember(key, entry)
            self.hits += 1
            return entry
        self.misses += 1
        return None

    def put(self, key: str, entry: dict) -> None:
        self._remember(key, entry)
        if self.disk:
            try:
                with atomic.atomic_path(self.directory / key[:2] / f"{key}.npz") as tmp:
                    with open(tmp, "wb") as fh:
                        np.savez(fh, **entry)
            except OSError:
                pass  # a read-only cache costs time, not correctness

    def _remember(self, key: str, entry: dict) -> None:
        with self._lock:
            self._memory[key] = entry
            self._memory.move_to_end(key)
            while len(self._memory) > self.memory_items:
                self._memory.popitem(last=False)

    def clear_memory(self) -> None:
        with self._lock:
            self._memory.clear()


_DEFAULT_CACHE: AttributionCache | None = None


def default_cache() -> AttributionCache:
    global _DEFAULT_CACHE
    if _DEFAULT_CACHE is None:
        _DEFAULT_CACHE = AttributionCache()
    return _DEFAULT_CACHE


# ----------------------------------------------------------------------------------- batch size


def throughput(model: nn.Module, batch: int, image_size: int = 32, *, repeats: int = 3, channels: int = 3) -> float:
    """Forward-and-backward (input gradient) images per second at one batch size: IG's inner work."""
    import time

    device = next(model.parameters()).device
    x = torch.randn(batch, channels, image_size, image_size, device=device, requires_grad=True)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        out = model(x)
        (grad,) = torch.autograd.grad(out[:, 0].sum(), x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first pass warms up
            times.append(time.perf_counter() - start)
    return batch / sorted(times)[len(times) // 2]


_FASTEST: dict[tuple, int] = {}


def fastest_batch_size(model: nn.Module, image_size: int = 32, candidates: Sequence[int] = (32, 64, 128, 256)) -> int:
    """Measure, once per architecture and device, which batch size runs IG's passes fastest."""
    device = next(model.parameters()).device
    key = (type(model).__name__, sum(p.numel() for p in model.parameters()), image_size, str(device))
    if key not in _FASTEST:
        was_training = model.training
        model.eval()
        rates = {b: throughput(model, b, image_size, repeats=2) for b in candidates}
        model.train(was_training)
        _FASTEST[key] = max(rates, key=rates.get)
    return _FASTEST[key]


# ----------------------------------------------------------------------------------- the front door


def attribute(
    model: nn.Module,
    x: torch.Tensor,
    options: AttributionOptions | None = None,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    labels: torch.Tensor | Sequence[int] | None = None,
    data_mean: Sequence[float] | None = None,
    cache: AttributionCache | None | bool = None,
    internal_batch_size: int | None = None,
    fingerprint: str | None = None,
    **overrides,
) -> Attribution:
    """Attribute a batch of normalised images ``x`` (N, C, H, W) to the target class of each.

    ``mean``/``std`` are the model's normalisation (baselines are made in pixel space);
    ``labels`` are needed for ``target="true"``; ``cache=False`` turns caching off, ``None`` uses
    the process-wide cache. Keyword ``overrides`` replace fields of ``options``
    (``attribute(m, x, method="saliency", mean=..., std=...)``).
    """
    opts = replace(options or AttributionOptions(), **overrides) if overrides else (options or AttributionOptions())
    model.eval()
    device = next(model.parameters()).device
    x = x.to(device, torch.float32)
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long)
    store = None if cache is False else (cache if isinstance(cache, AttributionCache) else default_cache())
    n = x.shape[0]
    entries: list[dict | None] = [None] * n
    keys: list[str] = []
    if store is not None:
        fp = fingerprint or model_fingerprint(model)
        extra = f"{tuple(mean)}|{tuple(std)}|{tuple(data_mean) if data_mean else ''}"
        for i in range(n):
            lab = f"|y={int(labels[i])}" if (labels is not None and opts.target == "true") else ""
            keys.append(AttributionCache.key(fp, image_hash(x[i]), opts, extra + lab))
            entries[i] = store.get(keys[-1])
    cached = np.array([e is not None for e in entries], dtype=bool)
    todo = [i for i in range(n) if entries[i] is None]
    if todo:
        sub_labels = labels[todo] if labels is not None else None
        ibs = internal_batch_size or DEFAULT_INTERNAL_BATCH
        out = _compute(model, x[todo], sub_labels, opts, mean, std, data_mean, ibs)
        for j, i in enumerate(todo):
            entry = {k: v[j].detach().float().cpu().numpy() if v.dtype.is_floating_point else v[j].cpu().numpy()
                     for k, v in out.items()}
            entries[i] = entry
            if store is not None:
                store.put(keys[i], entry)
    stack = lambda k: np.stack([e[k] for e in entries]) if k in entries[0] else None  # noqa: E731
    return Attribution(
        maps=stack("maps").astype(np.float32),
        target=stack("target").astype(np.int64),
        logits=stack("logits").astype(np.float32),
        options=opts,
        score=stack("score"),
        baseline_score=stack("baseline_score"),
        delta=stack("delta"),
        cached=cached,
    )


def options_from_dict(obj: dict) -> AttributionOptions:
    known = set(asdict(AttributionOptions()))
    return AttributionOptions(**{k: v for k, v in obj.items() if k in known})
