"""Presentation mode, for a lecturer in front of a room: full-width page, larger text, controls folded away.

One toggle in the sidebar (kept in the URL as ``present=1``, so a prepared link opens in this mode);
pages put their controls inside :func:`controls`, which is an expander when the mode is on and a
plain container otherwise.
"""

from __future__ import annotations

import streamlit as st

from . import urlstate

KEY = "kdviz_presentation"
PARAM = "present"

#: Larger type and the whole window's width; the marker class lets tests and people see it is on.
CSS = """<style class="kdviz-presentation">
[data-testid="stMainBlockContainer"], .block-container {
  max-width: 100% !important; padding: 2rem 2.5rem !important;}
[data-testid="stMarkdownContainer"] p, [data-testid="stMarkdownContainer"] li,
[data-testid="stCaptionContainer"], [data-testid="stWidgetLabel"] p {
  font-size: 1.35rem !important; line-height: 1.5;}
h1 {font-size: 3rem !important;} h2 {font-size: 2.3rem !important;} h3 {font-size: 1.8rem !important;}
[data-testid="stMetricValue"] {font-size: 2.6rem !important;}
[data-testid="stMetricLabel"] p {font-size: 1.2rem !important;}
</style>"""


def render() -> bool:
    """The sidebar's toggle, and the page's style when it is on; returns whether it is on."""
    urlstate.bind_bool(KEY, False, param=PARAM)
    on = st.sidebar.toggle(
        "Presentation mode",
        key=KEY,
        help="For a projector: the full width, larger text, controls folded into expanders. "
        "It is kept in the page's address, so a bookmarked link opens in this mode.",
    )
    if on:
        st.html(CSS)
    return on


def is_on() -> bool:
    return bool(st.session_state.get(KEY, False))


def controls(label: str = "Controls"):
    """Where a page draws its controls: folded into an expander in presentation mode, in the open
    otherwise."""
    return st.expander(label, expanded=False) if is_on() else st.container()
