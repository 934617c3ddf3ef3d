"""The old path of :mod:`kdviz.training`, kept for one release (``CHANGELOG.md``).

Import from :mod:`kdviz.training`; this module only re-exports it and warns.
"""

import warnings

from .training.arms import ARMS, DistillConfig, arm_parts, config_summary
from .training.batches import HOLDOUT_SEED, distill_batches, holdout_split, shard_order, subset_dataset
from .training.ddp import DistContext, init_distributed, replica_checksums
from .training.distillation import DistillRequest, distill_run
from .training.losses import distill_objective, kd_loss
from .training.teacher import default_ig_cache, ensure_ig_cache, load_teacher, teacher_view

__all__ = [
    "ARMS",
    "HOLDOUT_SEED",
    "DistContext",
    "DistillConfig",
    "DistillRequest",
    "arm_parts",
    "config_summary",
    "default_ig_cache",
    "distill_batches",
    "distill_objective",
    "distill_run",
    "ensure_ig_cache",
    "holdout_split",
    "init_distributed",
    "kd_loss",
    "load_teacher",
    "replica_checksums",
    "shard_order",
    "subset_dataset",
    "teacher_view",
]

warnings.warn(
    "kdviz.distill moved to kdviz.training; this path goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)
