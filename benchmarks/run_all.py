"""Run every benchmark of the project, then rebuild ``benchmarks/results/README.md`` from the results.

Each ``benchmarks/bench_*.py`` runs in its own process (as it would alone, so one benchmark's
caches and threads do not colour the next), writes ``results/*.json``; this script then writes one
Markdown file with every table and the machine they came from. Timings on a machine others are
using are not worth quoting: run it on a quiet one (``nice`` does not make it quiet).

``.venv/bin/python benchmarks/run_all.py [--quick] [--only latency --only pages] [--report-only]``

The benchmarks of :data:`RUN_ALONE` (an hour of training, or arguments of their own) are left out of
the whole pass; ``--only`` runs them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, ROOT, markdown_table
from kdviz.core.atomic import write_text

HERE = ROOT / "benchmarks"
#: The order of the report; benchmarks not named here follow in alphabetical order.
ORDER = ["data", "train", "attribution", "latency", "pages"]
#: The load is read just after a benchmark ran on every core, so its own work brings it to about 1× the
#: cores; only above this share was something else running.
BUSY_LOAD_PER_CORE = 1.5
MACHINE_KEYS = ["cpu", "cores", "torch threads", "torch", "onnxruntime", "python", "platform"]


#: Benchmarks that train for up to an hour or need their own arguments: they run alone, or when
#: ``--only`` names them, never in the whole pass.
RUN_ALONE = {"fast_recipe", "end_to_end_96"}


def benchmarks(*, every: bool = False) -> list[Path]:
    """The benchmarks in report order; ``every`` includes those of :data:`RUN_ALONE`."""
    found = [p for p in HERE.glob("bench_*.py") if every or p.stem.removeprefix("bench_") not in RUN_ALONE]
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(found, key=lambda p: (rank.get(p.stem.removeprefix("bench_"), len(ORDER)), p.stem))


def run(script: Path, quick: bool) -> tuple[int, float]:
    print(f"\n=== {script.name}{' --quick' if quick else ''}", flush=True)
    start = time.perf_counter()
    code = subprocess.call([sys.executable, str(script), *(["--quick"] if quick else [])], cwd=ROOT)
    return code, time.perf_counter() - start


def report(ran: list[dict]) -> str:
    """Every results file as a section, ordered like the benchmarks; the machine once at the top."""
    files = sorted(RESULTS.glob("*.json"))
    rank = {name: i for i, name in enumerate(ORDER)}
    files.sort(key=lambda f: (rank.get(f.stem.split("_")[0], len(ORDER)), f.stem))
    loaded = [json.loads(f.read_text()) for f in files]
    lines = [
        "# Benchmark results",
        "",
        "Written by `benchmarks/run_all.py`; each table comes from `benchmarks/results/<name>.json`, "
        "written by the `bench_*.py` named in its file. Timings are medians after warm-up; ratios divide "
        "medians of the same run.",
        "",
    ]
    if loaded:
        m = loaded[0].get("machine", {})
        lines += [
            "## Machine",
            "",
            "| " + " | ".join(k for k in MACHINE_KEYS if k in m) + " |",
            "|" + "|".join("---" for k in MACHINE_KEYS if k in m) + "|",
            "| " + " | ".join(str(m[k]) for k in MACHINE_KEYS if k in m) + " |",
            "",
        ]
    busy = [
        d["machine"]["load average (1 min)"] / d["machine"].get("cores", 1)
        for d in loaded
        if d.get("machine", {}).get("load average (1 min)") is not None
    ]
    if busy and max(busy) > BUSY_LOAD_PER_CORE:
        lines += [
            f"**Taken on a busy machine** (load average up to {max(busy):.1f}× the number of cores, from "
            "other work): timings swing by orders of magnitude, multi-threaded eager PyTorch most. "
            "Not numbers to quote: run `benchmarks/run_all.py` again on a quiet machine.",
            "",
        ]
    if ran:
        lines += ["## This run", "", markdown_table(ran), ""]
    for f, data in zip(files, loaded, strict=False):
        m = data.get("machine", {})
        when = m.get("when", "?")
        load = m.get("load average (1 min)")
        lines += [
            f"## {data.get('name', f.stem)}",
            "",
            f"`{f.name}` · {when}"
            + (f" · load average {load} on {m.get('cores')} cores" if load is not None else ""),
            "",
            markdown_table(data.get("rows", []))
            if data.get("rows")
            else "(no rows: see the benchmark's output)",
            "",
        ]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    p.add_argument("--only", action="append", help="run only bench_NAME.py (repeatable)")
    p.add_argument("--report-only", action="store_true", help="rebuild results/README.md from the JSON files")
    args = p.parse_args(argv)
    scripts = [] if args.report_only else benchmarks(every=bool(args.only))
    if args.only:
        unknown = set(args.only) - {s.stem.removeprefix("bench_") for s in scripts}
        if unknown:
            p.error(
                f"no benchmark named {sorted(unknown)}; there are: "
                f"{', '.join(s.stem.removeprefix('bench_') for s in scripts)}"
            )
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in args.only]
    ran = []
    for script in scripts:
        code, seconds = run(script, args.quick)
        ran.append({"benchmark": script.name, "exit": code, "minutes": round(seconds / 60, 1)})
    write_text(RESULTS / "README.md", report(ran))
    print(f"\n→ {(RESULTS / 'README.md').relative_to(ROOT)}")
    failed = [r["benchmark"] for r in ran if r["exit"] != 0]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
