"""The dashboard's Streamlit helpers, shared by ``app.py`` and the pages: the only part of kdviz
that imports Streamlit (``tests/test_architecture.py`` holds it to that).

One module per page (:mod:`.ablations`, :mod:`.attributions`, :mod:`.benchmark`, :mod:`.compare`,
:mod:`.lesson`) and the pieces they share: the sidebar, the session's choices and jobs, cached
loading, cards, charts, the job panel, links that keep the view. The submodules are imported where
used, not here, so that a page loads only what it draws.
"""

__all__ = [
    "ablations",
    "attributions",
    "benchmark",
    "cache",
    "cards",
    "charts",
    "compare",
    "job_panel",
    "lesson",
    "presentation",
    "samples",
    "session",
    "shell",
    "sidebar",
    "training",
    "urlstate",
]
