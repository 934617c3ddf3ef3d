"""Load time of each data set, cold (an empty ``KDVIZ_CACHE``) and warm (the decoded arrays cached).

Each load runs in a fresh process (no in-process memo helps it), timed around ``load_dataset`` only
(imports excluded): the cost a person pays when the dashboard or a command starts. Data sets: the
built-in digits, and the CIFAR-10 JPEG folder in ``../shared/data`` (60,000 files decoded once,
then read back as one array) where it exists.

Run alone: ``.venv/bin/python benchmarks/bench_data.py [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, fresh_process_json, machine, write_results

CIFAR10 = ROOT.parent / "shared" / "data" / "cifar10"
TIMED_LOAD = """
import json, sys, time
from kdviz.data import load_dataset
start = time.perf_counter()
data = load_dataset(sys.argv[1])
print(json.dumps({"s": time.perf_counter() - start, "train": len(data.train), "test": len(data.test)}))
"""


def timed_load(source: str, cache: str) -> dict:
    """Seconds to load ``source`` in a fresh process whose ``KDVIZ_CACHE`` is ``cache``."""
    return fresh_process_json(TIMED_LOAD, source, cache=cache)


def cache_bytes(folder: str) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def rows_for(name: str, source: str, warm_repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        cold = timed_load(source, cache)
        warm = [timed_load(source, cache)["s"] for _ in range(warm_repeats)]
        size = cache_bytes(cache)
    return {
        "data set": name,
        "images": cold["train"] + cold["test"],
        "cold s (empty cache)": round(cold["s"], 2),
        "warm s (median)": round(statistics.median(warm), 3),
        "warm runs": len(warm),
        "cold / warm ×": round(cold["s"] / statistics.median(warm), 1),
        "cache MB": round(size / 1e6, 1),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one warm load instead of three")
    args = p.parse_args(argv)
    repeats = 1 if args.quick else 3
    rows = [rows_for("digits (built in)", "digits", repeats)]
    print(rows[-1], flush=True)
    if CIFAR10.is_dir():
        rows.append(rows_for("CIFAR-10 JPEG folder (../shared/data)", f"cifar10:{CIFAR10}", repeats))
        print(rows[-1], flush=True)
    else:
        print(f"skip CIFAR-10: {CIFAR10} not found")
    write_results("data", rows, machine())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
