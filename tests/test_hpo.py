"""kdviz.experiments.hpo: an Optuna search over T, α, p, λ, learning rate and weight decay, stored
in SQLite (or any URL), pruned per epoch, resumable; its figures; a student from the best trial."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import optuna
import pytest

from kdviz.experiments.ablation import StudyConfig, StudyError
from kdviz.experiments.hpo import (
    SEARCH,
    SearchConfig,
    SearchSpace,
    best_config,
    figures,
    hide_password,
    list_searches,
    load_search,
    run_search,
    train_best,
)
from kdviz.models.checkpoints import load_model
from kdviz.training.loop import read_history

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT / "assets" / "digits_teacher"
PARAMS = {"temperature", "alpha", "overlay_p", "overlay_lambda", "lr_factor", "weight_decay"}


def base(**train) -> StudyConfig:
    return StudyConfig(
        dataset="digits",
        teacher=str(TEACHER),
        student="mnv2_student_4x_fast",
        student_kwargs={"width_mult": 0.5},
        arms=["kd+ig"],
        seeds=[0],
        latency_seconds=0,
        train=dict(epochs=2, batch_size=32, hflip=False, subset=80, ig_steps=2, lr=0.05, **train),
    )


def search(trials: int = 3) -> SearchConfig:
    return SearchConfig(base=base(), trials=trials, holdout=20, startup_trials=1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    folder = tmp_path_factory.mktemp("searches") / "hpo"
    study = run_search(folder, search(3))
    return folder, study


def test_three_trials_on_sqlite(three):
    folder, study = three
    db = folder / "optuna.db"
    assert db.is_file()
    with sqlite3.connect(db) as con:  # really in the SQLite file, not in memory
        (count,) = con.execute("select count(*) from trials").fetchone()
    assert count == 3
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    space = SearchSpace()
    for t in study.trials:
        assert set(t.params) == PARAMS
        for name, value in t.params.items():
            lo, hi = getattr(space, name)
            assert lo <= value <= hi, (name, value)
        assert sorted(t.intermediate_values) == [1, 2]  # reported after every epoch
        run = Path(t.user_attrs["run_dir"])
        card = load_model(run).card
        tc = card.train_config
        # the trial's values are the run's: what was suggested is what was trained
        assert tc["temperature"] == t.params["temperature"] and tc["alpha"] == t.params["alpha"]
        assert tc["overlay_p"] == t.params["overlay_p"] and tc["overlay_lambda"] == t.params["overlay_lambda"]
        assert tc["weight_decay"] == t.params["weight_decay"] and tc["lr"] == pytest.approx(
            0.05 * t.params["lr_factor"]
        )
        assert tc["holdout"] == 20 and tc["arm"] == "kd+ig"
        # the value is the last epoch's accuracy on the 20 held-out training images, not on the test split
        history = read_history(run)
        assert t.value == history[-1].test_acc and t.intermediate_values[2] == history[-1].test_acc
        assert round(t.value * 20) == pytest.approx(t.value * 20)
    assert len({t.params["temperature"] for t in study.trials}) == 3  # the sampler varied them
    state = json.loads((folder / SEARCH).read_text())
    assert state["status"] == "done" and state["storage"] is None


def test_a_finished_search_runs_nothing_more_and_can_be_extended(three):
    folder, _ = three
    again = run_search(folder, search(3))
    assert len(again.trials) == 3
    more = run_search(folder, search(4))
    assert len(more.trials) == 4 and more.trials[-1].state == optuna.trial.TrialState.COMPLETE
    with pytest.raises(StudyError, match="other settings"):
        run_search(folder, SearchConfig(base=base(), trials=4, holdout=30, startup_trials=1))


def test_best_config_and_figures(three):
    folder, _ = three
    view = load_search(folder)
    study = view.study()
    best = best_config(view)
    params = study.best_trial.params
    assert best.temperature == params["temperature"] and best.alpha == params["alpha"]
    assert best.lr == pytest.approx(0.05 * params["lr_factor"])
    assert best.holdout == 0 and best.arm == "kd+ig"  # the kept student trains on every training image
    figs = figures(study)
    assert {"Optimisation history", "Parallel coordinates"} <= set(figs)
    assert all(hasattr(f, "to_plotly_json") for f in figs.values())
    assert [s.folder for s in list_searches(folder.parent)] == [folder]


def test_a_student_from_the_best_trial(three, tmp_path):
    folder, _ = three
    view = load_search(folder)
    model, result = train_best(view, "best", tmp_path / "best", epochs=1)
    card = load_model(tmp_path / "best").card
    best = view.study().best_trial.params
    assert card.train_config["temperature"] == best["temperature"] and card.train_config["holdout"] == 0
    assert card.train_config["epochs"] == 1 and len(result.history) == 1 and card.role == "student"
    assert card.train_config["ig_cache"] == str(folder / "igcache")


def test_pruning_and_any_storage_url(tmp_path):
    """A pruner that always prunes ends every trial after its first epoch; the storage is the URL given."""
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    study = run_search(
        tmp_path / "pruned", search(2), storage=url, pruner=optuna.pruners.ThresholdPruner(lower=1.01)
    )  # no accuracy reaches 101 %
    assert (tmp_path / "elsewhere.db").is_file() and not (tmp_path / "pruned" / "optuna.db").exists()
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert all(sorted(t.intermediate_values) == [1] for t in study.trials)
    assert all(
        len(read_history(tmp_path / "pruned" / "trials" / f"trial-{t.number}")) == 1 for t in study.trials
    )
    view = load_search(tmp_path / "pruned")
    assert view.state["storage"] == url and len(view.study().trials) == 2


def test_stopping_a_search_keeps_finished_trials(tmp_path):
    last = {}

    def stop_in_second_trial() -> bool:
        e = last.get("event")
        return e is not None and e.run == "trial-1"

    study = run_search(
        tmp_path / "s", search(3), report=lambda e: last.update(event=e), should_stop=stop_in_second_trial
    )
    states = [t.state for t in study.trials]
    assert (
        states[0] == optuna.trial.TrialState.COMPLETE and optuna.trial.TrialState.COMPLETE not in states[1:]
    )
    assert json.loads((tmp_path / "s" / SEARCH).read_text())["status"] == "stopped"
    resumed = run_search(tmp_path / "s", search(3))
    done = [t for t in resumed.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3 and done[0].number == 0


def test_passwords_stay_out_of_the_search_folder():
    assert (
        hide_password("postgresql://kd:s3cret@db.example:5432/optuna")
        == "postgresql://kd:***@db.example:5432/optuna"
    )
    assert hide_password("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
