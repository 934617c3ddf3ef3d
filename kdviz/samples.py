"""The old path of :mod:`kdviz.data.samples`, kept for one release (``CHANGELOG.md``).

Import from :mod:`kdviz.data.samples`; this module only re-exports it and warns.
"""

import warnings

from .data.samples import SAMPLES, Sample, load_sample, sample_names

__all__ = [
    "SAMPLES",
    "Sample",
    "load_sample",
    "sample_names",
]

warnings.warn(
    "kdviz.samples moved to kdviz.data.samples; this path goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)
