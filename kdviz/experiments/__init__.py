"""Studies built on training: the paper's ablation (:mod:`.ablation`), the Optuna search
(:mod:`.hpo`) and the named configurations they start from (:mod:`.presets`). A study is a folder
that the CLI and the Ablations page read alike; interrupted, it resumes where it stopped.
"""

from . import ablation, hpo, presets
from .ablation import (
    AGREEMENT_METRICS,
    RunView,
    StudyConfig,
    StudyError,
    StudyEvent,
    StudyView,
    TeacherConfig,
    list_studies,
    load_study,
    markdown_table,
    prepare_inputs,
    run_name,
    run_study,
    studies_root,
    summarise,
)
from .hpo import (
    SearchConfig,
    SearchSpace,
    SearchView,
    best_config,
    hide_password,
    list_searches,
    load_search,
    run_search,
    train_best,
)
from .presets import PRESETS, configure, preset, smoke

__all__ = [
    "AGREEMENT_METRICS",
    "PRESETS",
    "RunView",
    "SearchConfig",
    "SearchSpace",
    "SearchView",
    "StudyConfig",
    "StudyError",
    "StudyEvent",
    "StudyView",
    "TeacherConfig",
    "ablation",
    "best_config",
    "configure",
    "hide_password",
    "hpo",
    "list_searches",
    "list_studies",
    "load_search",
    "load_study",
    "markdown_table",
    "prepare_inputs",
    "preset",
    "presets",
    "run_name",
    "run_search",
    "run_study",
    "smoke",
    "studies_root",
    "summarise",
    "train_best",
]
