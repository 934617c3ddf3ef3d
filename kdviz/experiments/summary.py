"""A study's summary: the small files that say what it found, which can be committed.

A study folder holds weights, caches and resume states (hundreds of megabytes, never committed). Its
summary holds what the table, the figures and the statistics need, and nothing derived from the
images beyond numbers::

    <results>/<study>/study.json      configuration, teacher, student, cost, machine, parts run
    <results>/<study>/runs/<run>.json one finished run: accuracy, agreement figures, history, wall time
    <results>/<study>/arms.csv        the table of :func:`.ablation.summarise`, every number unrounded
    <results>/<study>/arms.md         the same, rounded, as Markdown

Parts of one study run on different machines write into one summary: each adds its runs, and the
tables are remade from all the runs present, so the next part can run elsewhere and the numbers of
every part meet in one table. A summary made by another configuration is refused. Every file is
written atomically; :func:`load_summary` reads a summary as a :class:`.ablation.StudyView` (without
weights), so the page and the CLI summarise committed results exactly as they summarise a study.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from ..core import atomic, machine, settings
from ..core.version import __version__
from ..training.loop import EpochRecord
from .ablation import RunView, StudyConfig, StudyError, StudyView, csv_table, markdown_table, summarise
from .plan import planned_runs

SUMMARY = "study.json"
KIND = "kdviz-study-summary"
STATE_KEYS = ("teacher", "student", "compression", "subset_size", "created", "kdviz_version")


def results_root() -> Path:
    """Where committed summaries live (``docs/results``; ``KDVIZ_RESULTS`` overrides)."""
    return settings.results_dir()


def write_summary(study: StudyView, out: str | Path, *, part: str = "") -> Path:
    """Write (or extend) the summary of ``study`` in ``out``: its finished runs, then the tables.

    A summary of another configuration is refused with :class:`StudyError`; runs it already holds
    from other parts are kept.
    """
    out = Path(out)
    atomic.remove_leftovers(out)
    head = _read_head(out)
    if head is not None and StudyConfig.from_dict(head["config"]).as_dict() != study.config.as_dict():
        diff = [k for k, v in study.config.as_dict().items() if head["config"].get(k) != v]
        raise StudyError(f"{out} summarises a study with other settings ({', '.join(diff)})")
    (out / "runs").mkdir(parents=True, exist_ok=True)
    atomic.remove_leftovers(out / "runs")
    for run in study.runs:
        if run.metrics is None:
            continue
        record = {
            "name": run.name,
            "arm": run.arm,
            "seed": run.seed,
            "metrics": run.metrics,
            "history": [asdict(r) for r in run.history],
        }
        atomic.write_json(out / "runs" / f"{run.name}.json", record)
    parts = dict((head or {}).get("parts", {}))
    mine = [r.name for r in study.runs if r.metrics is not None and (r.metrics.get("part", "") == part)]
    if part or mine:
        earlier = parts.get(part or "all", {})  # the same part begun in another session, maybe elsewhere
        names = sorted(set(earlier.get("runs", [])) | set(mine))
        here = machine.describe()
        parts[part or "all"] = {
            "runs": names,
            "wall_seconds": sum(_wall_seconds(out, name) for name in names),
            "machine": here,
            "machines": _distinct([*earlier.get("machines", [earlier.get("machine", here)]), here]),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
    # the study's reference (teacher and student costs, latency included) is the one measured where
    # the summary began: a part run later on another machine would otherwise replace every row's
    # latency with its own machine's
    reference = {k: study.state[k] for k in STATE_KEYS if k in study.state}
    reference.update({k: head[k] for k in STATE_KEYS if head is not None and k in head})
    summary = {
        "kind": KIND,
        "format": 1,
        "name": study.name,
        "config": study.config.as_dict(),
        **reference,
        "runs": [{"name": r.name, "arm": r.arm, "seed": r.seed} for r in study.runs],
        "parts": parts,
        "study_folder": str(study.folder) if not study.summary else (head or {}).get("study_folder", ""),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "kdviz_version": __version__,
    }
    atomic.write_json(out / SUMMARY, summary)
    merged = load_summary(out)
    rows = summarise(merged)
    atomic.write_text(out / "arms.csv", csv_table(rows))
    atomic.write_text(out / "arms.md", markdown_table(rows) + "\n")
    return out


def _distinct(items: list) -> list:
    out: list = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def _wall_seconds(out: Path, name: str) -> float:
    """A run's wall time, with the IG cache it waited for (a part's time includes its cache)."""
    try:
        metrics = json.loads((out / "runs" / f"{name}.json").read_text())["metrics"]
        return float(metrics.get("wall_seconds", 0.0)) + float(metrics.get("ig_cache_seconds", 0.0))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return 0.0


def _read_head(out: Path) -> dict | None:
    path = out / SUMMARY
    if not path.is_file():
        return None
    try:
        head = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise StudyError(f"{path} cannot be read ({exc})") from None
    if head.get("kind") != KIND:
        raise StudyError(f"{path} is not a kdviz study summary")
    return head


def load_summary(folder: str | Path) -> StudyView:
    """A summary as a read-only :class:`StudyView` (``summary=True``; runs carry no weights)."""
    folder = Path(folder)
    head = _read_head(folder)
    if head is None:
        raise StudyError(f"{folder} is not a study summary (no {SUMMARY})")
    try:
        config = StudyConfig.from_dict(head["config"])
        runs = []
        for entry in head.get("runs", []):
            path = folder / "runs" / f"{entry['name']}.json"
            record = json.loads(path.read_text()) if path.is_file() else None
            runs.append(
                RunView(
                    entry["name"],
                    entry["arm"],
                    int(entry["seed"]),
                    path,
                    "done" if record else "pending",
                    record["metrics"] if record else None,
                    [EpochRecord(**r) for r in record["history"]] if record else [],
                )
            )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise StudyError(f"{folder} holds an unreadable summary ({exc})") from None
    planned = planned_runs(folder.name)
    counted = [r for r in runs if (r.arm, r.seed) in planned] or runs  # a study of no plan: all its runs
    state = {k: head[k] for k in STATE_KEYS if k in head}
    state.update(
        status="done" if counted and all(r.metrics for r in counted) else "partial",
        planned_runs=[r.name for r in counted],
        parts=head.get("parts", {}),
        study_folder=head.get("study_folder", ""),
        updated=head.get("updated", ""),
        runs=head.get("runs", []),
    )
    return StudyView(folder, config, state, runs, summary=True)


def list_summaries(root: str | Path | None = None) -> list[StudyView]:
    """The readable summaries under ``root`` (default :func:`results_root`), by name."""
    root = Path(root) if root is not None else results_root()
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.iterdir()):
        if (path / SUMMARY).is_file():
            try:
                found.append(load_summary(path))
            except StudyError:
                continue
    return found


def weights_of(view: StudyView) -> StudyView | None:
    """The study a summary was made from, when its folder (with the students' weights) is on this
    machine and is that study; None otherwise."""
    from .ablation import load_study

    if not view.summary:
        return view
    folder = view.state.get("study_folder")
    if not folder or not (Path(folder) / "study.json").is_file():
        return None
    try:
        study = load_study(folder)
    except StudyError:
        return None
    return study if study.config.as_dict() == view.config.as_dict() else None
