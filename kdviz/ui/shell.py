"""Every page runs inside ``app.py``: its navigation, sidebar and page config.

Streamlit treats a project with a ``pages/`` folder as a legacy multipage app until ``app.py`` has
called ``st.navigation`` once in the server's life. Until then, a deep link (``/lesson?step=3``)
opened on a fresh server runs the page file alone: no sidebar, no teacher, no student. A page calls
:func:`require_app` first; when ``app.py`` did not run before it in this script run, it switches
the legacy mode off and reruns, so the same link comes back through ``app.py`` with its query
parameters intact.

The test is per run, not the legacy flag itself: sessions opened at the same moment on a fresh
server (a room of people following one link) all start their first run in the legacy mode, and
only the first page to look would still find the flag set; the others ran without the sidebar
and said "choose a model" until the person clicked something.
"""

from __future__ import annotations

import threading

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

_RUN = threading.local()  # a script run happens on one thread: app.py marks it, the page reads it


def enter_app() -> None:
    """Called by ``app.py`` before it runs the page: this run came through the app."""
    _RUN.in_app = True


def require_app() -> None:
    """Rerun through ``app.py`` when Streamlit ran this page file on its own."""
    in_app = getattr(_RUN, "in_app", False)
    _RUN.in_app = False  # consumed: the next run must be marked again
    if not in_app:
        PagesManager.uses_pages_directory = False  # what app.py's st.navigation would have set
        st.rerun()
