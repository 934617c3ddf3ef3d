"""The old path of :mod:`kdviz.attribution.igcache`, kept for one release (``CHANGELOG.md``).

Import from :mod:`kdviz.attribution.igcache`; this module only re-exports it and warns.
"""

import warnings

from .attribution.igcache import INDEX, MAPS, IGCacheError, IGCacheSpec, IGMapStore, precompute

__all__ = [
    "INDEX",
    "MAPS",
    "IGCacheError",
    "IGCacheSpec",
    "IGMapStore",
    "precompute",
]

warnings.warn(
    "kdviz.igcache moved to kdviz.attribution.igcache; this path goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)
