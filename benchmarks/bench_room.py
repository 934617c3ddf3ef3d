"""A room on one server: ``streamlit run app.py`` and many real browser sessions at once (issue 14).

One real server (a subprocess, its workspace and caches in a temporary folder, the built-in digits
and the shipped digits teacher and student) and headless Chromium sessions, each opening the
Attributions page and uploading its own 640×480 JPEG (a shipped sample photo, shifted a little per
upload so no two uploads are the same image and the cache cannot answer). "Time to maps" runs from
handing the file to the page to the moment the page has finished its script and shows both panels
for that file. What is measured:

- **alone**: one session, uploads one after another: the median time to maps (the reference);
- **crowd**: N sessions (8) upload at once: all served without an error; their median over alone
  (target ≤ 3×);
- **room**: M sessions (30) upload at once: all served; the server's resident memory before, at its
  peak and after (target: growth < 1 GB);
- **training**: one session trains a model on the Models page while another uploads: the median
  over alone (target ≤ 2×);
- **soak**: R attribution requests (1,000) over S concurrent sessions (8), each session uploading
  its next photo as soon as its maps are shown: the server's resident memory along the way (its
  bound: the growth after the first tenth of the requests), open file descriptors and threads
  before and after, and whether the server still answers (its health check and one more upload).

The sessions are websocket clients by default (``tools/ws_session.py``: the front end's protocol,
uploads included, at almost no cost to the server's machine, as a room's browsers are on the
students' laptops); ``--clients chromium`` uses headless Chromium tabs on the server's own cores
instead, as when the issue was filed. Memory, file descriptors and threads are the server
process's, read from ``/proc``.

Run alone: ``.venv/bin/python benchmarks/bench_room.py [--quick] [--only crowd,soak]``; results go
to ``benchmarks/results/room_<clients>[_<scenarios>][_quick].json``. ``--clients chromium`` needs
Debian's chromium (``apt-get install chromium``); without it the benchmark says so and writes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamlit.proto.WidgetStates_pb2 import WidgetState

from benchmarks.common import machine, write_results
from tools.live_app import (
    CHROMIUM,
    CHROMIUM_ARGS,
    IDLE_JS,
    free_port,
    start_server,
    stop_server,
    wait_idle,
)
from tools.ws_session import WsSession

SCENARIOS = ("alone", "crowd", "room", "training", "soak")
#: Targets from the issue: the crowd's median over alone, training's over alone, the room's growth.
CROWD_TARGET, TRAINING_TARGET, ROOM_GROWTH_MB = 3.0, 2.0, 1024.0
UPLOAD_SIZE = (640, 480)
#: 'done' once the script has finished and the page shows both maps for ``name`` (its caption
#: "name: 640×480 JPEG"; the uploader lists the bare name at once, before the script reruns);
#: 'error' on an exception or error box; null meanwhile.
DONE_JS = (
    "(name) => {\n"
    "  const main = document.querySelector('[data-testid=\"stMain\"]');\n"
    "  if (!main) return null;\n"
    '  if (main.querySelector(\'[data-testid="stException"], [data-testid="stAlertContentError"]\'))'
    " return 'error';\n"
    f"  if (!({IDLE_JS})()) return null;\n"
    "  const text = main.innerText;\n"
    "  if (!text.includes(name + ': ')) return null;  // the page's caption, not the uploader's list\n"
    "  return (text.match(/map for class/g) || []).length >= 2 ? 'done' : null;\n"
    "}"
)


# --------------------------------------------------------------------------------- the server
@dataclass
class Proc:
    """The server process as ``/proc`` shows it."""

    pid: int

    def status(self, field_name: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
        raise KeyError(field_name)

    def rss_mb(self) -> float:
        return self.status("VmRSS") / 1024

    def threads(self) -> int:
        return self.status("Threads")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def snapshot(self) -> dict:
        return {"rss MB": round(self.rss_mb(), 1), "threads": self.threads(), "fds": self.fds()}


class ComputeLog:
    """The server's compute scheduler's model calls (``KDVIZ_COMPUTE_LOG``), summed over a span."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def summary(self, since: float, until: float) -> dict:
        import json

        lines = self.path.read_text().splitlines() if self.path.exists() else []
        calls = [
            c for c in map(json.loads, lines) if since <= c["when"] <= until and c["kind"] == "attribution"
        ]
        images = sum(c["size"] for c in calls)
        return {
            "model calls": len(calls),
            "images per call": round(images / len(calls), 2) if calls else 0,
            "most sessions in a call": max((c["sessions"] for c in calls), default=0),
            "compute s": round(sum(c["seconds"] for c in calls), 1),
            "lighter calls": sum(bool(c.get("lighter")) for c in calls),  # chosen as the call started
        }


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=10) as r:
            return r.status == 200
    except OSError:
        return False


# ------------------------------------------------------------------------------- the uploads
class Photos:
    """Distinct 640×480 JPEGs from the shipped sample photos: photo i is sample i mod 8, shifted."""

    def __init__(self, folder: Path) -> None:
        from kdviz.data.samples import load_sample, sample_names

        self.folder = folder
        self.sources = [load_sample(name) for name in sample_names()]
        self.count = 0

    def next(self) -> Path:
        from PIL import Image

        i = self.count
        self.count += 1
        src = Image.fromarray(self.sources[i % len(self.sources)])
        w, h = UPLOAD_SIZE
        big = src.resize((w + 64, h + 48))
        dx, dy = (i * 7) % 64, (i * 5) % 48
        arr = np.asarray(big.crop((dx, dy, dx + w, dy + h))).copy()
        arr[0, 0] = [(i * 37) % 256, (i // 256) % 256, i % 256]  # and never the same bytes twice
        path = self.folder / f"upload-{i:05d}.jpg"
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=90)
        path.write_bytes(buf.getvalue())
        return path


# ------------------------------------------------------------------------------ the sessions
@dataclass
class Session:
    """One session on the Attributions page: its uploads' times and the errors it was shown."""

    name: str = ""
    started: float = 0.0
    times: list[float] = field(default_factory=list)
    errors: int = 0
    error_texts: list[str] = field(default_factory=list)

    def send(self, path: Path) -> None:
        raise NotImplementedError

    def upload(self, path: Path) -> None:
        self.send(path)
        self.name, self.started = path.name, time.perf_counter()

    def state(self) -> str | None:
        """'done' once the page shows both maps of the last upload, 'error' on an error box."""
        raise NotImplementedError

    def error_text(self) -> str:
        raise NotImplementedError


@dataclass
class BrowserSession(Session):
    """A headless Chromium tab (its own context: cookies, Streamlit session)."""

    page: object = None
    context: object = None

    def send(self, path: Path) -> None:
        self.page.set_input_files('[data-testid="stFileUploaderDropzoneInput"]', str(path))  # type: ignore[attr-defined]

    def state(self) -> str | None:
        return self.page.evaluate(DONE_JS, self.name)  # type: ignore[attr-defined]

    def error_text(self) -> str:
        boxes = self.page.locator(  # type: ignore[attr-defined]
            '[data-testid="stException"], [data-testid="stAlertContentError"]'
        )
        return boxes.first.inner_text()[:300] if boxes.count() else "?"


@dataclass
class SocketSession(Session):
    """A websocket client speaking the front end's protocol (:mod:`tools.ws_session`)."""

    ws: WsSession | None = None

    def send(self, path: Path) -> None:
        assert self.ws is not None
        self.ws.upload(path)

    def state(self) -> str | None:
        assert self.ws is not None
        run = self.ws.run
        if run.errors:
            return "error"
        if not run.finished or f"{self.name}: " not in run.text:
            return None
        return "done" if run.text.count("map for class") >= 2 else None

    def error_text(self) -> str:
        assert self.ws is not None
        return "\n".join(self.ws.run.errors)[:300] or ("connection closed" if self.ws.closed else "?")


class Clients:
    """Where the sessions come from: browser tabs or websocket clients."""

    kind = ""

    def open(self, url: str, n: int, timeout_s: float = 300) -> list[Session]:
        """``n`` sessions on the Attributions page, its source set to uploads (through the URL), idle."""
        raise NotImplementedError

    def close(self, sessions: Sequence[Session]) -> None:
        raise NotImplementedError

    def start_training(self, url: str, epochs: int) -> Session:
        """A session that starts a training run on the Models page (the page's default model for
        the data, ``epochs`` epochs: it keeps running while another session uploads)."""
        raise NotImplementedError

    def stop_training(self, trainer: Session) -> bool:
        """Stop the run; whether it was still running."""
        raise NotImplementedError


class BrowserClients(Clients):
    """Headless Chromium tabs on the server's own cores (as when the issue was filed)."""

    kind = "chromium"

    def __init__(self, browser) -> None:
        self.browser = browser

    def _tab(self, url: str):
        context = self.browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.set_default_timeout(120_000)
        page.goto(url)
        return page, context

    def open(self, url: str, n: int, timeout_s: float = 300) -> list[Session]:
        sessions: list[BrowserSession] = []
        for _ in range(n):
            page, context = self._tab(f"{url}/attributions?source=upload")
            sessions.append(BrowserSession(page=page, context=context))
        deadline = time.monotonic() + timeout_s
        for s in sessions:
            wait_idle(s.page, max(5.0, deadline - time.monotonic()), settle_s=0.5)
            s.page.locator('[data-testid="stFileUploaderDropzoneInput"]').wait_for(state="attached")  # type: ignore[attr-defined]
        return list(sessions)

    def close(self, sessions: Sequence[Session]) -> None:
        for s in sessions:
            assert isinstance(s, BrowserSession)
            s.context.close()  # type: ignore[attr-defined]

    def start_training(self, url: str, epochs: int) -> Session:
        page, context = self._tab(f"{url}/models")
        wait_idle(page)
        page.get_by_role("tab", name="Train").click()
        wait_idle(page)
        field_ = page.get_by_label("Epochs", exact=True)
        field_.fill(str(epochs))
        field_.press("Enter")
        wait_idle(page)
        page.get_by_role("button", name="Start training").click()
        page.get_by_role("button", name="Stop training").wait_for(state="visible")
        return BrowserSession(page=page, context=context)

    def stop_training(self, trainer: Session) -> bool:
        assert isinstance(trainer, BrowserSession)
        stop = trainer.page.get_by_role("button", name="Stop training")  # type: ignore[attr-defined]
        still = stop.count() == 1
        if still:
            stop.click()
        return still


class SocketClients(Clients):
    """Websocket clients: a room's browsers run on the students' machines, not on the server's
    cores, and these cost the server's machine almost nothing."""

    kind = "websocket"

    def open(self, url: str, n: int, timeout_s: float = 300) -> list[Session]:
        sessions = [SocketSession(ws=WsSession(url, "attributions", "source=upload")) for _ in range(n)]
        for s in sessions:
            assert s.ws is not None
            s.ws.wait_idle(timeout_s)
        return list(sessions)

    def close(self, sessions: Sequence[Session]) -> None:
        for s in sessions:
            assert isinstance(s, SocketSession) and s.ws is not None
            s.ws.close()

    def start_training(self, url: str, epochs: int) -> Session:
        ws = WsSession(url, "models")
        ws.wait_idle()
        widgets = [
            WidgetState(id=ws.widget_id("Epochs", "number_input"), double_value=float(epochs)),
            WidgetState(id=ws.widget_id("Start training", "button"), trigger_value=True),
        ]
        ws.rerun(widgets)
        if not ws.wait_for(lambda: "Stop training" in ws.run.widgets, 120):
            raise RuntimeError(f"the training job did not start: {ws.run.errors or ws.run.text[-300:]}")
        return SocketSession(ws=ws)

    def stop_training(self, trainer: Session) -> bool:
        assert isinstance(trainer, SocketSession) and trainer.ws is not None
        ws = trainer.ws
        ws.rerun([])
        ws.wait_idle()
        still = "Stop training" in ws.run.widgets
        if still:
            ws.rerun([WidgetState(id=ws.widget_id("Stop training", "button"), trigger_value=True)])
            ws.wait_idle()
        return still


def serve(
    sessions: Sequence[Session],
    photos: Photos,
    per_session: int = 1,
    total: int | None = None,
    timeout_s: float = 600,
    on_sweep: Callable[[int], None] | None = None,
) -> int:
    """Every session uploads a photo, then its next one as soon as its maps are shown, until each
    has done ``per_session`` (or ``total`` uploads were made together); the number not finished
    within ``timeout_s``. ``on_sweep(done)`` runs after every pass over the sessions."""
    goal = total if total is not None else per_session * len(sessions)
    issued = done = 0
    active: set[int] = set()
    for i, s in enumerate(sessions):
        if issued < goal:
            s.upload(photos.next())
            issued += 1
            active.add(i)
    deadline = time.monotonic() + timeout_s
    while active and time.monotonic() < deadline:
        for i in sorted(active):
            s = sessions[i]
            state = s.state()
            if state is None:
                continue
            if state == "done":
                s.times.append(time.perf_counter() - s.started)
            else:
                s.errors += 1
                s.error_texts.append(s.error_text())
            done += 1
            if issued < goal and (total is not None or len(s.times) + s.errors < per_session):
                s.upload(photos.next())
                issued += 1
            else:
                active.discard(i)
        if on_sweep:
            on_sweep(done)
        time.sleep(0.05)
    return len(active)


def times_of(sessions: Sequence[Session]) -> list[float]:
    return [t for s in sessions for t in s.times]


def errors_of(sessions: Sequence[Session]) -> int:
    texts = [t for s in sessions for t in s.error_texts]
    if texts:
        print("errors shown:", *sorted(set(texts)), sep="\n  ", flush=True)
    return sum(s.errors for s in sessions)


# ------------------------------------------------------------------------------- scenarios
def alone(clients: Clients, url: str, photos: Photos, repeats: int) -> tuple[dict, float]:
    (s,) = clients.open(url, 1)
    serve([s], photos, per_session=1)  # warm-up: the first upload loads torch's kernels and the models
    s.times.clear()
    serve([s], photos, per_session=repeats)
    clients.close([s])
    med = statistics.median(s.times) if s.times else float("nan")
    return {
        "scenario": "alone",
        "sessions": 1,
        "uploads": repeats,
        "served": len(s.times),
        "errors": s.errors,
        "median s": round(med, 2),
        "max s": round(max(s.times, default=float("nan")), 2),
    }, med


def at_once(
    clients: Clients, url: str, photos: Photos, proc: Proc, n: int, reference: float, name: str
) -> dict:
    """``n`` sessions upload at the same moment; each one upload."""
    before = proc.snapshot()
    sessions = clients.open(url, n)
    opened = proc.snapshot()
    peak = [opened["rss MB"]]
    unfinished = serve(sessions, photos, per_session=1, on_sweep=lambda done: peak.append(proc.rss_mb()))
    after = proc.snapshot()
    times = times_of(sessions)
    clients.close(sessions)
    med = statistics.median(times) if times else float("nan")
    row = {
        "scenario": name,
        "sessions": n,
        "uploads": n,
        "served": len(times),
        "errors": errors_of(sessions),
        "unfinished": unfinished,
        "median s": round(med, 2),
        "max s": round(max(times, default=float("nan")), 2),
        "over alone": round(med / reference, 2),
        "rss before MB": before["rss MB"],
        "rss peak MB": round(max(peak), 1),
        "rss growth MB": round(max(peak) - before["rss MB"], 1),
        "rss after MB": after["rss MB"],
    }
    if name == "crowd":
        row.update(target=f"{n}/{n} served, ≤ {CROWD_TARGET:g}× alone")
        row["met"] = len(times) == n and med <= CROWD_TARGET * reference
    else:
        row.update(target=f"{n}/{n} served, growth < {ROOM_GROWTH_MB:g} MB")
        row["met"] = len(times) == n and row["rss growth MB"] < ROOM_GROWTH_MB
    return row


def training(clients: Clients, url: str, photos: Photos, repeats: int, reference: float, epochs: int) -> dict:
    trainer = clients.start_training(url, epochs)
    time.sleep(3)  # the job is past its set-up and into its steps
    (s,) = clients.open(url, 1)
    unfinished = serve([s], photos, per_session=repeats)
    still = clients.stop_training(trainer)
    clients.close([s, trainer])
    med = statistics.median(s.times) if s.times else float("nan")
    return {
        "scenario": "training",
        "sessions": 2,
        "uploads": repeats,
        "served": len(s.times),
        "errors": s.errors,
        "unfinished": unfinished,
        "median s": round(med, 2),
        "max s": round(max(s.times, default=float("nan")), 2),
        "over alone": round(med / reference, 2),
        "training ran throughout": still,
        "target": f"≤ {TRAINING_TARGET:g}× alone",
        "met": bool(s.times) and med <= TRAINING_TARGET * reference and still,
    }


def soak(
    clients: Clients, url: str, photos: Photos, proc: Proc, requests: int, n: int, reference: float
) -> dict:
    sessions = clients.open(url, n)
    before = proc.snapshot()
    marks: dict[str, float] = {}
    peak = [before["rss MB"]]

    late: list[float] = []  # after the first tenth: what the soak itself holds, not what it met

    def sweep(done: int) -> None:
        rss = proc.rss_mb()
        peak.append(rss)
        if done >= 0.1 * requests:
            late.append(rss)
        for share in (0.1, 0.5):
            if done >= share * requests and f"{share:g}" not in marks:
                marks[f"{share:g}"] = rss

    t0 = time.perf_counter()
    unfinished = serve(sessions, photos, total=requests, timeout_s=requests * 30, on_sweep=sweep)
    wall = time.perf_counter() - t0
    after = proc.snapshot()
    times = times_of(sessions)
    clients.close(sessions)
    time.sleep(5)  # the server notices the closed sessions
    closed = proc.snapshot()
    # the server still answers: its health check, and a new session's upload
    answers = healthy(url)
    (last,) = clients.open(url, 1)
    serve([last], photos, per_session=1, timeout_s=120)
    answers = answers and len(last.times) == 1
    clients.close([last])
    tenth = marks.get("0.1", before["rss MB"])
    return {
        "scenario": "soak",
        "sessions": n,
        "uploads": requests,
        "served": len(times),
        "errors": errors_of(sessions),
        "unfinished": unfinished,
        "median s": round(statistics.median(times), 2) if times else float("nan"),
        "max s": round(max(times, default=float("nan")), 2),
        "over alone": round(statistics.median(times) / reference, 2) if times else float("nan"),
        "requests/s": round(len(times) / wall, 2),
        "rss before MB": before["rss MB"],
        "rss at 10 % MB": round(tenth, 1),
        "rss at 50 % MB": round(marks.get("0.5", float("nan")), 1),
        "rss peak MB": round(max(peak), 1),
        "rss after MB": after["rss MB"],
        "rss peak after 10 % MB": round(max(late, default=float("nan")), 1),
        "rss growth after 10 % MB": round(max(late, default=tenth) - tenth, 1),
        "threads before": before["threads"],
        "threads after": after["threads"],
        "threads, sessions closed": closed["threads"],
        "fds before": before["fds"],
        "fds after": after["fds"],
        "fds, sessions closed": closed["fds"],
        "answers at the end": answers,
    }


@contextlib.contextmanager
def clients_of(kind: str) -> Iterator[Clients]:
    if kind == "websocket":
        yield SocketClients()
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield BrowserClients(browser)
        finally:
            browser.close()


# ------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="small sizes: 3 at once, 6 in the room, 24 soak requests"
    )
    p.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated, of {', '.join(SCENARIOS)}")
    p.add_argument("--crowd", type=int, help="sessions uploading at once (default 8; quick 3)")
    p.add_argument("--room", type=int, help="sessions in the room (default 30; quick 6)")
    p.add_argument("--soak", type=int, help="soak requests (default 1000; quick 24)")
    p.add_argument("--soak-sessions", type=int, help="concurrent soak sessions (default 8; quick 4)")
    p.add_argument("--repeats", type=int, help="uploads of the lone session (default 5; quick 2)")
    p.add_argument("--data", default="digits", help="the server's default data set (KDVIZ_DEFAULT_DATA)")
    p.add_argument(
        "--clients",
        choices=("websocket", "chromium"),
        default="websocket",
        help="websocket clients (default: a room's browsers are on other machines) or headless "
        "Chromium tabs on the server's own cores",
    )
    args = p.parse_args(argv)
    q = args.quick
    crowd_n = args.crowd or (3 if q else 8)
    room_n = args.room or (6 if q else 30)
    soak_n = args.soak or (24 if q else 1000)
    soak_sessions = args.soak_sessions or (4 if q else 8)
    repeats = args.repeats or (2 if q else 5)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}")
    if args.clients == "chromium" and not CHROMIUM.exists():
        print(f"{CHROMIUM} not found: apt-get install chromium. Nothing measured.")
        return 0
    from kdviz.core.machine import describe

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="kdviz-room-") as tmp:
        folder = Path(tmp)
        (folder / "uploads").mkdir()
        env = {
            **os.environ,
            "KDVIZ_HOME": str(folder / "runs"),
            "KDVIZ_CACHE": str(folder / "cache"),
            "KDVIZ_DEVICE": "cpu",
            "KDVIZ_DEFAULT_DATA": args.data,
            "KDVIZ_COMPUTE_LOG": str(folder / "compute.jsonl"),
        }
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(port, env, folder / "streamlit.log", timeout_s=120)
        proc = Proc(server.pid)
        photos = Photos(folder / "uploads")
        calls = ComputeLog(folder / "compute.jsonl")
        try:
            with clients_of(args.clients) as clients:
                since = time.time()
                row, reference = alone(clients, url, photos, repeats)
                rows.append({**row, **calls.summary(since, time.time())})
                print(rows[-1], flush=True)
                scenarios: dict[str, Callable[[], dict]] = {
                    "crowd": lambda: at_once(clients, url, photos, proc, crowd_n, reference, "crowd"),
                    "room": lambda: at_once(clients, url, photos, proc, room_n, reference, "room"),
                    "training": lambda: training(clients, url, photos, repeats, reference, epochs=500),
                    "soak": lambda: soak(clients, url, photos, proc, soak_n, soak_sessions, reference),
                }
                for name, measure in scenarios.items():
                    if name in only:
                        since = time.time()
                        rows.append({**measure(), **calls.summary(since, time.time())})
                        print(rows[-1], flush=True)
        finally:
            log = (folder / "streamlit.log").read_text(errors="replace")
            stop_server(server)
        tracebacks = log.count("Traceback")
    extra = {
        **machine(),
        **describe(),
        "quick": q,
        "clients": args.clients,
        "server tracebacks": tracebacks,
        "data": args.data,
    }
    picked = (
        "" if set(only) >= set(SCENARIOS) - {"alone"} else "_" + "_".join(o for o in SCENARIOS if o in only)
    )
    write_results(f"room_{args.clients}{picked}" + ("_quick" if q else ""), rows, extra)
    print(f"server tracebacks in its log: {tracebacks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
