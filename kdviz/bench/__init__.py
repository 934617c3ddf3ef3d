"""Measuring models on this machine: latency in eager PyTorch and ONNX Runtime (:mod:`.latency`),
the ONNX export checked against PyTorch (:mod:`.export`) and the paper's headline table with its
cached evaluation and Pareto front (:mod:`.scorecard`).
"""

from . import export, latency, scorecard
from .export import ExportError, check_equal, session, to_onnx
from .latency import (
    Latency,
    busy_message,
    eager,
    eager_in_turns,
    onnxruntime_in_turns,
    relative_spread,
    sample,
    sample_interleaved,
    torch_threads,
)
from .scorecard import Entry, cached_predictions, headline, pareto_front

__all__ = [
    "Entry",
    "ExportError",
    "Latency",
    "busy_message",
    "cached_predictions",
    "check_equal",
    "eager",
    "eager_in_turns",
    "export",
    "headline",
    "latency",
    "onnxruntime_in_turns",
    "pareto_front",
    "relative_spread",
    "sample",
    "sample_interleaved",
    "scorecard",
    "session",
    "to_onnx",
    "torch_threads",
]
