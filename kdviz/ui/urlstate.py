"""A view's state kept in the page's URL, so a bookmarked or shared link opens exactly that view.

``bind(key, default, ...)`` ties a session-state key (usually a widget's) to a query parameter.
Call it just before the widget is drawn, and draw the widget without its own default (``value=``,
``index=``): the bound key already holds the value, the default included.

- the parameter is read once per session, the first time the key is bound, into
  ``st.session_state`` (a value that does not parse or is out of range is ignored, with a toast);
- on every run the current value is written back to ``st.query_params``, so the address bar always
  says what is on screen (values equal to the default are left out, to keep links short);
- the value is also kept in a shadow key, because Streamlit forgets a widget's state when the
  widget is not drawn (another lesson step, another page); coming back restores it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import streamlit as st

T = TypeVar("T")
_READ = "kdviz_url_read"  # the keys whose parameter was read in this session
_SHADOW = "kdviz_url_shadow::"


def bind(
    key: str,
    default: T,
    *,
    param: str | None = None,
    parse: Callable[[str], Any] = str,  # a parser for T (str, the default, parses any T that is a str)
    fmt: Callable[[T], str] = str,
    valid: Callable[[T], bool] | None = None,
    why: str = "not a valid value",
) -> T:
    """Tie ``st.session_state[key]`` to the query parameter ``param`` (default: ``key``); return the value."""
    param = param or key
    state = st.session_state
    read: set = state.setdefault(_READ, set())
    if key not in read:
        read.add(key)
        raw = st.query_params.get(param)
        if raw is not None:
            try:
                value = parse(raw)
                ok = valid(value) if valid else True
            except (TypeError, ValueError):
                ok = False
            if ok:
                state[key] = value
            else:
                st.toast(f"The link's {param}={raw!r} is {why}; showing {fmt(default)} instead.")
    shadow = _SHADOW + key
    if key not in state:  # first run, or the widget was not drawn for a while: its value comes from here
        state[key] = state.get(shadow, default)
    value = state[key]
    state[shadow] = value
    if value == default:
        if param in st.query_params:
            del st.query_params[param]
    else:
        st.query_params[param] = fmt(value)
    return value


def bind_int(key: str, default: int, lo: int, hi: int, *, param: str | None = None) -> int:
    return bind(
        key,
        default,
        param=param,
        parse=int,
        valid=lambda v: lo <= v <= hi,
        why=f"not a whole number in {lo}–{hi}",
    )


def bind_float(key: str, default: float, lo: float, hi: float, *, param: str | None = None) -> float:
    return bind(
        key,
        default,
        param=param,
        parse=float,
        fmt=lambda v: f"{v:g}",
        valid=lambda v: lo <= v <= hi,
        why=f"not a number in {lo:g}–{hi:g}",
    )


def bind_choice(key: str, default: T, options: Sequence[T], *, param: str | None = None) -> T:
    """For select boxes and radios: the URL holds ``str(option)``, matched back to the option itself."""
    by_text = {str(o): o for o in options}

    def parse(raw: str) -> T:
        if raw not in by_text:
            raise ValueError(raw)
        return by_text[raw]

    shown = ", ".join(list(by_text)[:8]) + (", …" if len(by_text) > 8 else "")
    return bind(key, default, param=param, parse=parse, why=f"not one of {shown}")


def bind_bool(key: str, default: bool, *, param: str | None = None) -> bool:
    words = {
        "1": True,
        "true": True,
        "on": True,
        "yes": True,
        "0": False,
        "false": False,
        "off": False,
        "no": False,
    }

    def parse(raw: str) -> bool:
        word = raw.strip().lower()
        if word not in words:
            raise ValueError(raw)
        return words[word]

    return bind(key, default, param=param, parse=parse, fmt=lambda v: "1" if v else "0", why="not 1 or 0")
