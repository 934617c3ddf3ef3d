"""Shared test set-up: every test gets its own empty workspace; real data is found or skipped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CIFAR10 = SHARED_DATA / "cifar10"
PRETRAINED = SHARED_DATA / "pretrained"


def pretrained(arch: str) -> Path:
    """The pretrained file of ``arch`` in ../shared/data (the registry knows its name)."""
    from kdviz.models import get_spec

    name = get_spec(arch).pretrained_file
    assert name is not None, f"{arch} has no pretrained file"
    return PRETRAINED / name


def require_shared(path: Path = CIFAR10) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not found: real-data tests need ../shared/data beside the project (see README)")
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module of training runs, restored afterwards.

    On the 2-core machines, two OpenMP threads competing with other busy processes made small
    training runs 10-20x slower (1.5 s became 25-35 s); one thread costs little when idle.
    Modules take it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _isolated_workspace(tmp_path_factory, monkeypatch):
    """Runs go to a fresh folder, never to ./runs; the decode cache is shared (it only saves time)."""
    monkeypatch.setenv("KDVIZ_HOME", str(tmp_path_factory.mktemp("runs")))
    monkeypatch.setenv("KDVIZ_DEVICE", "cpu")
    # the app opens on CIFAR-10; most page tests were written for the small built-in set, which
    # loads in a second (tests of the CIFAR-10 default remove this)
    monkeypatch.setenv("KDVIZ_DEFAULT_DATA", "digits")
    yield


@pytest.fixture(autouse=True)
def _apptest_runs_app_py_every_time(monkeypatch):
    """Make every AppTest rerun go through ``app.py``, as the real server does.

    ``streamlit run app.py`` sees ``st.navigation`` and switches the legacy ``pages/`` folder mode
    off for good. AppTest (Streamlit 1.67) turns it back on before each run because ``pages/``
    exists, so every rerun after the first ran the page file alone: no sidebar, no ``app.py``.
    Tests would then check a page the real app never shows. kdviz always navigates with
    ``st.navigation``, so the legacy mode is simply kept off.
    """
    from streamlit.runtime.pages_manager import PagesManager

    original_init = PagesManager.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: real-data or long tests (run by default; deselect with -m 'not slow')"
    )
    config.addinivalue_line("markers", "browser: drives the running app in headless Chromium")
    os.environ.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
