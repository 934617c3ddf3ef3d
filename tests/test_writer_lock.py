"""One writer per folder (issue 14 §1): the lock itself, and two real ``python -m kdviz train`` processes.

The unit tests take the lock in this process and in threads; the process tests run the real command,
freeze the first writer with SIGSTOP while the second one tries (so no test depends on how fast the
machine is), and kill a holder with SIGKILL to check that its stale lock does not stop a resume.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_reliability_kill import train_args

from kdviz.core import lock as lockmod
from kdviz.core.lock import LOCK_FILE, Holder, LockHeld, WriterLock, live_holder, read_holder

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 300


def _fake_lock(folder: Path, **fields) -> Path:
    """A lock file as another process would have written it."""
    obj = {
        "pid": os.getpid(),
        "host": lockmod.socket.gethostname(),
        "process_start": lockmod.process_start(os.getpid()),
        "since": time.time() - 60,
        "description": "python -m kdviz train --name x",
        "token": "someone-else",
        "thread": 1,
        **fields,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_FILE).write_text(json.dumps(obj))
    return folder / LOCK_FILE


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------------------ in one process


def test_the_lock_file_names_the_holder_and_goes_with_the_block(tmp_path):
    with WriterLock(tmp_path / "run", "training run") as held:
        holder = read_holder(tmp_path / "run")
        assert holder is not None and holder.token == held.holder.token
        assert holder.pid == os.getpid() and holder.host == lockmod.socket.gethostname()
        assert holder.description == "training run"
        assert holder.process_start == lockmod.process_start(os.getpid())
        assert live_holder(tmp_path / "run") == holder
    assert not (tmp_path / "run" / LOCK_FILE).exists()
    assert live_holder(tmp_path / "run") is None
    assert not list((tmp_path / "run").iterdir()), "no temporary file is left beside the lock"


def test_the_same_thread_may_take_its_lock_again_another_thread_is_refused(tmp_path):
    folder = tmp_path / "run"
    refused: list[BaseException] = []
    with WriterLock(folder, "page: training run"):
        with WriterLock(folder, "nested"):  # train_run takes it, then train does
            pass
        assert (folder / LOCK_FILE).exists(), "the inner release keeps the outer lock"

        def other_session() -> None:
            try:
                with WriterLock(folder, "another session"):
                    pass
            except LockHeld as exc:
                refused.append(exc)

        t = threading.Thread(target=other_session)
        t.start()
        t.join()
    assert len(refused) == 1
    assert "page: training run" in str(refused[0]) and str(os.getpid()) in str(refused[0])
    assert "\n" not in str(refused[0]), "one line for the command line"


def test_a_lock_whose_process_is_dead_is_stale_and_broken(tmp_path):
    folder = tmp_path / "run"
    _fake_lock(folder, pid=_dead_pid())
    assert live_holder(folder) is None
    with WriterLock(folder, "the resume") as held:
        assert read_holder(folder).token == held.holder.token


def test_a_reused_process_id_is_not_taken_for_the_holder(tmp_path):
    folder = tmp_path / "run"
    if lockmod.process_start(os.getpid()) is None:
        pytest.skip("no /proc here: a reused process id cannot be told apart")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # alive, but not the process that took the lock (another start time)
        _fake_lock(folder, pid=sleeper.pid, process_start="1")
        assert live_holder(folder) is None
        with WriterLock(folder, "the resume"):
            pass
        _fake_lock(folder, pid=sleeper.pid, process_start=lockmod.process_start(sleeper.pid))
        with pytest.raises(LockHeld, match=f"process {sleeper.pid}"):
            WriterLock(folder).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_lock_from_another_host_is_never_broken(tmp_path):
    folder = tmp_path / "run"
    path = _fake_lock(folder, host="lab-server-7", pid=_dead_pid())
    before = path.read_text()
    with pytest.raises(LockHeld) as info:
        WriterLock(folder).acquire()
    message = str(info.value)
    assert "lab-server-7" in message and "another host" in message and str(path) in message
    assert path.read_text() == before, "left as it was"


def test_a_lock_this_process_lost_track_of_is_stale(tmp_path):
    folder = tmp_path / "run"
    _fake_lock(folder)  # our pid and start time, but a token this process does not hold
    with WriterLock(folder, "me again"):
        assert read_holder(folder).description == "me again"


def test_an_unreadable_lock_file_is_stale(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_FILE).write_bytes(b"\x00garbage")
    with WriterLock(folder):
        assert read_holder(folder) is not None


def test_two_breakers_of_one_stale_lock_leave_one_holder(tmp_path):
    folder = tmp_path / "run"
    _fake_lock(folder, pid=_dead_pid())
    barrier, taken, refused = threading.Barrier(8), [], []

    def writer(i: int) -> None:
        barrier.wait()
        try:
            lock = WriterLock(folder, f"writer {i}").acquire()
            taken.append(lock)
        except LockHeld:
            refused.append(i)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(taken) == 1 and len(refused) == 7
        assert read_holder(folder).token == taken[0].holder.token
    finally:
        for lock in taken:
            lock.release()


def test_a_lock_just_linked_by_another_thread_is_not_taken_for_stale(tmp_path, monkeypatch):
    """The window between a thread's link and its entry in the held table: another thread that reads
    the fresh lock then (our pid, a token not held yet) must be refused, not break it (CI caught two
    holders when eight threads raced for one stale lock)."""
    folder = tmp_path / "run"
    linked, real_link = threading.Event(), lockmod._link_new

    def slow_link(path, text):
        taken = real_link(path, text)
        if taken and threading.current_thread().name == "first":
            linked.set()
            time.sleep(0.3)  # the other thread looks at the lock file now
        return taken

    monkeypatch.setattr(lockmod, "_link_new", slow_link)
    taken: list[WriterLock] = []
    first = threading.Thread(target=lambda: taken.append(WriterLock(folder, "first").acquire()), name="first")
    first.start()
    assert linked.wait(10)
    try:
        with pytest.raises(LockHeld, match="first"):
            WriterLock(folder, "second").acquire()
    finally:
        first.join()
        for lock in taken:
            lock.release()
    assert taken and not (folder / LOCK_FILE).exists()


def test_a_lock_still_held_at_a_normal_exit_is_released(tmp_path):
    code = (
        "import sys; from kdviz.core.lock import WriterLock; WriterLock(sys.argv[1]).acquire(); sys.exit(3)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], cwd=ROOT, timeout=120)
    assert done.returncode == 3
    assert (tmp_path / "run").is_dir() and not (tmp_path / "run" / LOCK_FILE).exists()


def test_holder_json_round_trip():
    h = Holder(1, "h", "5", 0.0, "d", "t", 2)
    assert Holder.from_json(json.dumps(h.__dict__)) == h


def test_a_run_being_written_cannot_be_renamed_or_deleted(tmp_path):
    from kdviz.training.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    ws.create("busy")
    with WriterLock(ws.path("busy"), "python -m kdviz train --name busy"):
        assert ws.writer("busy") is not None
        t_errors: list[BaseException] = []

        def other() -> None:  # another session of the server
            for action in (lambda: ws.rename("busy", "calm"), lambda: ws.delete("busy")):
                try:
                    action()
                except LockHeld as exc:
                    t_errors.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert len(t_errors) == 2 and ws.exists("busy")
    assert ws.writer("busy") is None
    ws.rename("busy", "calm")
    assert ws.exists("calm")


def test_a_held_ig_cache_and_study_refuse_a_second_writer(tmp_path):
    from kdviz.experiments.ablation import run_study
    from kdviz.experiments.hpo import run_search

    for folder, start in (
        (tmp_path / "study", lambda f: run_study(f)),
        (tmp_path / "search", lambda f: run_search(f)),
    ):
        _fake_lock(folder, pid=os.getppid(), process_start=lockmod.process_start(os.getppid()))
        with pytest.raises(LockHeld, match="python -m kdviz train"):
            start(folder)


@pytest.mark.parametrize(
    "command",
    [
        ["ablate", "--preset", "digits", "--out", "{folder}"],
        ["hpo", "--preset", "digits", "--out", "{folder}"],
        ["ig-precompute", "--weights", "digits_teacher", "--data", "digits", "--out", "{folder}"],
        ["train", "--data", "digits", "--name", "held"],
        ["distill", "--teacher", "digits_teacher", "--name", "held"],
    ],
    ids=lambda c: c[0],
)
def test_every_writing_command_refuses_a_held_folder_in_one_line(tmp_path, capsys, command):
    from kdviz.cli.main import main

    folder = tmp_path / "held" if "{folder}" in command else Path(os.environ["KDVIZ_HOME"]) / "held"
    _fake_lock(folder, pid=os.getppid(), process_start=lockmod.process_start(os.getppid()))
    before = sorted(folder.iterdir())
    assert main([c.replace("{folder}", str(folder)) for c in command]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kdviz: error:"), err
    assert f"process {os.getppid()}" in err[0] and "python -m kdviz train --name x" in err[0]
    assert sorted(folder.iterdir()) == before, "nothing written"


# ------------------------------------------------------------------------------ two real processes


def _train(name: str, seed: int, epochs: int) -> list[str]:
    return train_args(name, seed=seed, epochs=epochs)


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _start(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            args, cwd=ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _wait_for(proc: subprocess.Popen, condition, what: str, log: Path) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"ended (exit {proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {RUN_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.02)


def _epochs(run: Path) -> int:
    try:
        return len(json.loads((run / "history.json").read_text()))
    except (OSError, ValueError):
        return 0


@pytest.mark.slow
def test_two_train_commands_on_one_name_the_second_is_refused_and_the_first_kept(tmp_path):
    run = Path(os.environ["KDVIZ_HOME"]) / "same"
    first = _start(_train("same", 0, 3), tmp_path / "first.log")
    try:
        _wait_for(first, lambda: _epochs(run) >= 1, "the first epoch", tmp_path / "first.log")
        holder = read_holder(run)
        assert holder is not None and holder.pid == first.pid
        assert "train" in holder.description and "--name same" in holder.description
        os.killpg(first.pid, signal.SIGSTOP)  # the first writer is frozen, alive, holding the lock
        try:
            second = subprocess.run(  # without --json: the refusal comes before any progress bar
                _train("same", 1, 3)[:-1],
                cwd=ROOT,
                env=_env(),
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT_S,
            )
        finally:
            os.killpg(first.pid, signal.SIGCONT)
        assert second.returncode != 0 and second.stdout == ""
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert lines[0].startswith("kdviz: error:") and str(run) in lines[0]
        assert f"process {first.pid}" in lines[0] and "--name same" in lines[0] and "--seed 0" in lines[0]
        out, _ = first.communicate(timeout=RUN_TIMEOUT_S)
        assert first.returncode == 0, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    result = json.loads((tmp_path / "first.log").read_text().strip().splitlines()[-1])
    card = json.loads((run / "card.json").read_text())
    assert card["train_config"]["seed"] == 0, "the run folder holds the first writer's run"
    assert card["metrics"]["complete"] and _epochs(run) == 3
    assert card["metrics"]["test_accuracy"] == pytest.approx(result["test_accuracy"])
    assert not (run / LOCK_FILE).exists(), "released when the first writer ended"


@pytest.mark.slow
def test_a_holder_killed_with_sigkill_leaves_a_stale_lock_and_the_resume_goes_on(tmp_path):
    run = Path(os.environ["KDVIZ_HOME"]) / "killed"
    first = _start(_train("killed", 0, 4), tmp_path / "first.log")
    try:
        _wait_for(first, lambda: _epochs(run) >= 1, "the first epoch", tmp_path / "first.log")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    stale = read_holder(run)
    assert stale is not None and stale.pid == first.pid, "kill -9 ran no clean-up"
    assert live_holder(run) is None, "its holder is dead: the lock is stale"
    done = subprocess.run(
        _train("killed", 0, 4), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["resumed_from"] >= 1 and out["epochs_done"] == 4
    assert not (run / LOCK_FILE).exists()
