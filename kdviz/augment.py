"""The old path of :mod:`kdviz.training.ig_overlay`, kept for one release (``CHANGELOG.md``).

Import from :mod:`kdviz.training.ig_overlay`; this module only re-exports it and warns.
"""

import warnings

from .training.ig_overlay import MODES, OverlayConfig, overlay, unit_maps

__all__ = [
    "MODES",
    "OverlayConfig",
    "overlay",
    "unit_maps",
]

warnings.warn(
    "kdviz.augment moved to kdviz.training.ig_overlay; this path goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)
