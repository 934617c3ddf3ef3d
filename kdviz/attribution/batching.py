"""Many callers' single images attributed in one model call: the batch function the compute
scheduler (:mod:`kdviz.core.scheduler`) runs for the pages of every session of a server.

Integrated Gradients costs per image and step: eight images at 72 steps are 576 expanded inputs,
a few passes of the internal batch, where eight separate calls pay the overhead of each pass eight
times. Requests batch together when they share a :func:`batch_key`: the model's weights, its
normalisation and the options the method uses. Methods whose draws depend on a batch's makeup
(SmoothGrad, IG's noise baselines: image *i* would get the *i*-th noise) are never batched, so a
map is the same whichever other images shared its call, and the per-image cache stays truthful.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..models.checkpoints import LoadedModel
from .front import attribute, cached_result
from .options import AttributionOptions
from .result import AttributionResult

#: Images in one batched call at most: more makes the first caller of a big batch wait too long.
MAX_BATCH = 16


@dataclass(frozen=True, eq=False)
class ImageRequest:
    """One uint8 (H, W, 3) image, at the model's input size, to attribute with one model."""

    loaded: LoadedModel
    image: np.ndarray
    options: AttributionOptions
    label: int | None = None

    def __post_init__(self) -> None:
        if self.options.target == "true" and self.label is None:  # no label known: the prediction
            object.__setattr__(self, "options", replace(self.options, target="pred"))

    @property
    def labels(self) -> torch.Tensor | None:
        return None if self.label is None else torch.tensor([self.label])


def batchable(options: AttributionOptions) -> bool:
    """Whether an image's map is independent of the other images in its call."""
    if options.method == "smoothgrad":
        return False
    return not (options.method == "ig" and options.baseline in ("noise", "multi"))


def batch_key(request: ImageRequest) -> Hashable:
    """What requests must share to be served by one call."""
    card = request.loaded.card
    return (
        "attribute",
        request.loaded.fingerprint,
        tuple(card.mean),
        tuple(card.std),
        tuple(sorted(request.options.key_fields().items())),
    )


def max_batch(request: ImageRequest) -> int:
    return MAX_BATCH if batchable(request.options) else 1


def dedupe_token(request: ImageRequest) -> str:
    """Two requests with the same key and token are the same work (the same image, and label when
    the map is of the true class): served once for both callers."""
    digest = hashlib.blake2b(np.ascontiguousarray(request.image).tobytes(), digest_size=16)
    if request.options.target == "true":
        digest.update(str(request.label).encode())
    return digest.hexdigest()


def _single(request: ImageRequest) -> tuple[tuple, dict]:
    """The positional and keyword arguments of the request's image alone, for attribute() and the cache."""
    loaded = request.loaded
    args = (loaded.model, loaded.preprocess(request.image[None]), request.options)
    kwargs = {
        "mean": loaded.card.mean,
        "std": loaded.card.std,
        "labels": request.labels,
        "fingerprint": loaded.fingerprint,
    }
    return args, kwargs


def cached(request: ImageRequest) -> AttributionResult | None:
    """The request's result from the attribution cache, or None; calls no model."""
    args, kwargs = _single(request)
    return cached_result(*args, **kwargs)


def attribute_alone(
    request: ImageRequest,
    *,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> AttributionResult:
    """The request on its own, reporting per chunk of steps and stoppable between chunks (a large
    image's IG, which is worth a bar and a stop button rather than a place in a batch)."""
    args, kwargs = _single(request)
    return attribute(*args, **kwargs, progress=progress, should_stop=should_stop)


def attribute_one(request: ImageRequest) -> AttributionResult:
    """One request on its own (the same as a batch of one)."""
    return attribute_batch([request])[0]


def attribute_batch(requests: Sequence[ImageRequest]) -> list[AttributionResult]:
    """The requests (one batch key) in one call of :func:`kdviz.attribution.attribute`, one result
    each, in order; images already cached are read, not recomputed."""
    first = requests[0]
    loaded, opts = first.loaded, first.options
    x = loaded.preprocess(np.stack([r.image for r in requests]))
    labels = None
    if opts.target == "true":
        labels = torch.tensor([int(r.label) for r in requests if r.label is not None])
    result = attribute(
        loaded.model,
        x,
        opts,
        mean=loaded.card.mean,
        std=loaded.card.std,
        labels=labels,
        fingerprint=loaded.fingerprint,
    )
    return [result.item(i) for i in range(len(requests))]
