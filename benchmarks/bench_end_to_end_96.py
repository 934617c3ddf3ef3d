"""Issue 15's workflow on real images at 96 px, from the command line: a ``timm:`` teacher fine-tuned
from a weights file, a student derived from it (about 4x) distilled with KD + IG, the same student
trained alone (the baseline), and the student exported to ONNX. Every stage is a ``python -m
kdviz`` command, timed; the table gives its wall time and test accuracy.

The 10-class folder is CIFAR-10 from ``../shared/data`` read at 96 px (the images are upscaled
from 32 px; written to a temporary folder, never committed): ``--per-class`` training and
``--test-per-class`` test images of each class.

Where the teacher's weights come from: ``--pretrained FILE`` (an ImageNet file of the teacher's
architecture fetched on a machine that is online: the realistic case). Without it, this machine
has no ImageNet weights, so a stand-in is made first: the teacher trained from random weights on
*other* CIFAR-10 training images (``--standin-per-class``), whose weights file the fine-tuning then
starts from. Its features come from far fewer images than ImageNet's, so the accuracies are those
of the pipeline on this machine, not of an ImageNet backbone: say which when quoting them.

Run alone: ``.venv/bin/python benchmarks/bench_end_to_end_96.py [--quick] [--pretrained FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, machine, markdown_table, write_results
from kdviz.core.settings import data_root

TEACHER = "timm:mobilenetv3_large_100"
SIZE = 96


def cifar_folder(root: Path, first: int, per_class: int, test_per_class: int) -> Path:
    """CIFAR-10 images ``first`` to ``first + per_class`` of each class (and the first
    ``test_per_class`` test images) copied as files: the folder is read at 96 px by kdviz itself."""
    source = data_root() / "cifar10"
    if not (source / "train").is_dir():
        raise SystemExit(f"{source} not found: this benchmark needs ../shared/data/cifar10 (see README)")
    for split, start, count in (("train", first, per_class), ("test", 0, test_per_class)):
        for folder in sorted(p for p in (source / split).iterdir() if p.is_dir()):
            out = root / split / folder.name
            out.mkdir(parents=True, exist_ok=True)
            for f in sorted(folder.iterdir())[start : start + count]:
                (out / f.name).symlink_to(f)
    return root


def run(stage: str, *args: object, home: Path, rows: list[dict], notes: str = "") -> dict:
    """One CLI command, timed; its JSON answer joins the table."""
    command = [sys.executable, "-m", "kdviz", *map(str, args), "--json"]
    # the decoded-image and IG caches of the temporary folder go with it
    env = {**os.environ, "KDVIZ_HOME": str(home), "KDVIZ_CACHE": str(home / ".cache"), "KDVIZ_DEVICE": "cpu"}
    started = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{stage} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    accuracy = answer.get("test_accuracy", answer.get("accuracy"))
    rows.append(
        {
            "stage": stage,
            "command": " ".join(str(a) for a in args[:1]) + " " + notes,
            "wall s": round(seconds, 1),
            "test accuracy": None if accuracy is None else round(float(accuracy), 4),
        }
    )
    print(f"{stage}: {seconds:.0f} s" + ("" if accuracy is None else f", {float(accuracy):.2%}"), flush=True)
    return answer


def run_name(arm: str) -> str:
    return f"student-{arm.replace('+', '-')}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few images and one epoch per stage")
    p.add_argument("--pretrained", help="an ImageNet weights file of the teacher (else a stand-in is made)")
    p.add_argument("--per-class", type=int, default=200, help="training images per class (default 200)")
    p.add_argument("--test-per-class", type=int, default=100)
    p.add_argument("--standin-per-class", type=int, default=500)
    p.add_argument("--standin-epochs", type=int, default=4)
    p.add_argument("--epochs", type=int, default=5, help="epochs of the fine-tuning and of each student")
    p.add_argument("--ig-steps", type=int, default=16)
    args = p.parse_args(argv)
    if args.quick:
        args.per_class, args.test_per_class, args.standin_per_class = 20, 10, 20
        args.standin_epochs, args.epochs, args.ig_steps = 1, 1, 4

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="kdviz-e2e96-") as tmp:
        tmp_path = Path(tmp)
        home = tmp_path / "home"
        first = args.standin_per_class  # the stand-in's images come before these
        folder = cifar_folder(tmp_path / "cifar96", first, args.per_class, args.test_per_class)
        data = ("--data", folder, "--image-size", SIZE)
        weights = args.pretrained
        if weights is None:
            standin = cifar_folder(tmp_path / "standin", 0, args.standin_per_class, args.test_per_class)
            run(
                "stand-in pretraining", "train", "--data", standin, "--image-size", SIZE, "--arch", TEACHER,
                "--epochs", args.standin_epochs, "--name", "standin", home=home, rows=rows,
                notes=f"{TEACHER}, random init, {10 * args.standin_per_class} other CIFAR-10 images",
            )  # fmt: skip
            weights = home / "standin" / "model.safetensors"
        origin = "the given file" if args.pretrained else "the stand-in"
        teacher = run(
            "teacher: fine-tune", "train", *data, "--arch", TEACHER, "--pretrained", weights,
            "--recipe", "finetune", "--epochs", args.epochs, "--name", "teacher", home=home, rows=rows,
            notes=f"{TEACHER} --recipe finetune from {origin}",
        )  # fmt: skip
        for arm in ("kd+ig", "baseline"):
            run(
                f"student: {arm}", "distill", "--teacher", "teacher", *data, "--student-ratio", "4",
                "--arm", arm, "--ig-steps", args.ig_steps, "--epochs", args.epochs, "--name", run_name(arm),
                home=home, rows=rows, notes="--student-ratio 4 (timm:mobilenetv3_small_075, 4.10x)",
            )  # fmt: skip
        exported = run(
            "export", "export", "--weights", home / run_name("kd+ig"), "--out", tmp_path / "student.onnx",
            home=home, rows=rows, notes="ONNX, checked against PyTorch on test images",
        )  # fmt: skip
        rows[-1]["test accuracy"] = None
        rows[-1]["command"] += f" (max |diff| {exported['max_abs_diff']:.1e})"
    extra = {
        "machine": machine(),
        "image_size": SIZE,
        "train_images": 10 * args.per_class,
        "test_images": 10 * args.test_per_class,
        "epochs": args.epochs,
        "ig_steps": args.ig_steps,
        "teacher_weights": "given file" if args.pretrained else "stand-in (trained here from random weights)",
        "teacher_accuracy": teacher.get("test_accuracy"),
        "quick": args.quick,
    }
    print(markdown_table(rows))
    print(f"machine: {extra['machine']['cpu']}, {extra['machine']['cores']} cores")
    path = write_results("end_to_end_96" + ("_quick" if args.quick else ""), rows, extra)
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
