"""How long each page of the dashboard takes to open, cold and with cached models (Streamlit's AppTest).

For every page in ``app.py``'s navigation, with the default selection (built-in digits, the asset
teacher and student) and an empty workspace:

- **cold**: Streamlit's caches cleared (a fresh server: data set and models read from disk), a new
  session opens the page;
- **cached**: a new session opens the page while the models are cached (another tab, a second
  visitor): median of ``--repeats``; target under 1 s;
- **rerun**: the same session runs the page again (what every widget change costs): median.

A script run is timed from ``AppTest.run()`` to its return, sidebar included; imports are paid once
before any timing, as a running server has them. Disk caches (``KDVIZ_CACHE``) start empty in a
temporary folder and keep what earlier pages wrote, as a server's would.

Run alone: ``.venv/bin/python benchmarks/bench_pages.py [--quick] [--page pages/x.py]``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, machine, median_of, write_results

APP = ROOT / "app.py"
TARGET_S = 1.0


def pages() -> list[str]:
    """The pages in the app's navigation, in its order."""
    return re.findall(r'st\.Page\(\s*"([^"]+)"', APP.read_text())


def clear_caches() -> None:
    """What a fresh server process starts without: Streamlit's caches and kdviz's in-memory maps."""
    import streamlit as st

    import kdviz.attribution.cache

    st.cache_resource.clear()
    st.cache_data.clear()
    kdviz.attribution.cache._DEFAULT_CACHE = None


def open_page(page: str):
    """A new session (a new browser tab) that opens ``page`` first; returns it and the seconds taken."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=600)
    at.switch_page(page)
    start = time.perf_counter()
    at.run()
    return at, time.perf_counter() - start


def problems(at) -> str:
    found = [e.value for e in at.exception] + [e.value for e in at.error]
    return "; ".join(str(f).splitlines()[0] for f in found)[:120] or "none"


def measure(page: str, repeats: int) -> dict:
    clear_caches()
    at, cold = open_page(page)
    shown = problems(at)
    cached, _ = median_of(lambda: open_page(page), repeats=repeats, warmup=0)
    rerun, _ = median_of(lambda: at.run(), repeats=repeats, warmup=0)
    return {
        "page": page,
        "cold s": round(cold, 2),
        "cached s": round(cached, 3),
        "rerun s": round(rerun, 3),
        f"cached < {TARGET_S:g} s": cached < TARGET_S,
        "errors shown": shown,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one timed repeat instead of three")
    p.add_argument("--page", action="append", help="only this page (repeatable), e.g. pages/benchmark.py")
    args = p.parse_args(argv)
    os.environ.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
    with tempfile.TemporaryDirectory() as home, tempfile.TemporaryDirectory() as cache:
        os.environ["KDVIZ_HOME"], os.environ["KDVIZ_CACHE"] = home, cache
        open_page(pages()[0])  # imports (torch, Streamlit, Plotly...) paid before any timing
        rows = []
        for page in args.page or pages():
            rows.append(measure(page, 1 if args.quick else 3))
            print(f"{page}: {rows[-1]}", flush=True)
    if args.page:  # a partial run updates its pages' rows and keeps the others
        rows = [r for r in previous_rows() if r["page"] not in args.page] + rows
        rows.sort(key=lambda r: pages().index(r["page"]) if r["page"] in pages() else len(pages()))
    write_results("pages", rows, machine() | {"target cached s": TARGET_S})
    return 0


def previous_rows() -> list[dict]:
    import json

    from benchmarks.common import RESULTS

    path = RESULTS / "pages.json"
    return json.loads(path.read_text()).get("rows", []) if path.is_file() else []


if __name__ == "__main__":
    raise SystemExit(main())
