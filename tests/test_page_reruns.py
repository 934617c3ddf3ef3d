"""A rerun (any widget change) must not redo a page's expensive work: what bench_pages.py found slow.

The Compare page recomputed its deletion and insertion curves on every rerun; the Benchmark page
must keep its measurements. Each test lets the page compute once, then makes the expensive
function fail: a rerun that still draws proves the result came from the cache.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[1] / "app.py"

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def fresh_caches(tmp_path, monkeypatch):
    from kdviz.ui.compare import _faithfulness

    monkeypatch.setenv("KDVIZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("kdviz.attribution.cache._DEFAULT_CACHE", None)
    _faithfulness.clear()
    yield
    _faithfulness.clear()


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=240)
    at.switch_page(page)
    return at


def clean(at: AppTest) -> bool:
    return not at.exception and not at.error


def refuse(*args, **kwargs):
    raise AssertionError("computed again on a rerun")


def test_compare_rerun_computes_no_curves_again(monkeypatch):
    at = open_page("pages/compare.py")
    at.session_state["cmp_n"] = 4
    at.session_state["cmp_steps"] = 4
    at.run()
    assert clean(at), [e.value for e in at.exception]
    aucs = sorted(t["name"] for t in _faith_chart(at)["data"])

    monkeypatch.setattr("kdviz.attribution.comparison.faithfulness", refuse)
    at.selectbox(key="cmp_metric").set_value("cosine").run()  # a widget that changes no image or map
    assert clean(at), [e.value for e in at.exception]
    assert sorted(t["name"] for t in _faith_chart(at)["data"]) == aucs

    at.slider(key="cmp_n").set_value(8).run()  # other images: the curves must be computed
    assert any("computed again on a rerun" in str(e.value) for e in at.exception)


def _faith_chart(at: AppTest) -> dict:
    import json

    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    found = [c for c in charts if any("deletion (AUC" in t.get("name", "") for t in c["data"])]
    assert len(found) == 1
    return found[0]


def test_benchmark_rerun_keeps_the_measurements(monkeypatch):
    at = open_page("pages/benchmark.py").run()
    at.number_input(key="bench_threads").set_value(1)
    at.number_input(key="bench_repeats").set_value(3)
    at.number_input(key="bench_seconds").set_value(1.0)
    at.multiselect(key="bench_runtimes").set_value(["eager"])
    at.button(key="bench_run_latency").click().run()
    assert clean(at)
    before = [df.value for df in at.dataframe if "compression ×" in df.value.columns][0]

    monkeypatch.setattr("kdviz.bench.latency.eager", refuse)
    monkeypatch.setattr("kdviz.bench.scorecard.predict", refuse)
    at.selectbox(key="bench_split").set_value("test").run()
    assert clean(at), [e.value for e in at.exception]
    after = [df.value for df in at.dataframe if "compression ×" in df.value.columns][0]
    assert after["latency ms (batch 1)"].notna().all()
    assert after["latency ms (batch 1)"].tolist() == before["latency ms (batch 1)"].tolist()
