"""Memory of one dashboard session over many attribution requests: does it stay bounded?

The Attributions page computes, for every image a person looks at, the maps of the teacher and the
student through ``kdviz.ui.attributions.attribute_image`` with the process-wide attribution cache
(memory LRU plus disk). This script makes the same call for 200 different images (both models each
time, the page's default options), and records the process's resident memory (RSS) as it goes. The
target: the 200 requests grow RSS by less than 200 MB, measured from after one warm-up request (so
the imports, the models and the first allocations of the allocator are not counted as growth).

Run alone: ``.venv/bin/python benchmarks/bench_memory.py [--quick] [--requests N]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LIMIT_MB = 200.0


def rss_mb() -> float:
    """Resident memory of this process now, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status: this benchmark needs Linux")


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 requests instead of 200")
    parser.add_argument("--requests", type=int, default=None)
    args = parser.parse_args()
    requests = args.requests or (50 if args.quick else 200)

    # the disk half of the cache goes to a scratch folder, so every request is computed, not read back
    scratch = tempfile.TemporaryDirectory(prefix="kdviz-bench-memory-")
    os.environ["KDVIZ_CACHE"] = scratch.name

    import torch  # noqa: F401 - imported before the first measurement

    from benchmarks.common import machine, write_results
    from kdviz import attribution
    from kdviz.attribution import AttributionOptions
    from kdviz.core.settings import assets_dir
    from kdviz.data import load_dataset
    from kdviz.models.checkpoints import load_model
    from kdviz.ui.attributions import attribute_image

    data = load_dataset("digits")
    models = {role: load_model(assets_dir() / f"digits_{role}") for role in ("teacher", "student")}
    options = AttributionOptions()  # the page's defaults: IG, 32 Gauss–Legendre steps, zero baseline
    images = data.test.images
    labels = data.test.labels
    n = min(requests, len(images) - 1)
    cache = attribution.default_cache()

    def request(i: int) -> None:
        for loaded in models.values():  # as the page: both panels
            result = attribute_image(loaded, images[i], options, int(labels[i]))
            assert not result.cached[0], "every request must compute (the images differ)"

    request(len(images) - 1)  # warm-up: an image the loop never asks for
    gc.collect()
    start_mb, t0 = rss_mb(), time.perf_counter()
    rows = [
        {
            "requests": 0,
            "RSS MB": round(start_mb, 1),
            "growth MB": 0.0,
            "cache entries in memory": len(cache._memory),
        }
    ]
    step = max(1, n // 10)
    for i in range(n):
        request(i)
        if (i + 1) % step == 0 or i + 1 == n:
            gc.collect()
            now = rss_mb()
            rows.append(
                {
                    "requests": i + 1,
                    "RSS MB": round(now, 1),
                    "growth MB": round(now - start_mb, 1),
                    "cache entries in memory": len(cache._memory),
                }
            )
    growth = rows[-1]["growth MB"]
    verdict = "pass" if growth < LIMIT_MB else "FAIL"
    summary = {
        "requests": n,
        "maps per request": len(models),
        "growth MB": growth,
        "limit MB": LIMIT_MB,
        "peak RSS MB": round(peak_mb(), 1),
        "seconds": round(time.perf_counter() - t0, 1),
        "cache memory_items": cache.memory_items,
        "verdict": verdict,
    }
    rows.append(
        {
            "requests": f"total ({verdict})",
            "RSS MB": rows[-1]["RSS MB"],
            "growth MB": growth,
            "cache entries in memory": rows[-1]["cache entries in memory"],
        }
    )
    write_results("memory", rows, {**machine(), **summary})
    print(
        f"\n{n} requests ({n * len(models)} maps): RSS grew {growth:.1f} MB "
        f"(limit {LIMIT_MB:.0f} MB): {verdict}"
    )
    scratch.cleanup()
    return 0 if verdict == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
