"""The old path of :mod:`kdviz.training.loop`, kept for one release (``CHANGELOG.md``).

Import from :mod:`kdviz.training.loop`; this module only re-exports it and warns.

A package rather than ``kdviz/train.py``, so that git follows edits of the old ``train.py``
into ``kdviz/training/loop.py``.
"""

import warnings

from ..training.loop import (
    HISTORY,
    RESUME,
    BatchSource,
    EpochRecord,
    Objective,
    TrainConfig,
    TrainEvent,
    TrainResult,
    cross_entropy,
    epoch_generator,
    load_resume_state,
    lr_at,
    make_optimizer,
    read_history,
    save_epoch,
    train,
    train_indices,
)

__all__ = [
    "HISTORY",
    "RESUME",
    "BatchSource",
    "EpochRecord",
    "Objective",
    "TrainConfig",
    "TrainEvent",
    "TrainResult",
    "cross_entropy",
    "epoch_generator",
    "load_resume_state",
    "lr_at",
    "make_optimizer",
    "read_history",
    "save_epoch",
    "train",
    "train_indices",
]

warnings.warn(
    "kdviz.train moved to kdviz.training.loop; this path goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)
