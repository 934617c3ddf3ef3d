"""Shared test set-up: every test gets its own empty workspace; real data is found or skipped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CIFAR10 = SHARED_DATA / "cifar10"
PRETRAINED = SHARED_DATA / "pretrained"


def require_shared(path: Path = CIFAR10) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not found: real-data tests need ../shared/data beside the project (see README)")
    return path


@pytest.fixture(autouse=True)
def _isolated_workspace(tmp_path_factory, monkeypatch):
    """Runs go to a fresh folder, never to ./runs; the decode cache is shared (it only saves time)."""
    monkeypatch.setenv("KDVIZ_HOME", str(tmp_path_factory.mktemp("runs")))
    monkeypatch.setenv("KDVIZ_DEVICE", "cpu")
    yield


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: real-data or long tests (run by default; deselect with -m 'not slow')")
    config.addinivalue_line("markers", "browser: drives the running app in headless Chromium")
    os.environ.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
