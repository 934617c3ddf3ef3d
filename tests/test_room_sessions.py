"""A room following one link at once: a real ``streamlit run app.py`` and websocket sessions that
speak the front end's protocol (``tools/ws_session.py``, the clients of ``benchmarks/bench_room.py``).

On a fresh server Streamlit runs a deep link's page file on its own (a project with ``pages/`` is a
legacy multipage app until ``app.py`` has run once); the page then reruns through ``app.py``. When
several people opened the link at the same moment, only the first was rerun: the others got the
page without its sidebar, hence without models ("Choose at least one model"), until they clicked
something. This test opens the link in several sessions at once and uploads a photo in each.
"""

from __future__ import annotations

import os
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from tools.live_app import free_port, start_server, stop_server  # noqa: E402
from tools.ws_session import WsSession  # noqa: E402

SESSIONS = 4
UPLOADER = "An image of your own (PNG, JPEG, WebP, BMP, GIF, TIFF; any size)"


@pytest.fixture(scope="module")
def fresh_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("room")
    env = {
        **os.environ,
        "KDVIZ_HOME": str(folder / "runs"),
        "KDVIZ_CACHE": str(folder / "cache"),
        "KDVIZ_DEVICE": "cpu",
        "KDVIZ_DEFAULT_DATA": "digits",
    }
    port = free_port()
    server = start_server(port, env, folder / "streamlit.log", timeout_s=120)
    try:
        yield f"http://127.0.0.1:{port}", folder
    finally:
        stop_server(server)


def test_a_room_opening_one_link_at_once_all_get_the_page_with_its_models(fresh_server):
    url, folder = fresh_server
    with ThreadPoolExecutor(SESSIONS) as pool:  # the same moment, on a server nobody opened yet
        sessions = list(pool.map(lambda _: WsSession(url, "attributions", "source=upload"), range(SESSIONS)))
    try:
        for s in sessions:
            assert s.wait_for(lambda s=s: s.run.finished and UPLOADER in s.widgets, 120), s.run.text
            assert "Choose at least one model" not in s.run.text
            assert not s.run.errors
        # and each one's upload gets both maps
        photo = folder / "photo.png"
        from PIL import Image

        Image.new("RGB", (64, 48), (200, 40, 40)).save(photo)
        for i, s in enumerate(sessions):
            named = folder / f"photo-{i}.png"
            named.write_bytes(photo.read_bytes())
            s.upload(named)
        for i, s in enumerate(sessions):
            assert s.wait_for(lambda s=s, i=i: s.run.finished and f"photo-{i}.png: " in s.run.text, 180), (
                s.run.text[-500:]
            )
            assert s.run.text.count("map for class") == 2, s.run.text[-500:]
            assert not s.run.errors
    finally:
        for s in sessions:
            s.close()
    assert "Traceback" not in (folder / "streamlit.log").read_text(errors="replace")


def test_the_server_started_from_the_project_skips_streamlits_collection_after_every_run():
    """A full collection after each of a room's script runs held Python's lock for 0.1-0.3 s and
    stalled everyone's maps (README, "Serving a room"); Streamlit reads this file from the folder
    the server starts in."""
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["runner"]["postScriptGC"] is False
