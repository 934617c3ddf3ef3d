"""``kill -9`` in the middle of long work: nothing half-written is left, and the work resumes.

Each test runs the real command (``python -m kdviz ...``) in its own process group, kills it with
SIGKILL once some work is finished on disk, checks that every file left is whole (JSON parses,
safetensors and NumPy files load), runs the same command again and checks that it picked up where
the killed one stopped and ends exactly as a run that was never interrupted. Waits poll the disk,
every wait is bounded, and the process group is killed in a ``finally``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 300  # one whole command, on a loaded 2-core machine
POLL_S = 0.005

pytestmark = pytest.mark.slow


# ----------------------------------------------------------------------------------- helpers


def _env() -> dict:
    # one thread: the interrupted and the uninterrupted run compute in the same order (and the
    # machine's two cores are shared with the rest of the suite)
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def kdviz(*args: str) -> list[str]:
    return [sys.executable, "-m", "kdviz", *args]


def run_to_end(args: list[str], log: Path) -> dict:
    """Run a command to its end; its ``--json`` line, parsed."""
    done = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    log.write_text(done.stdout + done.stderr)
    assert done.returncode == 0, f"{' '.join(args[2:])} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


class Killable:
    """A command in its own process group, killed with SIGKILL on request and, whatever happens, at
    the end."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                args,
                cwd=ROOT,
                env=_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def __enter__(self) -> Killable:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.kill()

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = RUN_TIMEOUT_S) -> None:
        """Poll ``condition`` until it holds; fail if the command ends first or time runs out."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                pytest.fail(
                    f"the command ended (exit {self.proc.returncode}) before {what}:\n"
                    f"{self.log.read_text()[-3000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {timeout} s:\n{self.log.read_text()[-3000:]}")
            time.sleep(POLL_S)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        assert self.proc.returncode == -signal.SIGKILL


def leftovers(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.tmp"))


def assert_whole(folder: Path) -> None:
    """Every file a reader would open is complete: JSON parses, safetensors and .npy files load."""
    checked = 0
    for f in sorted(folder.rglob("*")):
        if not f.is_file() or f.name.endswith(".tmp"):
            continue
        if f.suffix == ".json":
            json.loads(f.read_text())
        elif f.suffix == ".safetensors":
            load_file(str(f))
        elif f.suffix == ".npy":
            np.load(f, mmap_mode="r")
        else:
            continue
        checked += 1
    assert checked, f"nothing to check in {folder}"


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------- training

EPOCHS = 5


def train_args(name: str, *, seed: int = 5, epochs: int = EPOCHS) -> list[str]:
    """A small digits training run as a command line (``--json``: its result on the last line)."""
    return kdviz(
        "train",
        "--data",
        "digits",
        "--role",
        "student",
        "--arch",
        "mnv2_student_12x",
        "--arch-kwargs",
        '{"width_mult": 0.25}',
        "--epochs",
        str(epochs),
        "--batch-size",
        "32",
        "--train-limit",
        "96",
        "--eval-limit",
        "30",
        "--seed",
        str(seed),
        "--name",
        name,
        "--json",
    )


def epochs_in(run: Path) -> int:
    return len(read_json(run / "history.json") or [])


def resume_epochs(run: Path) -> int:
    """Finished epochs in the resume state, the file a restarted run starts from."""
    with safe_open(str(run / "resume.safetensors"), "pt") as fh:
        return len(json.loads(fh.metadata()["history"]))


def test_training_killed_twice_resumes_and_ends_as_an_uninterrupted_run(tmp_path):
    home = Path(os.environ["KDVIZ_HOME"])
    reference = run_to_end(train_args("uninterrupted"), tmp_path / "reference.log")
    assert reference["epochs_done"] == EPOCHS and reference["resumed_from"] == 0
    run = home / "interrupted"

    # 1. killed once the first epoch is on disk
    with Killable(train_args("interrupted"), tmp_path / "first.log") as child:
        child.wait_for(lambda: epochs_in(run) >= 1, "first finished epoch")
        child.kill()
    assert_whole(run)
    first = read_json(run / "history.json")
    assert 1 <= len(first) < EPOCHS
    assert json.loads((run / "card.json").read_text())["metrics"]["complete"] is False

    # 2. resumed, and killed again while it is writing a file (the moment a temporary file exists)
    with Killable(train_args("interrupted"), tmp_path / "second.log") as child:
        child.wait_for(lambda: bool(leftovers(run)), "write in progress")
        child.kill()
    assert_whole(run)  # the files a reader opens are whole; the half-written one is only a .tmp
    assert leftovers(run), "killed mid-write: its temporary file is still there"
    kept = resume_epochs(run)
    second = read_json(run / "history.json")
    assert len(first) <= len(second) <= kept < EPOCHS
    assert second[: len(first)] == first  # no finished epoch lost or redone

    # 3. resumed to the end
    out = run_to_end(train_args("interrupted"), tmp_path / "third.log")
    assert out["resumed_from"] == kept and out["epochs_done"] == EPOCHS and out["stopped"] is False
    assert not leftovers(run), "the resumed run removes what the killed one left half-written"
    history = read_json(run / "history.json")
    assert [r["epoch"] for r in history] == list(range(1, EPOCHS + 1))
    assert history[: len(second)] == second  # even the killed runs' timings are kept: nothing redone

    # ... equal to the run that was never interrupted: same weights, same losses and accuracies
    ref_dir = home / "uninterrupted"
    ours, theirs = load_file(str(run / "model.safetensors")), load_file(str(ref_dir / "model.safetensors"))
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    ref_history = read_json(ref_dir / "history.json")
    for mine, ref in zip(history, ref_history, strict=False):
        for field in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
            assert mine[field] == ref[field], (mine["epoch"], field)
    assert out["test_accuracy"] == reference["test_accuracy"]


# ----------------------------------------------------------------------------------- IG cache

IMAGES, CHUNK = 160, 8


def ig_args(out: Path) -> list[str]:
    return kdviz(
        "ig-precompute",
        "--weights",
        "digits_student",
        "--data",
        "digits",
        "--split",
        "train",
        "--limit",
        str(IMAGES),
        "--steps",
        "8",
        "--batch-size",
        str(CHUNK),
        "--out",
        str(out),
        "--json",
    )


def done_mask(folder: Path) -> np.ndarray:
    try:
        return np.load(folder / "done-0-of-1.npy")
    except (OSError, ValueError):
        return np.zeros(IMAGES, bool)


def test_ig_precompute_killed_resumes_keeping_every_finished_map(tmp_path):
    reference_dir, folder = tmp_path / "reference", tmp_path / "interrupted"
    reference = run_to_end(ig_args(reference_dir), tmp_path / "reference.log")
    assert reference["complete"] and reference["done"] == IMAGES
    expected = np.load(reference_dir / "maps.npy")

    with Killable(ig_args(folder), tmp_path / "first.log") as child:
        child.wait_for(lambda: done_mask(folder).sum() >= 3 * CHUNK, "three finished chunks")
        child.kill()
    assert_whole(folder)
    done = done_mask(folder)
    assert 3 * CHUNK <= done.sum() < IMAGES, "killed mid-way"
    maps = np.load(folder / "maps.npy")
    assert maps.shape == expected.shape
    np.testing.assert_array_equal(maps[done], expected[done])  # what is flagged done is finished and right

    # mark the finished maps: a resume that recomputed them would overwrite the mark (their CRCs are
    # updated too, else the resume would rightly take the marked maps for damaged ones)
    from kdviz.attribution.igcache import row_sums

    marked = np.load(folder / "maps.npy", mmap_mode="r+")
    marked[done] = np.float16(-1.0)
    marked.flush()
    for sums_file in folder.glob("sums-*-of-*.npy"):
        sums = np.load(sums_file)
        rows = np.flatnonzero(done & (sums != 0))
        sums[rows] = row_sums(marked, rows)
        np.save(sums_file, sums)
    del marked

    out = run_to_end(ig_args(folder), tmp_path / "second.log")
    assert out["complete"] and out["done"] == IMAGES
    assert not leftovers(folder)
    final = np.load(folder / "maps.npy")
    assert (final[done] == np.float16(-1.0)).all(), "finished maps were computed again"
    np.testing.assert_array_equal(
        final[~done], expected[~done]
    )  # the rest: as the uninterrupted run made them


# ----------------------------------------------------------------------------------- ablation study

ARMS = ["baseline", "kd", "ig"]


def ablate_args(name: str) -> list[str]:
    return kdviz(
        "ablate",
        "--preset",
        "digits",
        "--smoke",
        "64",
        "--arms",
        ",".join(ARMS),
        "--seeds",
        "0",
        "--student",
        "mnv2_student_12x",
        "--student-kwargs",
        '{"width_mult": 0.25}',
        "--name",
        name,
        "--json",
    )


def run_states(study: Path) -> list[str]:
    state = read_json(study / "study.json") or {}
    return [r["status"] for r in state.get("runs", [])]


def test_ablation_study_killed_resumes_without_redoing_a_finished_run(tmp_path):
    studies = Path(os.environ["KDVIZ_HOME"]) / "studies"
    reference = run_to_end(ablate_args("uninterrupted"), tmp_path / "reference.log")
    assert reference["status"] == "done" and reference["runs_done"] == len(ARMS)
    study = studies / "interrupted"

    # killed while the second run trains: the first is finished (metrics written), the study file says so
    with Killable(ablate_args("interrupted"), tmp_path / "first.log") as child:
        child.wait_for(lambda: run_states(study)[:2] == ["done", "running"], "second run under way")
        child.kill()
    assert_whole(study)
    assert not leftovers(study)
    first_run = study / "runs" / "baseline-s0"
    finished = (first_run / "metrics.json").read_bytes()
    weights = (first_run / "model.safetensors").read_bytes()

    out = run_to_end(ablate_args("interrupted"), tmp_path / "second.log")
    assert out["status"] == "done" and out["runs_done"] == len(ARMS)
    assert not leftovers(study)
    assert run_states(study) == ["done"] * len(ARMS)
    # the finished run was not redone: its metrics (with their timings) and weights are the same bytes
    assert (first_run / "metrics.json").read_bytes() == finished
    assert (first_run / "model.safetensors").read_bytes() == weights

    # every run ends as in the study that was never interrupted
    for arm in ARMS:
        mine, ref = study / "runs" / f"{arm}-s0", studies / "uninterrupted" / "runs" / f"{arm}-s0"
        ours, theirs = load_file(str(mine / "model.safetensors")), load_file(str(ref / "model.safetensors"))
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), arm
        m, r = read_json(mine / "metrics.json"), read_json(ref / "metrics.json")
        for key in ("test_accuracy", "teacher_agreement", "attribution", "probe_predictions", "epochs"):
            assert m[key] == r[key], (arm, key)
    np.testing.assert_array_equal(
        np.load(study / "igcache" / "maps.npy"), np.load(studies / "uninterrupted" / "igcache" / "maps.npy")
    )
