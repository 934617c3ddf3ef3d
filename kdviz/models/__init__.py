"""Architectures by name: ``create_model("mobilenetv2_cifar", num_classes=10, width_mult=0.5)``."""

from . import airnet, mobilenet, resnet_cifar  # noqa: F401 - importing registers the architectures
from .registry import ModelSpec, UnknownModelError, create_model, get_spec, list_models, register_model
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
    "register_model",
    "size_on_disk",
]
