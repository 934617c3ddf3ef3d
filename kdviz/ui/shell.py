"""Every page runs inside ``app.py``: its navigation, sidebar and page config.

Streamlit treats a project with a ``pages/`` folder as a legacy multipage app until ``app.py`` has
called ``st.navigation`` once in the server's life. Until then, a deep link (``/lesson?step=3``)
opened on a fresh server runs the page file alone: no sidebar, no teacher, no student. A page calls
:func:`require_app` first; in that one case it switches the legacy mode off and reruns, so the
same link comes back through ``app.py`` with its query parameters intact.
"""

from __future__ import annotations

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager


def require_app() -> None:
    """Rerun through ``app.py`` when Streamlit ran this page file on its own."""
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False  # what app.py's st.navigation would have set
        st.rerun()
