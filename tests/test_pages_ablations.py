"""The Ablations page, driven headless with Streamlit's AppTest from ``app.py``: a tiny study and a tiny
search made here (digits, a few dozen images, one or two epochs) are what the page must show."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from apptest_helpers import assert_clean
from streamlit.testing.v1 import AppTest

from kdviz.core.jobs import MANAGER
from kdviz.experiments.ablation import StudyConfig, load_study, run_study, summarise
from kdviz.experiments.hpo import SearchConfig, load_search, run_search
from kdviz.models.checkpoints import load_model
from kdviz.training import CORE_ARMS as ARMS

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
TEACHER = ROOT / "assets" / "digits_teacher"
PAGE = "pages/ablations.py"


def tiny(**train) -> StudyConfig:
    return StudyConfig(
        dataset="digits",
        teacher=str(TEACHER),
        student="mnv2_student_4x_fast",
        student_kwargs={"width_mult": 0.5},
        seeds=[0, 1],
        probe=3,
        probe_steps=2,
        latency_seconds=0.1,
        test_limit=100,
        train=dict(epochs=1, batch_size=32, hflip=False, subset=64, ig_steps=2, eval_limit=40, **train),
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A workspace holding one finished study and one finished 3-trial search."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("home")
    run_study(root / "studies" / "tiny", tiny())
    base = tiny()
    base.arms, base.seeds = ["kd+ig"], [0]
    run_search(root / "studies" / "hpo-tiny", SearchConfig(base=base, trials=3, holdout=16, startup_trials=1))
    torch.set_num_threads(before)
    return root


@pytest.fixture
def page(home, monkeypatch, tmp_path):
    monkeypatch.setenv("KDVIZ_HOME", str(home))
    monkeypatch.setenv("KDVIZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KDVIZ_RESULTS", str(tmp_path / "results"))  # no committed summary
    monkeypatch.setattr("kdviz.attribution.cache._DEFAULT_CACHE", None)
    at = AppTest.from_file(str(APP), default_timeout=240).run()
    assert not at.exception, [e.value for e in at.exception]
    at.switch_page(PAGE).run()
    assert_clean(at)
    return at


def tab(at: AppTest, label: str):
    return next(t for t in at.tabs if t.label == label)


def image_captions(where) -> list[str]:
    return [c for img in where.get("image") for c in img.captions]


def chart(at: AppTest, key: str) -> dict:
    found = [c for c in at.get("plotly_chart") if c.proto.id.endswith(key)]
    assert len(found) == 1, [c.proto.id for c in at.get("plotly_chart")]
    return json.loads(found[0].proto.spec)


def test_a_study_shows_its_arms(page, home):
    at = page
    view = load_study(home / "studies" / "tiny")
    assert at.selectbox(key="abl_study").value == f"study:{view.folder}"
    assert any(m.value.startswith("**tiny**: done, 8 of 8 runs finished") for m in at.markdown)
    table = tab(at, "Studies").dataframe[0].value
    assert list(table["arm"]) == list(ARMS) and list(table["seeds"]) == ["2/2"] * 4
    rows = {r["arm"]: r for r in summarise(view)}
    for _, row in table.iterrows():
        assert row["accuracy %"] == pytest.approx(round(100 * rows[row["arm"]]["accuracy"], 2))
        assert row["± std"] == pytest.approx(round(100 * rows[row["arm"]]["accuracy std"], 2))
        assert row["compression ×"] == pytest.approx(round(view.state["compression"], 2))
    assert table.loc[table["arm"] == "baseline", "Δ vs baseline (points)"].item() == 0.0
    bars = chart(at, "abl_bars")["data"][0]
    assert bars["x"] == list(ARMS)
    half = [100 * (rows[a]["accuracy ci high"] - rows[a]["accuracy"]) for a in ARMS]  # the 95 % interval
    assert bars["error_y"]["array"] == pytest.approx(half)
    curves = chart(at, "abl_curves")["data"]
    assert {t["hovertext"] for t in curves} == {r.name for r in view.runs}  # every run's curve is drawn
    assert at.get("download_button")[0].proto.label == "Download the table (Markdown)"


def test_maps_of_every_arm_beside_the_teachers(page, home):
    at = page
    view = load_study(home / "studies" / "tiny")
    studies = tab(at, "Studies")
    captions = image_captions(studies)
    probe = np.load(view.folder / "probe_indices.npy")
    assert sum(c == "teacher" for c in captions) == 3  # three probe images, default min(4, 3)
    for i in range(3):
        assert any(c.startswith(f"#{int(probe[i])}: ") for c in captions)

    def scores(captions, arm):
        return [
            float(re.search(r"Spearman (-?[\d.]+|nan)", c).group(1))
            for c in captions
            if c.startswith(f"{arm}: ")
        ]

    for run in view.runs:
        if run.seed == 0:
            expected = [round(v, 2) for v in run.metrics["attribution_per_image"]["spearman"][:3]]
            assert scores(captions, run.arm) == pytest.approx(expected, abs=0.006)
    at.selectbox(key="abl_seed").set_value(1)
    at.slider(key="abl_count").set_value(1).run()
    assert_clean(at)
    captions = image_captions(tab(at, "Studies"))
    assert sum(c == "teacher" for c in captions) == 1
    for run in view.runs:
        if run.seed == 1:
            assert scores(captions, run.arm) == pytest.approx(
                [round(run.metrics["attribution_per_image"]["spearman"][0], 2)], abs=0.006
            )


def test_the_overlay_preview_follows_p_and_lambda(page):
    at = page
    at.slider(key="abl_prev_p").set_value(0.0).run()
    assert_clean(at)
    preview = tab(at, "Overlay preview")
    assert any(c.value.startswith("This draw overlays 0 of 6 images") for c in preview.caption)
    assert image_captions(preview).count("unchanged") == 6
    at.slider(key="abl_prev_p").set_value(1.0).run()
    preview = tab(at, "Overlay preview")
    assert any(c.value.startswith("This draw overlays 6 of 6 images") for c in preview.caption)
    assert image_captions(preview).count("overlaid") == 6
    at.slider(key="abl_prev_lam").set_value(0.8)
    at.radio(key="abl_prev_mode").set_value("emphasis").run()
    assert_clean(at)
    assert any("overlaid, λ = 0.80" in m.value for m in tab(at, "Overlay preview").markdown)


def test_the_search_and_a_student_from_its_best_trial(page, home):
    at = page
    search = tab(at, "Hyperparameter search")
    trials = tab(at, "Hyperparameter search").dataframe[0].value
    assert list(trials["trial"]) == [0, 1, 2] and set(trials["state"]) == {"complete"}
    study = load_search(home / "studies" / "hpo-tiny").study()
    assert trials["validation accuracy %"].tolist() == pytest.approx(
        [round(100 * t.value, 2) for t in study.trials]
    )
    assert {"Optimisation history", "Parallel coordinates"} <= {c.value for c in search.caption}
    best = study.best_trial
    assert any(m.value.startswith(f"**Best trial {best.number}**") for m in search.markdown)
    at.text_input(key="hpo_best_name").set_value("best-student")
    at.number_input(key="hpo_best_epochs").set_value(1)
    at.button(key="hpo_best_go").click().run()
    job = next(j for j in reversed(MANAGER.list(kind="distill")) if j.title == "student best-student")
    assert job.wait(300) and job.status == "done", job.error
    at.run()
    assert_clean(at)
    card = load_model(home / "best-student").card
    assert (
        card.train_config["temperature"] == best.params["temperature"] and card.train_config["holdout"] == 0
    )
    assert card.metrics["epochs_done"] == 1


@pytest.mark.slow
def test_start_a_small_study_from_the_page(page, home):
    at = page
    at.text_input(key="abl_new_name").set_value("from-page")
    at.multiselect(key="abl_new_arms").set_value(["baseline", "kd+ig"])
    at.number_input(key="abl_new_seeds").set_value(1)
    at.number_input(key="abl_new_epochs").set_value(1)
    at.number_input(key="abl_new_subset").set_value(48)
    at.number_input(key="abl_new_steps").set_value(2)
    at.button(key="abl_new_start").click().run()
    job = next(j for j in reversed(MANAGER.list(kind="study")) if j.title == "study from-page")
    assert job.wait(300) and job.status == "done", job.error
    at.run()
    assert_clean(at)
    view = load_study(home / "studies" / "from-page")
    assert view.status == "done" and [r.arm for r in view.runs] == ["baseline", "kd+ig"]
    assert view.config.teacher == str(TEACHER) and view.config.train["subset"] == 48
    at.selectbox(key="abl_study").set_value(f"study:{view.folder}").run()
    assert_clean(at)
    assert list(tab(at, "Studies").dataframe[0].value["arm"]) == ["baseline", "kd+ig"]
