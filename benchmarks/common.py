"""What every benchmark shares: the machine it ran on, a median of repeated timings, and the results file.

Each ``bench_*.py`` writes ``benchmarks/results/<name>.json`` through :func:`write_results`, so
``run_all.py`` can rebuild one Markdown table from them without knowing any benchmark's details.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kdviz.core.atomic import write_json  # noqa: E402
from kdviz.core.machine import cpu_name  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def machine() -> dict[str, Any]:
    """The facts a reader needs to judge a timing: CPU, cores, threads, library versions, load."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(terse=True),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # optional: only the latency benchmark needs it
        pass
    if hasattr(os, "getloadavg"):
        info["load average (1 min)"] = round(os.getloadavg()[0], 2)
    return info


def median_of(
    fn: Callable[[], Any], repeats: int = 5, warmup: int = 1, time_cap: float | None = None
) -> tuple[float, list[float]]:
    """Median seconds of ``fn()`` over ``repeats`` timed calls after ``warmup`` untimed ones.

    The median, not the mean, because a shared machine adds one-sided outliers. ``time_cap`` stops
    the timed calls early (at least one is always taken) so a slow case cannot stall a suite.
    """
    for _ in range(max(0, warmup)):
        fn()
    samples: list[float] = []
    start = time.perf_counter()
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
        if time_cap is not None and time.perf_counter() - start >= time_cap:
            break
    return statistics.median(samples), samples


def write_results(name: str, rows: Sequence[dict[str, Any]], extra: dict[str, Any] | None = None) -> Path:
    """Write ``results/<name>.json`` atomically (rows plus the machine) and print the rows as a table."""
    path = RESULTS / f"{name}.json"
    write_json(path, {"name": name, "machine": dict(extra or {}), "rows": list(rows)})
    print(f"\n## {name}\n")
    print(markdown_table(rows) if rows else "(no rows)")
    print(f"\n→ {path.relative_to(ROOT)}")
    return path


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows of dicts as a Markdown table; columns in first-seen order, nested values left out."""
    columns: list[str] = []
    for row in rows:
        for key, value in row.items():
            if key not in columns and not isinstance(value, (dict, list)):
                columns.append(key)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value).replace("|", "\\|")


def fresh_process_json(code: str, *args: str, cache: str) -> dict[str, Any]:
    """Run ``python -c code args`` in a fresh process whose ``KDVIZ_CACHE`` is ``cache``; the JSON
    object on its last stdout line. A fresh process measures a cold start (imports, caches, memory)
    that the benchmark's own warm process cannot."""
    env = {**os.environ, "KDVIZ_CACHE": cache, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])
