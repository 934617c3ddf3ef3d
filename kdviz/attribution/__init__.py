"""Attributions: the front door over Captum and what is built on it."""

from .front import (
    BASELINES,
    DEFAULT_IG_STEPS,
    DEFAULT_INTERNAL_BATCH,
    IG_RULES,
    METHODS,
    Attribution,
    AttributionCache,
    AttributionOptions,
    attribute,
    default_cache,
    fastest_batch_size,
    image_hash,
    last_conv_layer,
    make_baseline,
    model_fingerprint,
    rule_correction,
    throughput,
)
