"""The Benchmark page, driven headless with Streamlit's AppTest from ``app.py``.

Each test opens the whole app with the default selection (the built-in digits, the teacher and
student in ``assets/``), switches to the Benchmark page, runs a short latency measurement (tiny
repeats, a 1 s budget) and an accuracy comparison through the widgets, and checks the headline table
against numbers computed here: the cards' sizes, predictions made outside the page, and
``python -m kdviz eval``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
from apptest_helpers import assert_clean
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
TEACHER = ROOT / "assets" / "digits_teacher"
STUDENT = ROOT / "assets" / "digits_student"
T_NAME, S_NAME = "teacher: digits_teacher", "digits_student"

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def fresh_state(tmp_path, monkeypatch):
    """An empty prediction cache, and no ONNX session left from an earlier test."""
    from kdviz.ui.benchmark import onnx_session

    monkeypatch.setenv("KDVIZ_CACHE", str(tmp_path / "cache"))
    onnx_session.clear()
    yield
    onnx_session.clear()


def open_benchmark() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=240).run()
    assert not at.exception, [e.value for e in at.exception]
    at.switch_page("pages/benchmark.py").run()
    assert_clean(at)
    return at


def short_latency(at: AppTest, runtimes=("eager", "onnxruntime"), batch: int = 8) -> AppTest:
    at.select_slider(key="bench_batch").set_value(batch)
    at.number_input(key="bench_threads").set_value(1)  # two threads crawl when the cores are shared
    at.number_input(key="bench_warmup").set_value(1)
    at.number_input(key="bench_repeats").set_value(3)
    at.number_input(key="bench_seconds").set_value(1.0)
    at.multiselect(key="bench_runtimes").set_value(list(runtimes))
    return at.button(key="bench_run_latency").click().run()


def table_with(at: AppTest, column: str) -> pd.DataFrame:
    found = [df.value for df in at.dataframe if column in df.value.columns]
    assert len(found) == 1, [list(df.value.columns) for df in at.dataframe]
    return found[0]


def headline(at: AppTest) -> pd.DataFrame:
    return table_with(at, "compression ×").set_index("model")


def latency_table(at: AppTest) -> pd.DataFrame:
    return table_with(at, "median_ms")


def card(path: Path):
    from kdviz.models.checkpoints import read_card

    return read_card(path)


def test_short_latency_and_accuracy_fill_the_headline_table():
    at = open_benchmark()
    table = headline(at)
    assert list(table.index) == [T_NAME, S_NAME]
    assert table.loc[T_NAME, "role"] == "teacher" and table.loc[S_NAME, "role"] == "student"
    teacher_card, student_card = card(TEACHER), card(STUDENT)
    assert table.loc[S_NAME, "parameters"] == student_card.stats["params"]
    assert table.loc[S_NAME, "compression ×"] == round(
        teacher_card.stats["params"] / student_card.stats["params"], 2
    )
    assert table.loc[S_NAME, "compression ×"] == 4.61  # the README's figure for the asset pair
    # before anything is measured: the cards' accuracies, and no latency yet
    assert table.loc[T_NAME, "accuracy"] == teacher_card.test_accuracy
    assert table.loc[S_NAME, "accuracy"] == student_card.test_accuracy
    assert table["latency ms (batch 1)"].isna().all()
    assert any("from each model's card" in c.value for c in at.caption)

    short_latency(at, batch=8)
    assert_clean(at)
    lat = latency_table(at)
    measured = set(zip(lat["name"], lat["runtime"], lat["batch"], strict=False))
    assert measured == {
        (n, rt, b) for n in (T_NAME, S_NAME) for rt in ("eager", "onnxruntime") for b in (1, 8)
    }
    assert (lat["samples"] == 3).all() and (lat["threads"] == 1).all()
    assert any(c.value.startswith("ONNX export checked against PyTorch") for c in at.caption)

    table = headline(at)
    assert "latency ms (batch 8)" in table.columns and "speed-up × (batch 8)" in table.columns
    median = {(r["name"], r["runtime"], r["batch"]): r["median_ms"] for _, r in lat.iterrows()}
    for name in (T_NAME, S_NAME):
        assert table.loc[name, "latency ms (batch 1)"] == pytest.approx(median[(name, "eager", 1)], abs=1e-3)
        assert table.loc[name, "ONNX Runtime ms (batch 1)"] == pytest.approx(
            median[(name, "onnxruntime", 1)], abs=1e-3
        )
    assert table.loc[S_NAME, "speed-up × (batch 1)"] == pytest.approx(
        median[(T_NAME, "eager", 1)] / median[(S_NAME, "eager", 1)], rel=1e-3
    )
    assert table.loc[T_NAME, "speed-up × (batch 1)"] == 1.0

    at.button(key="bench_run_accuracy").click().run()
    assert_clean(at)
    from kdviz.data import load_dataset
    from kdviz.models.checkpoints import load_model
    from kdviz.models.evaluate import predict

    digits = load_dataset("digits")
    expected = {}
    for name, path in ((T_NAME, TEACHER), (S_NAME, STUDENT)):
        loaded = load_model(path)
        expected[name] = predict(loaded.model, digits.test, mean=loaded.card.mean, std=loaded.card.std)
    table = headline(at)
    for name in (T_NAME, S_NAME):
        assert table.loc[name, "accuracy"] == expected[name].accuracy
    assert table.loc[S_NAME, "teacher's accuracy kept"] == pytest.approx(
        expected[S_NAME].accuracy / expected[T_NAME].accuracy
    )
    metrics = {m.label: m.value for m in at.metric}
    assert metrics[T_NAME] == f"{expected[T_NAME].accuracy:.2%}"
    agree = (expected[T_NAME].predicted == expected[S_NAME].predicted).mean()
    assert metrics["Teacher and student agree on"] == f"{agree:.2%}"
    assert any("measured here on 360 images of the test split" in c.value for c in at.caption)
    t_pred, s_pred = expected[T_NAME].predicted, expected[S_NAME].predicted
    names = digits.class_names
    shown = [c for img in at.get("image") for c in img.captions]  # read column by column
    assert sorted(shown) == sorted(
        f"{names[digits.test.labels[j]]} → {names[t_pred[j]]} / {names[s_pred[j]]}"
        for j in (t_pred != s_pred).nonzero()[0][:12]
    )

    labels = {b.label for b in at.get("download_button")}
    assert labels == {"Download CSV", "Download JSON"}


def test_page_accuracy_equals_kdviz_eval(capsys):
    from kdviz.cli import main

    at = open_benchmark()
    assert at.number_input(key="bench_limit").value == 360  # the whole digits test split
    at.button(key="bench_run_accuracy").click().run()
    assert_clean(at)
    table = headline(at)
    capsys.readouterr()
    for name, path in ((T_NAME, TEACHER), (S_NAME, STUDENT)):
        assert main(["eval", "--weights", str(path), "--data", "digits", "--split", "test", "--json"]) == 0
        cli = json.loads(capsys.readouterr().out)
        assert cli["n"] == 360
        assert table.loc[name, "accuracy"] == cli["accuracy"]

    at.selectbox(key="bench_split").set_value("train")
    at.number_input(key="bench_limit").set_value(200)
    at.button(key="bench_run_accuracy").click().run()
    assert_clean(at)
    table = headline(at)
    assert (
        main(
            [
                "eval",
                "--weights",
                str(STUDENT),
                "--data",
                "digits",
                "--split",
                "train",
                "--limit",
                "200",
                "--json",
            ]
        )
        == 0
    )
    assert table.loc[S_NAME, "accuracy"] == json.loads(capsys.readouterr().out)["accuracy"]


def test_a_failed_onnx_export_is_said_and_eager_still_measured(monkeypatch):
    import torch

    def refuse(*args, **kwargs):
        raise RuntimeError("this exporter is broken on purpose")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    at = open_benchmark()
    short_latency(at, batch=1)
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 2  # one line per model, not one per batch size
    for name, error in zip((T_NAME, S_NAME), errors, strict=False):
        assert error.startswith(f"{name}: ONNX export of ")
        assert "RuntimeError: this exporter is broken on purpose" in error
        assert "\n" not in error
    lat = latency_table(at)
    assert set(zip(lat["name"], lat["runtime"], strict=False)) == {(T_NAME, "eager"), (S_NAME, "eager")}
    table = headline(at)
    assert table["latency ms (batch 1)"].notna().all()
    assert table["ONNX Runtime ms (batch 1)"].isna().all()


def test_more_students_join_the_table_and_every_run_chart(monkeypatch):
    """A second student from the workspace (the edge student, untrained) becomes a third row; on a
    busy machine the page says that its timings will swing."""
    import torch

    from kdviz.models import count_params, create_model
    from kdviz.models.checkpoints import save_checkpoint
    from kdviz.training.workspace import Workspace

    torch.manual_seed(0)
    edge = create_model("mnv2_student_4x_edge", width_mult=0.5)
    run = Workspace().create("edge-student")
    save_checkpoint(
        run,
        edge,
        dataclasses.replace(
            card(STUDENT),
            arch="mnv2_student_4x_edge",
            stats={},
            metrics={"test_accuracy": 0.5},
            name="edge-student",
        ),
    )
    monkeypatch.setattr("os.getloadavg", lambda: (9.0, 9.0, 9.0))
    at = open_benchmark()
    assert any(w.value.startswith("This machine is busy (load 9.0 on") for w in at.warning)
    at.selectbox(key="sidebar_student").set_value(str(STUDENT)).run()  # the newest student is the default
    at.multiselect(key="bench_more").set_value([str(run)]).run()
    assert_clean(at)
    table = headline(at)
    assert list(table.index) == [T_NAME, S_NAME, "edge-student"]
    assert table.loc["edge-student", "parameters"] == count_params(edge)
    assert table.loc["edge-student", "compression ×"] == round(
        card(TEACHER).stats["params"] / count_params(edge), 2
    )
    assert table.loc["edge-student", "accuracy"] == 0.5

    assert at.button(key="bench_measure_all").label == "Measure the 3 unmeasured run(s) (batch 1, eager)"

    short_latency(at, runtimes=("eager",), batch=1)
    assert_clean(at)
    assert set(latency_table(at)["name"]) == {T_NAME, S_NAME, "edge-student"}
    assert "bench_measure_all" not in [b.key for b in at.button]  # every run has a latency now
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    runs = [
        c
        for c in charts
        if c["layout"].get("xaxis", {}).get("title", {}).get("text", "").startswith("latency")
    ]
    assert len(runs) == 1
    assert sorted(runs[0]["data"][0]["text"]) == sorted(["digits_teacher", "digits_student", "edge-student"])
    assert any(c.value.startswith("Red: the Pareto front") for c in at.caption)
