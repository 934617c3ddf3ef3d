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

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from ..models.fingerprint import model_fingerprint
from .cache import AttributionCache, default_cache, image_hash
from .methods import METHOD_TABLE, MethodInput
from .options import AttributionOptions
from .result import AttributionResult

#: IG's pixels per pass when not measured, in 32×32 images (the page's single images need no more;
#: bulk work such as ``ig-precompute`` measures the fastest size with
#: :func:`kdviz.attribution.fastest_batch_size`).
DEFAULT_INTERNAL_BATCH = 128
#: ...and at most this many inputs a pass: forward and backward of the digits MobileNet-V2 teacher and
#: student cost 8.2 and 7.9 ms an input in passes of 64 against 11.6 and 10.4 ms in passes of 128 (2-core
#: AMD EPYC, one thread), and a batched call of several sessions' small images runs whole passes.
MAX_PASS_INPUTS = 64


def internal_batch_for(height: int, width: int, at_32: int = DEFAULT_INTERNAL_BATCH) -> int:
    """IG's expanded inputs per pass for ``height``×``width`` images: the pixels of ``at_32`` images of
    32×32 px, so a 224-px map needs the memory of a 32-px one instead of 49 times it and its progress
    moves every few steps; never more than :data:`MAX_PASS_INPUTS` inputs."""
    return max(1, min(MAX_PASS_INPUTS, at_32 * 32 * 32 // max(1, height * width)))


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


def _compute(
    model,
    x,
    labels,
    opts: AttributionOptions,
    mean,
    std,
    data_mean,
    ibs,
    progress,
    should_stop,
) -> dict:
    """Run the options' method (looked up in the table) on a batch: maps, targets, logits, IG's scores."""
    with torch.no_grad():
        logits = model(x)
    targets = _resolve_targets(opts.target, logits, labels)
    score = logits.gather(1, targets[:, None])[:, 0]
    out = {"logits": logits, "target": targets}
    inputs = MethodInput(x, targets, opts, mean, std, data_mean, ibs, progress, should_stop)
    maps, base_score = METHOD_TABLE[opts.method].compute(model, inputs)
    if base_score is not None:  # IG: the completeness check comes with the map
        out.update(
            score=score, baseline_score=base_score, delta=maps.flatten(1).sum(1) - (score - base_score)
        )
    out["maps"] = maps.detach()
    return out


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
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    **overrides,
) -> AttributionResult:
    """Attribute a batch of normalised images ``x`` (N, C, H, W) to the target class of each.

    ``mean``/``std`` are the model's normalisation (baselines are made in pixel space);
    ``labels`` are needed for ``target="true"``; ``cache=False`` turns caching off, ``None`` uses
    the process-wide cache. Keyword ``overrides`` replace fields of ``options``
    (``attribute(m, x, method="saliency", mean=..., std=...)``).

    IG reports ``progress(done, total)`` in expanded inputs (steps × images × baselines) after each
    chunk of ``internal_batch_size`` of them, and asks ``should_stop()`` before each chunk, raising
    :class:`AttributionStopped` when it says yes: a 224-px image's map is seconds of work, shown and
    stoppable, where a 32-px one was instant.
    """
    opts = (
        replace(options or AttributionOptions(), **overrides)
        if overrides
        else (options or AttributionOptions())
    )
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
        keys = _cache_keys(fingerprint or model_fingerprint(model), x, opts, mean, std, data_mean, labels)
        entries = [store.get(k) for k in keys]
    cached = np.array([e is not None for e in entries], dtype=bool)
    todo = [i for i in range(n) if entries[i] is None]
    if todo:
        sub_labels = labels[todo] if labels is not None else None
        # Captum needs at least one input of each image in a pass
        ibs = internal_batch_size or max(len(todo), internal_batch_for(x.shape[-2], x.shape[-1]))
        out = _compute(model, x[todo], sub_labels, opts, mean, std, data_mean, ibs, progress, should_stop)
        for j, i in enumerate(todo):
            entry = {
                k: v[j].detach().float().cpu().numpy() if v.dtype.is_floating_point else v[j].cpu().numpy()
                for k, v in out.items()
            }
            entries[i] = entry
            if store is not None:
                store.put(keys[i], entry)
    return _result([e for e in entries if e is not None], opts, cached)


def cached_result(
    model: nn.Module,
    x: torch.Tensor,
    options: AttributionOptions,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    labels: torch.Tensor | Sequence[int] | None = None,
    data_mean: Sequence[float] | None = None,
    cache: AttributionCache | None = None,
    fingerprint: str | None = None,
) -> AttributionResult | None:
    """What :func:`attribute` would return, when every image of ``x`` is in the cache; else None.
    Calls no model: a page asks this before it queues work (a cached image costs nothing)."""
    store = cache or default_cache()
    x = x.to(torch.float32)
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long)
    keys = _cache_keys(fingerprint or model_fingerprint(model), x, options, mean, std, data_mean, labels)
    entries = [store.get(k) for k in keys]
    if any(e is None for e in entries):
        return None
    return _result([e for e in entries if e is not None], options, np.ones(len(entries), bool))


def _cache_keys(fp, x, opts, mean, std, data_mean, labels) -> list[str]:
    """One cache key per image: weights, image bytes, options, normalisation (and label for "true")."""
    extra = f"{tuple(mean)}|{tuple(std)}|{tuple(data_mean) if data_mean else ''}"
    keys = []
    for i in range(x.shape[0]):
        lab = f"|y={int(labels[i])}" if (labels is not None and opts.target == "true") else ""
        keys.append(AttributionCache.key(fp, image_hash(x[i]), opts, extra + lab))
    return keys


def _result(done: list[dict], opts: AttributionOptions, cached: np.ndarray) -> AttributionResult:
    """Per-image entries stacked into one result."""

    def stack(k: str) -> np.ndarray:
        return np.stack([e[k] for e in done])

    def stack_ig(k: str) -> np.ndarray | None:  # IG's scores; the other methods have none
        return stack(k) if k in done[0] else None

    return AttributionResult(
        maps=stack("maps").astype(np.float32),
        target=stack("target").astype(np.int64),
        logits=stack("logits").astype(np.float32),
        options=opts,
        score=stack_ig("score"),
        baseline_score=stack_ig("baseline_score"),
        delta=stack_ig("delta"),
        cached=cached,
    )
