"""The lesson's numbers (:mod:`.lesson`): how an IG map comes about and what distillation passes
on, computed here so the Lesson page only draws and the tests can check every number it shows."""

from . import lesson
from .lesson import (
    REFERENCE_STEPS,
    Completeness,
    ConvergencePoint,
    KDTerms,
    PathScores,
    RunningSum,
    captum_map,
    convergence,
    entropy,
    kd_terms,
    map_error,
    overlay_examples,
    path_points,
    path_scores,
    path_strip,
    rule_points,
    running_sum,
    soften,
    to_uint8,
)

__all__ = [
    "REFERENCE_STEPS",
    "Completeness",
    "ConvergencePoint",
    "KDTerms",
    "PathScores",
    "RunningSum",
    "captum_map",
    "convergence",
    "entropy",
    "kd_terms",
    "lesson",
    "map_error",
    "overlay_examples",
    "path_points",
    "path_scores",
    "path_strip",
    "rule_points",
    "running_sum",
    "soften",
    "to_uint8",
]
