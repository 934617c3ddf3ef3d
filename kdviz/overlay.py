"""The old path of :mod:`kdviz.attribution.render`, kept for one release (``CHANGELOG.md``).

Import from :mod:`kdviz.attribution.render`; this module only re-exports it and warns.
"""

import warnings

from .attribution.render import (
    COLORMAPS,
    SIGNS,
    blend,
    colorize,
    figure,
    heatmap,
    masked,
    normalise,
    percentile_scale,
    reduce_channels,
    shared_scale,
    to_pil,
    to_png,
    top_k_mask,
)

__all__ = [
    "COLORMAPS",
    "SIGNS",
    "blend",
    "colorize",
    "figure",
    "heatmap",
    "masked",
    "normalise",
    "percentile_scale",
    "reduce_channels",
    "shared_scale",
    "to_pil",
    "to_png",
    "top_k_mask",
]

warnings.warn(
    "kdviz.overlay moved to kdviz.attribution.render; this path goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)
