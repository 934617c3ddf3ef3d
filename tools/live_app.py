"""The dashboard as a real server driven by headless Chromium: what the browser test, the screenshot
tool and the many-sessions benchmark share.

``start_server`` runs ``streamlit run app.py`` on a port and waits for its health check;
``stop_server`` ends it (its whole process group); ``wait_idle`` waits until a page's script has
finished and its content stands; ``open_page`` clicks a page's link in the sidebar. Chromium is
Debian's (``/usr/bin/chromium``): Playwright's own browser download is never used.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium's own connections are refused on the machines
# this runs on, and it stalls; the app itself is served on 127.0.0.1.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: True when the script has finished, nothing spins and the main area shows content.
IDLE_JS = """() => {
    const app = document.querySelector('[data-testid="stApp"]');
    if (!app) return false;
    const state = app.getAttribute('data-test-script-state');
    if (state === 'running' || state === 'initial' || state === 'rerunRequested'
        || state === null) return false;
    if (document.querySelector('[data-testid="stStatusWidget"]')) return false;  // Running... / Connecting
    if (document.querySelector('[data-testid="stSpinner"], [data-testid="stSkeleton"]')) return false;
    const main = document.querySelector('[data-testid="stMainBlockContainer"]');
    return !!main && main.querySelectorAll('[data-testid="stElementContainer"]').length > 0;
}"""
NAV_LINKS = '[data-testid="stSidebarNav"] a[data-testid="stSidebarNavLink"]'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    port: int, env: dict[str, str], logfile: Path, timeout_s: float = 60, extra_args: Sequence[str] = ()
) -> subprocess.Popen:
    """``streamlit run app.py`` on 127.0.0.1:``port`` in its own process group, once it answers its
    health check; RuntimeError (with the log's end) when it exits or stays silent."""
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "app.py",
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--browser.gatherUsageStats",
        "false",
        # others may edit the sources while this runs: no watcher, no "source changed" prompt
        "--server.fileWatcherType",
        "none",
        *extra_args,
    ]
    with open(logfile, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"streamlit exited with {proc.returncode} before serving:\n{logfile.read_text()[-4000:]}"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_server(proc)
            raise RuntimeError(
                f"streamlit did not answer on port {port} within {timeout_s} s:\n"
                f"{logfile.read_text()[-4000:]}"
            )
        time.sleep(0.25)


def stop_server(proc: subprocess.Popen, timeout_s: float = 15) -> None:
    """Terminate the server; kill its process group if it does not end in ``timeout_s``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout_s)


def wait_idle(page, timeout_s: float = 120, settle_s: float = 1.0) -> None:
    """Wait until the script has finished running and the page shows content, and stays so for
    ``settle_s`` (a rerun that a click asked for may start a moment later)."""
    deadline = time.monotonic() + timeout_s
    idle_since = None
    while True:
        if page.evaluate(IDLE_JS):
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= settle_s:
                return
        else:
            idle_since = None
        if time.monotonic() > deadline:
            state = page.locator('[data-testid="stApp"]').get_attribute("data-test-script-state")
            raise AssertionError(
                f"the app did not finish running within {timeout_s} s (script state {state!r})"
            )
        page.wait_for_timeout(150)


def nav_titles(page) -> list[str]:
    """The titles of the sidebar's page links, without their icons."""
    links = page.locator(NAV_LINKS)
    return [
        links.nth(i).locator('[data-testid="stMarkdownContainer"]').inner_text().strip()
        for i in range(links.count())
    ]


def open_page(page, title: str, timeout_s: float = 120) -> None:
    """Click the sidebar link of page ``title`` and wait until it has run (nothing if it is open)."""
    titles = nav_titles(page)
    if title not in titles:
        raise LookupError(f"no page {title!r} in the sidebar; there are: {', '.join(titles)}")
    link = page.locator(NAV_LINKS).nth(titles.index(title))
    if link.get_attribute("aria-current") == "page":
        return
    href = link.get_attribute("href")
    link.click()
    page.wait_for_url(href)
    wait_idle(page, timeout_s)
