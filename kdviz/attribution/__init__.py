"""Attributions: one front door over Captum, and what is built on its maps.

``attribute(model, x, options, mean=..., std=...)`` runs the method named in the options (the
methods are a table, :data:`METHOD_TABLE`) and caches the result per image. Around it: the
baselines, the rendering of maps (:mod:`.render`), how far two maps agree (:mod:`.agreement`),
whether they are faithful (:mod:`.faithfulness`), teacher against student over many images
(:mod:`.comparison`) and the data-set IG cache that training reads (:mod:`.igcache`).
"""

from . import agreement, batching, comparison, faithfulness, igcache, render
from .baselines import BASELINES, make_baseline
from .cache import AttributionCache, default_cache
from .front import DEFAULT_INTERNAL_BATCH, attribute, internal_batch_for
from .igcache import IGCacheError, IGMapStore, precompute
from .methods import (
    IG_RULES,
    METHOD_TABLE,
    METHODS,
    AttributionMethod,
    AttributionStopped,
    last_conv_layer,
    rule_correction,
)
from .options import BUSY_IG_STEPS, DEFAULT_IG_STEPS, AttributionOptions, under_load
from .result import AttributionResult
from .throughput import fastest_batch_size, throughput

__all__ = [
    "BASELINES",
    "BUSY_IG_STEPS",
    "DEFAULT_IG_STEPS",
    "DEFAULT_INTERNAL_BATCH",
    "IG_RULES",
    "METHODS",
    "METHOD_TABLE",
    "AttributionCache",
    "AttributionMethod",
    "AttributionOptions",
    "AttributionResult",
    "IGCacheError",
    "IGMapStore",
    "agreement",
    "batching",
    "AttributionStopped",
    "attribute",
    "internal_batch_for",
    "comparison",
    "default_cache",
    "faithfulness",
    "fastest_batch_size",
    "igcache",
    "last_conv_layer",
    "make_baseline",
    "precompute",
    "render",
    "rule_correction",
    "throughput",
    "under_load",
]
