"""``python -m kdviz``: the dashboard's work, headless.

Every failure a person can cause (a missing file, a file that is not a checkpoint, a hostile pickle,
an architecture that does not fit, a missing data set) ends with one line on stderr and a non-zero
exit, never a traceback (set ``KDVIZ_DEBUG=1`` to see one).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..core.version import __version__
from . import attributions, catalog, distilling, exporting, runs, studies


def build_parser() -> argparse.ArgumentParser:
    """The commands in the order ``--help`` lists them; each group module adds its own."""
    p = argparse.ArgumentParser(
        prog="python -m kdviz", description="kdviz: knowledge distillation made visible."
    )
    p.add_argument("--version", action="version", version=f"kdviz {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    catalog.add_data(sub)
    catalog.add_models(sub)
    runs.add_train(sub)
    runs.add_eval(sub)
    runs.add_runs(sub)
    attributions.add_attribute(sub)
    attributions.add_ig_precompute(sub)
    distilling.add_distill(sub)
    studies.add_ablate(sub)
    studies.add_sweep(sub)
    studies.add_hpo(sub)
    exporting.add_export(sub)
    runs.add_make_assets(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "action", None) in ("rename", "delete") and not args.name:
        print("kdviz: error: name the run", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("kdviz: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for a person; KDVIZ_DEBUG=1 for the traceback
        if os.environ.get("KDVIZ_DEBUG"):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"kdviz: error: {message}", file=sys.stderr)
        return 1
