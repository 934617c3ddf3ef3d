"""What every page test checks after a run: no exception and no error box on the page."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
