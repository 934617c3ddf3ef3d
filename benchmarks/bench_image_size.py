"""Memory and time of a 224-px image folder: memory-mapped decoded cache against the whole array in RAM.

A folder of generated shapes (:mod:`kdviz.data.synthetic`, JPEG files) is built at 224×224 px in a
temporary folder. Each case runs in a fresh process with an empty or a filled ``KDVIZ_CACHE``: it
loads the data set, then reads one epoch of shuffled, normalised batches (what training and
evaluation do) and reports the process's memory from ``/proc/self/status``:

- ``RSS after imports``: Python, torch and kdviz before any image is read (the floor);
- ``peak RSS``: the most the process held at any time (``VmHWM``);
- ``anon MB`` / ``file MB``: at the end, memory the process owns against pages of mapped files,
  which the kernel may drop and read again when memory is short.

Cases: ``memmap`` (the default: entries from ``arraycache.MMAP_BYTES`` up are memory-mapped) and
``in RAM`` (that threshold raised so the array is read whole, as before). With ``--ig`` it also times
Integrated Gradients on one 224-px image for two registered models at the default steps.

Run alone: ``.venv/bin/python benchmarks/bench_image_size.py [--quick] [--images N] [--ig]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import fresh_process_json, machine, write_results

CASE = """
import json, sys, time
def status():
    out = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) / 1024
    return out
import numpy as np, torch
from kdviz.data import arraycache, load_dataset
from kdviz.data.loader import iterate_batches
torch.set_num_threads(1)
floor = status()["VmRSS"]
if sys.argv[2] == "ram":
    arraycache.MMAP_BYTES = 1 << 62
t0 = time.perf_counter()
data = load_dataset(sys.argv[1], image_size=224)
load_s = time.perf_counter() - t0
t0 = time.perf_counter()
total = 0.0
for x, y, idx in iterate_batches(data.train, 64, mean=data.mean, std=data.std, shuffle=True,
                                 generator=torch.Generator().manual_seed(0)):
    total += float(x[:, 0, 0, 0].sum())
epoch_s = time.perf_counter() - t0
end = status()
print(json.dumps({
    "floor": floor, "load_s": load_s, "epoch_s": epoch_s, "images": len(data.train) + len(data.test),
    "mapped": isinstance(data.train.images, np.memmap), "array_mb": data.train.images.nbytes / 2**20, **end,
}))
"""


def run_case(folder: Path, mode: str, cache: str) -> dict:
    return fresh_process_json(CASE, str(folder), mode, cache=cache)


def build_folder(root: Path, images: int) -> Path:
    from kdviz.data.synthetic import SHAPES, shape_images, write_image_folder

    per_class = max(1, images // len(SHAPES))
    train = shape_images(per_class, 224, seed=0)
    test = shape_images(max(1, per_class // 10), 224, seed=1)
    return write_image_folder(root, train, test, SHAPES, fmt="jpg")


def ig_rows() -> list[dict]:
    import time

    import torch

    from kdviz.attribution import DEFAULT_IG_STEPS, attribute, internal_batch_for
    from kdviz.models import create_model

    rows = []
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    for arch in ("airnet_student_8x", "mnv2_student_4x"):
        model = create_model(arch, num_classes=10).eval()
        t0 = time.perf_counter()
        attribute(model, x, steps=DEFAULT_IG_STEPS, mean=(0, 0, 0), std=(1, 1, 1), cache=False)
        rows.append(
            {
                "model": arch,
                "image px": 224,
                "IG steps": DEFAULT_IG_STEPS,
                "inputs a pass": internal_batch_for(224, 224),
                "s per image": round(time.perf_counter() - t0, 2),
                "torch threads": torch.get_num_threads(),
            }
        )
        print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a 600-image folder (86 MB) instead of 2,000")
    p.add_argument("--images", type=int, help="training images in the folder (default 2,000)")
    p.add_argument("--ig", action="store_true", help="also time IG on one 224-px image")
    args = p.parse_args(argv)
    images = args.images or (600 if args.quick else 2000)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_folder(Path(tmp) / "shapes224", images)
        for label, mode in (("memmap", "mmap"), ("in RAM", "ram")):
            with tempfile.TemporaryDirectory() as cache:
                for when in ("cold", "warm"):
                    r = run_case(folder, mode, cache)
                    rows.append(
                        {
                            "case": label,
                            "cache": when,
                            "images": r["images"],
                            "train array MB": round(r["array_mb"], 1),
                            "mapped": r["mapped"],
                            "load s": round(r["load_s"], 2),
                            "epoch s": round(r["epoch_s"], 2),
                            "RSS after imports MB": round(r["floor"]),
                            "peak RSS MB": round(r["VmHWM"]),
                            "anon MB": round(r["RssAnon"]),
                            "file MB": round(r["RssFile"]),
                        }
                    )
                    print(rows[-1], flush=True)
    write_results("image_size", rows, machine())
    if args.ig:
        write_results("image_size_ig", ig_rows(), machine())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
