"""The Ablations page on committed results only: a small study summary and a sweep written here (fixed
numbers, no weights, no training), read through ``KDVIZ_RESULTS`` as a fresh machine would."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from kdviz.experiments.ablation import RunView, StudyConfig, StudyView, markdown_table, summarise
from kdviz.experiments.summary import load_summary, write_summary
from kdviz.experiments.sweep import LATENCY_KEYS, write_sweep
from kdviz.training import CORE_ARMS
from kdviz.training.loop import EpochRecord

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
PAGE = "pages/ablations.py"
ARMS = [*CORE_ARMS, "kd+at"]
#: test accuracy per arm and seed: KD and KD + IG above the baseline on every seed
ACCURACY = {
    "baseline": [0.880, 0.884, 0.878],
    "kd": [0.889, 0.891, 0.886],
    "ig": [0.879, 0.886, 0.880],
    "kd+ig": [0.892, 0.893, 0.889],
    "kd+at": [0.890, 0.890, 0.887],
}


def fixture_summary(
    out: Path, accuracy: dict[str, list[float | None]] = ACCURACY, name: str = "fixture-study"
) -> Path:
    """A study summary as finished seeds of some arms would leave it (its study folder is gone);
    ``None``: a run of the configuration not finished."""
    arms = list(accuracy)
    config = StudyConfig(dataset="cifar10", teacher="assets/cifar10_teacher", student="airnet_student_4x",
                         arms=arms, seeds=list(range(max(map(len, accuracy.values())))))  # fmt: skip
    runs = []
    for arm in arms:
        for seed, acc in enumerate(accuracy[arm]):
            name_ = f"{arm.replace('+', '-')}-s{seed}"
            if acc is None:
                runs.append(RunView(name_, arm, seed, out / "gone" / name_, "pending", None, []))
                continue
            history = [
                EpochRecord(e, 1.0 / e, 0.5 + 0.1 * e, 1.0, acc - 0.01 * (3 - e), 0.1, 60.0, 800.0)
                for e in (1, 2, 3)
            ]
            metrics = {
                "arm": arm,
                "seed": seed,
                "test_accuracy": acc,
                "test_images": 10_000,
                "teacher_agreement": acc + 0.02,
                "attribution": {"spearman": 0.5, "cosine": 0.6, "top_k_iou": 0.3, "ssim": 0.4},
                "wall_seconds": 900.0,
            }
            runs.append(RunView(name_, arm, seed, out / "gone" / name_, "done", metrics, history))
    state = {"teacher": {"arch": "airnet_cifar", "test_accuracy": 0.9055, "latency_ms": 2.0},
             "student": {"arch": "airnet_student_4x", "latency_ms": 0.5}, "compression": 4.2}  # fmt: skip
    view = StudyView(out / "gone", config, state, runs)
    return write_summary(view, out / name, part="core")


def test_a_summary_is_done_when_the_runs_its_parts_plan_are(tmp_path):
    """The main study's configuration allows seeds 3-4 of the attention arms, which its parts do not
    run: with the planned runs finished it reads as done, and says how many it allows."""
    from kdviz.ui.ablations import runs_line

    acc = {"baseline": [0.88, 0.881, 0.879, 0.882, 0.88], "at": [0.884, 0.883, 0.885, None, None]}
    main = load_summary(fixture_summary(tmp_path, acc, name="cifar10-study"))
    assert main.status == "done" and len(main.state["planned_runs"]) == 8 and len(main.runs) == 10
    assert runs_line(main) == "8 of the 8 planned runs finished (its configuration allows 10)"
    # a study of no plan counts every run of its configuration
    other = load_summary(fixture_summary(tmp_path, acc, name="my-study"))
    assert other.status == "partial" and runs_line(other) == "8 of 10 runs finished"
    # a planned run missing: partial
    acc["baseline"][4] = None
    short = load_summary(fixture_summary(tmp_path / "b", acc, name="cifar10-study"))
    assert short.status == "partial"
    assert runs_line(short) == "7 of the 8 planned runs finished (its configuration allows 10)"


@pytest.fixture
def page(tmp_path, monkeypatch):
    results = tmp_path / "results"
    folder = fixture_summary(results)
    rows = [
        {"student": s, "arm": arm, "compression ×": c, "params": int(2e6 / c), "macs": int(1e8 / c),
         **{k: 2.0 / c**0.5 for k in LATENCY_KEYS}, "accuracy": acc, "accuracy std": 0.002, "seeds": 1}
        for s, c, arm, acc in [("teacher", 1.0, "teacher", 0.905), ("4x", 4.2, "baseline", 0.881),
                               ("4x", 4.2, "kd+ig", 0.891), ("16x", 16.0, "baseline", 0.85),
                               ("16x", 16.0, "kd+ig", 0.86), ("64x", 64.0, "kd+ig", float("nan"))]
    ]  # fmt: skip
    rows[-1]["seeds"] = 0  # a point whose part has not run
    for r in rows[1:]:  # one point trained in float32, the others in bfloat16
        r["precision"] = "float32" if r["student"] == "16x" else "bfloat16"
    write_sweep(rows, results / "sweep")
    monkeypatch.setenv("KDVIZ_RESULTS", str(results))
    monkeypatch.setenv("KDVIZ_CACHE", str(tmp_path / "cache"))
    at = AppTest.from_file(str(APP), default_timeout=240).run()
    assert not at.exception, [e.value for e in at.exception]
    at.switch_page(PAGE).run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    return at, folder


def tab(at: AppTest, label: str):
    return next(t for t in at.tabs if t.label == label)


def chart(at: AppTest, key: str) -> dict:
    found = [c for c in at.get("plotly_chart") if c.proto.id.endswith(key)]
    assert len(found) == 1, [c.proto.id for c in at.get("plotly_chart")]
    return json.loads(found[0].proto.spec)


def test_the_committed_summary_opens_read_only(page):
    at, folder = page
    assert at.selectbox(key="abl_study").value == f"summary:{folder}"
    rows = {r["arm"]: r for r in summarise(load_summary(folder))}
    table = tab(at, "Studies").dataframe[0].value
    assert list(table["arm"]) == ARMS and list(table["seeds"]) == ["3/3"] * len(ARMS)
    for _, row in table.iterrows():
        want = rows[row["arm"]]
        assert row["accuracy %"] == pytest.approx(round(100 * want["accuracy"], 2))
        assert row["95 % CI low"] == pytest.approx(round(100 * want["accuracy ci low"], 2))
        assert row["95 % CI high"] == pytest.approx(round(100 * want["accuracy ci high"], 2))
        for col, key in (
            ("p vs baseline (Holm)", "p vs baseline (Holm)"),
            ("p vs KD (Holm)", "p vs kd (Holm)"),
        ):
            if math.isnan(want[key]):
                assert row[col] is None or math.isnan(row[col])
            else:
                assert row[col] == pytest.approx(round(want[key], 3))
    # KD + IG beats the baseline on every seed by 1.0-1.2 points: a small p, corrected upwards
    assert rows["kd+ig"]["p vs baseline (Holm)"] > rows["kd+ig"]["p vs baseline"]
    assert 0 < rows["kd+ig"]["Δ vs baseline ci low"] < rows["kd+ig"]["Δ vs baseline"]
    bars = chart(at, "abl_bars")["data"]
    assert bars[0]["x"] == ARMS
    assert bars[0]["error_y"]["array"] == pytest.approx(
        [100 * (rows[a]["accuracy ci high"] - rows[a]["accuracy"]) for a in ARMS]
    )
    seeds = bars[1]  # every seed's run as a point
    assert len(seeds["x"]) == 15 and sorted(seeds["y"]) == pytest.approx(
        sorted(100 * v for a in ARMS for v in ACCURACY[a])
    )
    assert len(chart(at, "abl_curves")["data"]) == 2 * 15  # loss and accuracy of every run
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["Download the table (Markdown)", "Download the table (CSV)"]
    assert any("committed summary (read-only" in c.value for c in at.caption)
    assert any("weights of this summary are not on this machine" in i.value for i in at.info)
    assert (folder / "arms.md").read_text().strip() == markdown_table(summarise(load_summary(folder)))


def test_the_sweep_tab_draws_both_arms_and_their_fronts(page):
    at, _ = page
    fig = chart(at, "abl_sweep_fig")
    names = [t["name"] for t in fig["data"]]
    assert {"baseline", "kd+ig", "teacher", "baseline Pareto front", "kd+ig Pareto front"} <= set(names)
    assert fig["layout"]["xaxis"]["type"] == "log" and fig["layout"]["xaxis2"]["type"] == "log"
    at.radio(key="abl_sweep_latency").set_value("onnx b64 ms").run()
    assert not at.exception
    assert "onnx b64" in chart(at, "abl_sweep_fig")["layout"]["annotations"][0]["text"]
    assert len(tab(at, "Compression sweep").dataframe[0].value) == 6  # the point not run: its costs
    assert any("Not run yet, so not drawn: 64x kd+ig." in i.value for i in tab(at, "Compression sweep").info)
    captions = [c.value for c in tab(at, "Compression sweep").caption]
    assert any("Not every point trained alike: bfloat16: 4x; float32: 16x." in c for c in captions)
