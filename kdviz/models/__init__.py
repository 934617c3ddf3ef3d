"""Architectures by name: ``create_model("mobilenetv2_cifar", num_classes=10, width_mult=0.5)``."""

from . import airnet, mobilenet, resnet_cifar  # noqa: F401 - importing registers the architectures
from .registry import (
    ModelSpec,
    UnknownModelError,
    create_model,
    get_spec,
    list_models,
    pretrained_path,
    register_model,
)
from .stats import ModelStats, compression_ratio, count_macs, count_params, model_stats, size_on_disk

__all__ = [
    "ModelSpec",
    "ModelStats",
    "UnknownModelError",
    "compression_ratio",
    "count_macs",
    "count_params",
    "create_model",
    "get_spec",
    "list_models",
    "model_stats",
    "pretrained_path",
    "register_model",
    "size_on_disk",
]

# A model's weights on disk, its predictions, its fingerprint and its fast inference copies (after the
# registry's names, which stay as they are above).
from .checkpoints import (
    FOREIGN_SUFFIXES,
    CheckpointError,
    LoadedModel,
    ModelCard,
    checkpoint_problem,
    load_model,
    make_card,
    read_card,
    read_state_dict,
    save_checkpoint,
)
from .evaluate import Predictions, accuracy, predict, spread_indices
from .fingerprint import model_fingerprint
from .speedups import channels_last, fused_for_inference

__all__ += [
    "FOREIGN_SUFFIXES",
    "CheckpointError",
    "LoadedModel",
    "ModelCard",
    "Predictions",
    "accuracy",
    "channels_last",
    "checkpoint_problem",
    "fused_for_inference",
    "load_model",
    "make_card",
    "model_fingerprint",
    "predict",
    "read_card",
    "read_state_dict",
    "save_checkpoint",
    "spread_indices",
]
