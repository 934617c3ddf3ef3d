"""Training: one loop for teachers and students, distillation on top of it, the runs it writes.

:func:`train` is the loop (resume, atomic saves, progress, stop); :func:`train_run` and
:func:`distill_student` are the workflows the CLI and the dashboard share, one for a plain run, one
for a distilled student (KD loss in :mod:`.losses`, the IG-overlay augmentation in
:mod:`.ig_overlay`, its batches in :mod:`.batches`, the teacher and its IG cache in
:mod:`.teacher`, attention transfer in :mod:`.attention`, the teacher outputs a study's arms share
in :mod:`.teacher_cache`, torchrun in :mod:`.ddp`). :class:`Workspace` is the folder of runs.
"""

from . import attention, ddp, ig_overlay
from .arms import ARMS, AT_ARMS, CORE_ARMS, DistillConfig, arm_ingredients, arm_parts, config_summary
from .attention import at_loss, attention_map, block_at, feature_blocks
from .batches import HOLDOUT_SEED, distill_batches, holdout_split, shard_order, subset_dataset
from .ddp import DistContext
from .distillation import DistillOutcome, DistillRequest, distill_run, distill_student
from .ig_overlay import MODES, OverlayConfig
from .loop import (
    HISTORY,
    BatchSource,
    EpochRecord,
    Objective,
    TrainConfig,
    TrainEvent,
    TrainResult,
    cross_entropy,
    epoch_generator,
    lr_at,
    read_history,
    train,
    train_indices,
)
from .losses import distill_objective, kd_loss
from .teacher import default_ig_cache, ensure_ig_cache, teacher_outputs, teacher_view
from .teacher_cache import TeacherCache, TeacherCacheError
from .workflows import DEFAULTS, TrainRequest, card_for, defaults_for, import_checkpoint, train_run
from .workspace import (
    NAME_RE,
    RunInfo,
    RunNameError,
    Workspace,
    asset_models,
    check_name,
    model_choices,
    now,
    same_dataset,
    unusable_runs,
)

__all__ = [
    "ARMS",
    "AT_ARMS",
    "CORE_ARMS",
    "TeacherCache",
    "TeacherCacheError",
    "arm_ingredients",
    "at_loss",
    "attention",
    "attention_map",
    "block_at",
    "feature_blocks",
    "teacher_outputs",
    "DEFAULTS",
    "HISTORY",
    "HOLDOUT_SEED",
    "MODES",
    "NAME_RE",
    "BatchSource",
    "DistContext",
    "DistillConfig",
    "DistillOutcome",
    "DistillRequest",
    "EpochRecord",
    "Objective",
    "OverlayConfig",
    "RunInfo",
    "RunNameError",
    "TrainConfig",
    "TrainEvent",
    "TrainRequest",
    "TrainResult",
    "Workspace",
    "arm_parts",
    "asset_models",
    "card_for",
    "check_name",
    "config_summary",
    "cross_entropy",
    "ddp",
    "default_ig_cache",
    "defaults_for",
    "distill_batches",
    "distill_objective",
    "distill_run",
    "distill_student",
    "ensure_ig_cache",
    "epoch_generator",
    "holdout_split",
    "ig_overlay",
    "import_checkpoint",
    "kd_loss",
    "lr_at",
    "model_choices",
    "now",
    "read_history",
    "same_dataset",
    "shard_order",
    "subset_dataset",
    "teacher_view",
    "train",
    "train_indices",
    "train_run",
    "unusable_runs",
]
