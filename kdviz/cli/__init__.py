"""``python -m kdviz``: the dashboard's work, headless, one module per group of commands.

:mod:`.catalog` (data, models), :mod:`.runs` (train, eval, runs, make-assets),
:mod:`.attributions` (attribute, ig-precompute), :mod:`.distilling` (distill), :mod:`.studies`
(ablate, hpo); :mod:`.common` holds what they share and :mod:`.main` the parser and the exit codes.
"""

from .common import CLIError, resolve_weights
from .main import build_parser, main

__all__ = ["CLIError", "build_parser", "main", "resolve_weights"]
