"""A Streamlit session without a browser: the websocket protocol a browser tab speaks, for benchmarks.

A classroom's browsers run on the students' laptops, not on the server. Driving a many-sessions
benchmark with headless Chromium on the server's own two cores measures the renderers as much as
the server (eight tabs of Streamlit's front end keep both cores busy). :class:`WsSession` is the
light client the room benchmark uses instead: it opens the page over Streamlit's websocket
(``/_stcore/stream``, with the XSRF cookie of the health check, as the front end does), reruns the
script with widget values, uploads files the way the front end does (a ``FileURLsRequest``, a
multipart PUT to the URL the server gives, then a rerun carrying the uploader's new state) and
reads what each script run draws in the main area: its text, error boxes and exceptions, and
when the run has finished.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests
from streamlit.proto.Alert_pb2 import Alert
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState
from streamlit.proto.Common_pb2 import FileUploaderState, FileURLsRequest, UploadedFileInfo
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState, WidgetStates
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

XSRF_COOKIE = "_streamlit_xsrf"
MAIN = 0  # a delta path's first index: 0 the main area, 1 the sidebar


@dataclass
class ScriptRun:
    """What one script run drew in the main area, as far as the benchmark needs it."""

    texts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    widgets: dict[str, tuple[str, str]] = field(default_factory=dict)  # label -> (kind, id)
    finished: bool = False

    @property
    def text(self) -> str:
        return "\n".join(self.texts)


def _element_text(element) -> tuple[str, str | None]:
    """The element's visible text, and an error's text when it is an error box or an exception."""
    kind = element.WhichOneof("type")
    if kind == "markdown":
        return element.markdown.body, None
    if kind == "heading":
        return element.heading.body, None
    if kind == "alert":
        body = element.alert.body
        return body, body if element.alert.format == Alert.ERROR else None
    if kind == "exception":
        text = f"{element.exception.type}: {element.exception.message}"
        return text, text
    if kind == "imgs":
        return "\n".join(img.caption for img in element.imgs.imgs), None
    if kind == "progress":
        return element.progress.text, None
    return "", None


def _widget(element) -> tuple[str, str, str] | None:
    """(label, kind, widget id) of a widget element, or None."""
    kind = element.WhichOneof("type")
    if kind is None:
        return None
    proto = getattr(element, kind)
    if hasattr(proto, "id") and hasattr(proto, "label") and proto.id:
        return proto.label, kind, proto.id
    return None


class WsSession:
    """One session of ``url``'s app on ``page`` (its URL path), as one browser tab would hold it."""

    def __init__(self, url: str, page: str, query: str = "", timeout_s: float = 120) -> None:
        self.url, self.page, self.query, self.timeout_s = url.rstrip("/"), page, query, timeout_s
        self.http = requests.Session()
        # the front end's first call: the health check, which also sets the XSRF cookie
        self.http.get(f"{self.url}/_stcore/health", timeout=timeout_s).raise_for_status()
        self.xsrf = self.http.cookies.get(XSRF_COOKIE)
        protocols = ["streamlit", self.xsrf] if self.xsrf else ["streamlit"]
        cookie = f"{XSRF_COOKIE}={self.xsrf}" if self.xsrf else None
        self.ws = connect(
            self.url.replace("http", "ws", 1) + "/_stcore/stream",
            subprotocols=protocols,  # type: ignore[arg-type]
            origin=self.url,  # type: ignore[arg-type]
            additional_headers={"Cookie": cookie} if cookie else None,
            max_size=None,
            open_timeout=timeout_s,
        )
        self.session_id = ""
        self.page_hash = ""
        self.run = ScriptRun()
        self.widgets: dict[str, tuple[str, str]] = {}  # every widget seen, by label (ids are stable)
        self.runs = 0  # script runs started
        self.closed = False
        self._changed = threading.Condition()
        self._file_urls: dict[str, object] = {}
        self._reader = threading.Thread(target=self._read, name="ws-session", daemon=True)
        self._reader.start()
        self.rerun([])

    # ----------------------------------------------------------------------------- receiving
    def _read(self) -> None:
        try:
            for data in self.ws:
                msg = ForwardMsg()
                msg.ParseFromString(data)  # type: ignore[arg-type]
                self._handle(msg)
        except ConnectionClosed:
            pass
        finally:
            with self._changed:
                self.closed = True
                self._changed.notify_all()

    def _handle(self, msg: ForwardMsg) -> None:
        kind = msg.WhichOneof("type")
        with self._changed:
            if kind == "new_session":
                self.session_id = msg.new_session.initialize.session_id or self.session_id
                self.page_hash = msg.new_session.page_script_hash or self.page_hash
                self.run = ScriptRun()
                self.runs += 1
            elif kind == "delta" and msg.metadata.delta_path[:1] == [MAIN]:
                delta = msg.delta
                if delta.WhichOneof("type") == "new_element":
                    text, error = _element_text(delta.new_element)
                    if text:
                        self.run.texts.append(text)
                    if error:
                        self.run.errors.append(error)
                    widget = _widget(delta.new_element)
                    if widget:
                        self.run.widgets[widget[0]] = self.widgets[widget[0]] = (widget[1], widget[2])
            elif kind == "navigation":  # the page st.navigation resolved: the one to rerun
                self.page_hash = msg.navigation.page_script_hash or self.page_hash
            elif kind == "script_finished":
                if msg.script_finished != ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                    self.run.finished = True
            elif kind == "file_urls_response":
                self._file_urls[msg.file_urls_response.response_id] = msg.file_urls_response
            else:
                return
            self._changed.notify_all()

    def wait_for(self, predicate, timeout_s: float | None = None) -> bool:
        """Wait until ``predicate()`` holds (checked whenever a message arrives); False on timeout."""
        with self._changed:
            return self._changed.wait_for(
                lambda: predicate() or self.closed, timeout_s or self.timeout_s
            ) and (not self.closed or bool(predicate()))

    # ------------------------------------------------------------------------------- sending
    def _send(self, msg: BackMsg) -> None:
        self.ws.send(msg.SerializeToString())

    def rerun(self, widgets: list[WidgetState]) -> None:
        """Run the page's script again with these widget values (the others keep their defaults)."""
        state = ClientState(query_string=self.query, widget_states=WidgetStates(widgets=widgets))
        if self.page_hash:
            state.page_script_hash = self.page_hash
        else:
            state.page_name = self.page
        with self._changed:
            self.run = ScriptRun()
        self._send(BackMsg(rerun_script=state))

    def wait_idle(self, timeout_s: float | None = None) -> ScriptRun:
        """The finished run (after the first rerun was asked for); TimeoutError when none finishes."""
        if not self.wait_for(lambda: self.run.finished, timeout_s):
            raise TimeoutError(
                f"no script run of {self.page} finished within {timeout_s or self.timeout_s} s"
            )
        return self.run

    def widget_id(self, label: str, kind: str | None = None) -> str:
        found = self.widgets.get(label)
        if found is None or (kind is not None and found[0] != kind):
            raise KeyError(f"no {kind or 'widget'} labelled {label!r} on {self.page}: {sorted(self.widgets)}")
        return found[1]

    def upload(self, path: Path, uploader_label: str | None = None) -> None:
        """Upload ``path`` into the page's file uploader (the first one, or the one of that label)
        as the front end does, and rerun the script with it."""
        uploaders = [(label, wid) for label, (kind, wid) in self.widgets.items() if kind == "file_uploader"]
        if uploader_label is not None:
            uploaders = [(label, wid) for label, wid in uploaders if label == uploader_label]
        if not uploaders:
            raise KeyError(f"no file uploader on {self.page}")
        uploader = uploaders[0][1]
        request_id = uuid.uuid4().hex
        self._send(
            BackMsg(
                file_urls_request=FileURLsRequest(
                    request_id=request_id, file_names=[path.name], session_id=self.session_id
                )
            )
        )
        if not self.wait_for(lambda: request_id in self._file_urls):
            raise TimeoutError("the server gave no upload URL")
        response = self._file_urls.pop(request_id)
        if response.error_msg:  # type: ignore[attr-defined]
            raise RuntimeError(response.error_msg)  # type: ignore[attr-defined]
        urls = response.file_urls[0]  # type: ignore[attr-defined]
        data = path.read_bytes()
        headers = {"X-Xsrftoken": self.xsrf} if self.xsrf else {}
        target = urls.upload_url if urls.upload_url.startswith("http") else self.url + urls.upload_url
        put = self.http.put(
            target, files={"file": (path.name, data)}, headers=headers, timeout=self.timeout_s
        )
        put.raise_for_status()
        info = UploadedFileInfo(name=path.name, size=len(data), file_id=urls.file_id, file_urls=urls)
        self.rerun(
            [WidgetState(id=uploader, file_uploader_state_value=FileUploaderState(uploaded_file_info=[info]))]
        )

    def close(self) -> None:
        self.ws.close()
        self.http.close()
        self._reader.join(timeout=10)
