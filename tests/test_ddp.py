"""``torchrun --nproc_per_node=2 -m kdviz distill``: DistributedDataParallel with gloo on the CPU, on a
tiny slice of the built-in digits; and the single-process command's contract."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kdviz.cli import main
from kdviz.models.checkpoints import CARD, RESUME, WEIGHTS, load_model
from kdviz.training.loop import HISTORY

ROOT = Path(__file__).resolve().parents[1]
STUDENT = ["--arch", "mnv2_student_4x_fast", "--arch-kwargs", '{"width_mult": 0.5}']
TINY = [
    "--data",
    "digits",
    "--subset",
    "64",
    "--ig-steps",
    "2",
    "--epochs",
    "2",
    "--batch-size",
    "16",
    "--eval-limit",
    "40",
    "--no-flip",
]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(tmp_path: Path) -> dict:
    return {
        **os.environ,
        "KDVIZ_HOME": str(tmp_path / "home"),
        "KDVIZ_CACHE": str(tmp_path / "cache"),
        "KDVIZ_DEVICE": "cpu",
        "OMP_NUM_THREADS": "1",
    }


@pytest.mark.slow
def test_two_processes_train_one_student_and_only_rank_0_writes(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        "--master_addr=127.0.0.1",
        "-m",
        "kdviz",
        "distill",
        "--teacher",
        "digits_teacher",
        *STUDENT,
        *TINY,
        "--arm",
        "kd+ig",
        "--name",
        "ddp",
        "--json",
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers: nothing is left running
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun did not finish in 300 s: {stderr[-2000:]}")
    assert proc.returncode == 0, stderr[-3000:]
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, stdout  # one report, from rank 0
    out = json.loads(lines[0])
    assert out["world_size"] == 2 and out["epochs_done"] == 2 and not out["stopped"]
    a, b = out["replica_checksums"]
    assert a == b  # gradients were averaged: both replicas hold the same weights
    run = tmp_path / "home" / "ddp"
    assert sorted(p.name for p in run.iterdir()) == sorted([CARD, HISTORY, RESUME, WEIGHTS])  # no stray files
    card = load_model(run).card
    assert card.train_config["world_size"] == 2 and card.train_config["arm"] == "kd+ig"
    assert card.metrics["epochs_done"] == 2 and card.metrics["complete"]
    weights_sum = sum(float(p.detach().double().sum()) for p in load_model(run).model.parameters())
    assert weights_sum == pytest.approx(a, rel=1e-9)  # what rank 0 wrote is what both ranks hold
    # the teacher's IG cache was made on the way, each rank taking every other image
    cache = Path(out["ig_cache"])
    assert {p.name for p in cache.glob("done-*")} == {"done-0-of-2.npy", "done-1-of-2.npy"}
    history = json.loads((run / HISTORY).read_text())
    assert [h["epoch"] for h in history] == [1, 2]


@pytest.fixture
def one_thread():
    """The busy 2-core machines run these small models faster on one thread than on two."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_distill_command_in_one_process(tmp_path, monkeypatch, capsys, one_thread):
    for key, value in _env(tmp_path).items():
        monkeypatch.setenv(key, value)
    code = main(
        [
            "distill",
            "--teacher",
            "digits_teacher",
            *STUDENT,
            *TINY,
            "--epochs",
            "1",
            "--arm",
            "kd",
            "--alpha",
            "0.7",
            "-T",
            "3",
            "--name",
            "one",
            "--json",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (
        out["world_size"] == 1 and out["arm"] == "kd" and out["ig_cache"] is None and out["epochs_done"] == 1
    )
    card = load_model(tmp_path / "home" / "one").card
    assert (card.train_config["alpha"], card.train_config["temperature"], card.train_config["subset"]) == (
        0.7,
        3.0,
        64,
    )
    assert card.teacher.endswith("digits_teacher")
    # the same command again resumes the finished run: nothing is trained
    assert (
        main(
            [
                "distill",
                "--teacher",
                "digits_teacher",
                *STUDENT,
                *TINY,
                "--epochs",
                "1",
                "--arm",
                "kd",
                "--alpha",
                "0.7",
                "-T",
                "3",
                "--name",
                "one",
                "--json",
            ]
        )
        == 0
    )
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["resumed_from"] == 1 and again["epochs_done"] == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--teacher", "no-such-teacher"], "no such file, run or asset: no-such-teacher"),
        (["--teacher", "digits_teacher", "--overlay-p", "1.5"], "overlay probability p must lie in [0, 1]"),
        (["--teacher", "digits_teacher", "--arch", "resnet999"], "resnet999"),
    ],
)
def test_distill_mistakes_are_one_line(tmp_path, monkeypatch, capsys, args, message):
    for key, value in _env(tmp_path).items():
        monkeypatch.setenv(key, value)
    assert main(["distill", *args, "--name", "bad", "--subset", "32", "--epochs", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kdviz: error:") and message in err[0], err
