"""The pages under faults (issue 14 §1 and §3), driven headless with Streamlit's AppTest.

- a run another process is writing: the Models page refuses to "resume" it, names the holder and
  trains under a free name instead;
- a read-only workspace and cache folder: every page opens and the sidebar says what cannot be saved;
- the data folder disappears while a page is open: a message, not a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from kdviz.core.jobs import MANAGER
from kdviz.core.lock import LOCK_FILE

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"


def open_app() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=240).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def wait_for_jobs(timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while MANAGER.running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not MANAGER.running(), "training did not finish in time"


HOLDER = """
import sys, time
from kdviz.core.lock import WriterLock
WriterLock(sys.argv[1], "python -m kdviz train --name busy --seed 7").acquire()
print("holding", flush=True)
time.sleep(300)
"""


def test_models_page_refuses_a_run_another_process_writes_and_offers_a_free_name():
    home = Path(os.environ["KDVIZ_HOME"])
    busy = home / "busy"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(busy)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        at = open_app()
        at.switch_page("pages/models.py").run()
        at.radio(key="train_role").set_value("student").run()
        at.selectbox(key="train_arch_student_default").set_value("mnv2_student_12x").run()
        at.select_slider(key="train_width_student").set_value(0.25).run()
        at.text_input(key="train_name_student_mnv2_student_12x").set_value("busy").run()
        at.number_input(key="train_epochs").set_value(1).run()
        at.number_input(key="train_limit").set_value(64).run()
        at.button(key="train_start").click().run()
        assert not at.exception
        errors = [e.value for e in at.error]
        assert len(errors) == 1, errors
        assert "`busy` is being written by" in errors[0] and f"process {holder.pid}" in errors[0]
        assert "python -m kdviz train --name busy --seed 7" in errors[0]
        assert not MANAGER.running(), "nothing was started on the held run"
        assert sorted(p.name for p in busy.iterdir()) == [LOCK_FILE], "the held run is untouched"

        at.button(key="train_refused_rename").click().run()
        assert not at.exception and not at.error
        wait_for_jobs()
        at.run()
        at.run()
        assert not at.exception
        card = json.loads((home / "busy-2" / "card.json").read_text())
        assert card["name"] == "busy-2" and card["metrics"]["complete"]
        assert sorted(p.name for p in busy.iterdir()) == [LOCK_FILE]
    finally:
        holder.kill()
        holder.wait()


def test_runs_tab_refuses_to_delete_a_run_being_written():
    home = Path(os.environ["KDVIZ_HOME"])
    (home / "busy").mkdir(parents=True)
    (home / "busy" / "history.json").write_text("[]")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(home / "busy")], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        at = open_app()
        at.switch_page("pages/models.py").run()
        at.selectbox(key="runs_pick").set_value("busy").run()
        at.checkbox(key="runs_sure").check().run()
        at.button(key="runs_delete").click().run()
        assert not at.exception
        assert any("is being written by" in e.value for e in at.error), [e.value for e in at.error]
        assert (home / "busy" / "history.json").is_file()
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture
def read_only_folders(tmp_path, monkeypatch):
    """KDVIZ_HOME and KDVIZ_CACHE on a read-only file system (a tmpfs remounted read-only)."""
    fs = tmp_path / "ro"
    fs.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(fs)], capture_output=True
    ).returncode:
        if os.geteuid() == 0:
            pytest.skip("cannot mount a file system here, and root ignores a read-only mode")
        (fs / "runs").mkdir()
        (fs / "cache").mkdir()
        for d in (fs / "runs", fs / "cache"):
            d.chmod(0o555)
        mounted = False
    else:
        (fs / "runs").mkdir()
        (fs / "cache").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
        mounted = True
    monkeypatch.setenv("KDVIZ_HOME", str(fs / "runs"))
    monkeypatch.setenv("KDVIZ_CACHE", str(fs / "cache"))
    try:
        yield fs
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(fs)], check=False)


@pytest.mark.slow
def test_every_page_opens_on_a_read_only_workspace_and_cache_and_says_what_it_cannot_save(read_only_folders):
    at = open_app()
    for page in sorted((ROOT / "pages").glob("*.py")):
        at.switch_page(f"pages/{page.name}").run()
        assert not at.exception, (page.name, [e.value for e in at.exception])
        assert at.title, f"{page.name} shows no title"
        notes = [w.value for w in at.sidebar.warning]
        assert any("workspace folder" in n and "cannot be written" in n and "training" in n for n in notes)
        assert any("cache folder" in n and "not kept" in n for n in notes), notes
    # training on it fails with the reason, not a traceback
    at.switch_page("pages/models.py").run()
    at.radio(key="train_role").set_value("student").run()
    at.selectbox(key="train_arch_student_default").set_value("mnv2_student_12x").run()
    at.number_input(key="train_epochs").set_value(1).run()
    at.button(key="train_start").click().run()
    wait_for_jobs()
    at.run()
    assert not at.exception
    failed = [e.value for e in at.error]
    assert any("Training failed" in e and "cannot save" in e and "read-only" in e for e in failed), failed


def _tiny_cifar(root: Path) -> Path:
    from PIL import Image

    from kdviz.data.cifar import CLASSES

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in CLASSES:
            d = root / "cifar10" / split / name
            d.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def test_the_data_folder_disappearing_while_pages_are_open_gives_a_message(tmp_path, monkeypatch):
    monkeypatch.delenv("KDVIZ_DEFAULT_DATA", raising=False)  # the app opens on CIFAR-10
    monkeypatch.setenv("KDVIZ_CACHE", str(tmp_path / "cache"))
    data = _tiny_cifar(tmp_path / "data")
    monkeypatch.setenv("KDVIZ_DATA", str(data))
    at = open_app()
    assert not at.error, [e.value for e in at.error]
    pages = ("overview", "attributions", "compare", "lesson")
    at.switch_page("pages/attributions.py").run()
    assert not at.exception and not at.error
    assert not any("are not under" in i.value for i in at.sidebar.info), "the data set was found"
    shutil.rmtree(data / "cifar10")  # gone while the page is open
    for name in pages:
        at.switch_page(f"pages/{name}.py").run()
        assert not at.exception, (name, [e.value for e in at.exception])
        assert any("are not under" in i.value for i in at.sidebar.info), name
