"""``benchmarks/run_all.py`` picks the benchmarks of the whole pass: the long ones only when named."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import run_all  # noqa: E402


def names(paths: list[Path]) -> list[str]:
    return [p.stem.removeprefix("bench_") for p in paths]


def test_the_whole_pass_leaves_out_the_benchmarks_that_run_alone():
    whole = names(run_all.benchmarks())
    assert run_all.RUN_ALONE.isdisjoint(whole)
    assert whole[: len(run_all.ORDER)] == run_all.ORDER  # the report's order first
    assert "fast_techniques" in whole


def test_only_can_name_a_benchmark_that_runs_alone(monkeypatch):
    ran: list[str] = []
    monkeypatch.setattr(run_all, "run", lambda script, quick: (ran.append(script.stem), (0, 0.0))[1])
    monkeypatch.setattr(run_all, "write_text", lambda path, text: None)
    assert run_all.main(["--only", "fast_recipe"]) == 0
    assert ran == ["bench_fast_recipe"]
