"""What :func:`kdviz.attribution.attribute` returns: maps and the readings that go with them.

Called ``AttributionResult``, not ``Attribution``: that is the name of Captum's base class of the
algorithms, and kdviz imports Captum beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .options import AttributionOptions


@dataclass
class AttributionResult:
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
        if self.delta is None or self.score is None or self.baseline_score is None:
            return None
        return np.abs(self.delta) / np.maximum(np.abs(self.score - self.baseline_score), 1e-6)

    def item(self, i: int) -> AttributionResult:
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[i : i + 1]

        return AttributionResult(
            self.maps[i : i + 1],
            self.target[i : i + 1],
            self.logits[i : i + 1],
            self.options,
            pick(self.score),
            pick(self.baseline_score),
            pick(self.delta),
            self.cached[i : i + 1],
        )
