"""kdviz.experiments.ablation and the ``ablate`` command: four arms × seeds on the built-in digits
(tiny), the study folder they write, the table, and resuming a stopped or killed study without
redoing finished runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from kdviz.experiments.ablation import (
    METRICS,
    PROBE_MAPS,
    STUDY,
    StudyConfig,
    StudyError,
    list_studies,
    load_study,
    markdown_table,
    open_or_create,
    run_name,
    run_study,
    summarise,
)
from kdviz.experiments.presets import PRESETS, configure, smoke
from kdviz.models.checkpoints import CARD, RESUME, WEIGHTS, load_model
from kdviz.training import CORE_ARMS as ARMS
from kdviz.training.loop import HISTORY

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT / "assets" / "digits_teacher"


def tiny(**overrides) -> StudyConfig:
    """Four arms × two seeds, 64 images, one epoch: the whole study in seconds."""
    train = dict(epochs=1, batch_size=32, hflip=False, subset=64, ig_steps=2, eval_limit=40, overlay_p=0.5)
    train.update(overrides.pop("train", {}))
    base = dict(
        dataset="digits",
        teacher=str(TEACHER),
        student="mnv2_student_4x_fast",
        student_kwargs={"width_mult": 0.5},
        seeds=[0, 1],
        train=train,
        probe=4,
        probe_steps=2,
        latency_seconds=0.1,
        test_limit=120,
    )
    return StudyConfig(**{**base, **overrides})


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("studies") / "tiny"
    events = []
    view = run_study(folder, tiny(), report=events.append)
    return view, events


def test_the_four_arms_write_the_study_folder(study):
    view, events = study
    folder = view.folder
    assert view.status == "done" and view.finished_runs == 8
    for name in (STUDY, "teacher_predictions.npy", "probe_indices.npy", "teacher_probe_maps.npy"):
        assert (folder / name).is_file(), name
    assert (folder / "igcache" / "index.json").is_file()
    state = json.loads((folder / STUDY).read_text())
    assert [(r["arm"], r["seed"]) for r in state["runs"]] == [(a, s) for s in (0, 1) for a in ARMS]
    assert all(r["status"] == "done" for r in state["runs"]) and state["subset_size"] == 64
    assert state["config"] == tiny().as_dict()
    for run in view.runs:
        assert run.folder == folder / "runs" / run_name(run.arm, run.seed)
        for name in (CARD, WEIGHTS, HISTORY, RESUME, METRICS, PROBE_MAPS):
            assert (run.folder / name).is_file(), (run.name, name)
        card = load_model(run.folder).card
        assert card.train_config["arm"] == run.arm and card.train_config["seed"] == run.seed
        assert card.teacher == str(TEACHER) and card.role == "student"
        assert bool(card.train_config["ig_cache"]) == (run.arm in ("ig", "kd+ig"))
        m = run.metrics
        assert m["wall_seconds"] > 0 and m["resumed_from_epoch"] == 0
        assert m["arm"] == run.arm and m["test_images"] == 120 and len(run.history) == 1
        assert 0 <= m["test_accuracy"] <= 1 and 0 <= m["teacher_agreement"] <= 1
        assert set(m["attribution"]) == {"spearman", "cosine", "top_k_iou", "ssim"}
        assert len(m["attribution_per_image"]["spearman"]) == 4
        assert np.load(run.folder / PROBE_MAPS).shape == (4, 32, 32)
    # the two seeds of an arm are different students
    w0, w1 = (load_model(r.folder).model.state_dict() for r in view.runs if r.arm == "kd+ig")
    assert not all(torch.equal(w0[k], w1[k]) for k in w0)
    stages = [e.stage for e in events]
    assert stages[-1] == "done" and "igcache" in stages and stages.count("metrics") == 8
    fractions = [e.fraction for e in events if e.stage in ("run", "metrics")]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_metrics_are_what_they_say(study):
    """Accuracy and agreement recomputed here from the checkpoints and the teacher's predictions."""
    from kdviz.data import load_dataset
    from kdviz.models.evaluate import predict

    view, _ = study
    digits = load_dataset("digits")
    teacher_pred = np.load(view.folder / "teacher_predictions.npy")
    run = view.runs[3]
    loaded = load_model(run.folder)
    preds = predict(loaded.model, digits.test, mean=loaded.card.mean, std=loaded.card.std, limit=120)
    assert run.metrics["test_accuracy"] == pytest.approx(preds.accuracy)
    assert run.metrics["teacher_agreement"] == pytest.approx(float((preds.predicted == teacher_pred).mean()))
    teacher = load_model(TEACHER)
    t = predict(teacher.model, digits.test, mean=teacher.card.mean, std=teacher.card.std, limit=120)
    assert np.array_equal(t.predicted, teacher_pred)
    assert view.state["teacher"]["test_accuracy"] == pytest.approx(t.accuracy)


def test_the_table_of_arms(study):
    view, _ = study
    rows = summarise(view)
    assert [r["arm"] for r in rows] == list(ARMS)
    by_arm = {r["arm"]: r for r in rows}
    for arm, row in by_arm.items():
        acc = [r.metrics["test_accuracy"] for r in view.runs if r.arm == arm]
        assert row["seeds done"] == 2 and row["of"] == 2
        assert row["accuracy"] == pytest.approx(np.mean(acc)) and row["accuracy std"] == pytest.approx(
            np.std(acc, ddof=1)
        )
        base = np.mean([r.metrics["test_accuracy"] for r in view.runs if r.arm == "baseline"])
        assert row["Δ vs baseline"] == pytest.approx(np.mean(acc) - base)
        assert row["teacher's accuracy kept"] == pytest.approx(
            np.mean(acc) / view.state["teacher"]["test_accuracy"]
        )
    teacher_params = load_model(TEACHER).card.stats["params"]
    student_params = load_model(view.runs[0].folder).card.stats["params"]
    assert by_arm["kd"]["compression ×"] == pytest.approx(teacher_params / student_params)
    assert by_arm["kd"]["latency ms"] > 0
    table = markdown_table(rows)
    assert table.count("\n") == 5 and "| kd+ig | 2/2 |" in table


def test_studies_are_listed_and_bad_ones_refused(study, tmp_path):
    view, _ = study
    assert [s.folder for s in list_studies(view.folder.parent)] == [view.folder]
    assert list_studies(tmp_path / "none") == []
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / STUDY).write_text("{not json")
    with pytest.raises(StudyError, match="cannot be read"):
        load_study(tmp_path / "broken")
    assert list_studies(tmp_path) == []  # an unreadable study is skipped, not a crash
    with pytest.raises(StudyError, match="other settings"):
        run_study(view.folder, tiny(seeds=[0, 1, 2]))
    with pytest.raises(ValueError, match="unknown arm"):
        tiny(arms=["kd", "xy"])
    with pytest.raises(ValueError, match="unknown training setting"):
        tiny(train={"learning_rate": 0.1})


def test_a_study_stored_before_a_setting_existed_opens_as_the_same_study(tmp_path):
    """kdviz gains a training setting (its default: what it did before); a study folder written by
    the older version, whose settings lack it, is the study asked for today, not "other settings"."""
    folder = tmp_path / "study"
    _, config, _ = open_or_create(folder, tiny())
    state = json.loads((folder / STUDY).read_text())
    for newer in ("muon_lr", "muon_momentum", "holdout"):
        del state["config"]["train"][newer]
    (folder / STUDY).write_text(json.dumps(state))
    _, reopened, _ = open_or_create(folder, tiny())
    assert reopened.as_dict() == config.as_dict() and reopened.train["muon_lr"] == 0.24
    with pytest.raises(StudyError, match="other settings"):
        open_or_create(folder, tiny(train={"muon_lr": 0.1}))  # a setting away from its default still counts


def test_a_stopped_study_resumes_without_redoing_finished_runs(tmp_path):
    """Stopped during the third run's second epoch; run again: the finished runs are left alone, the
    stopped run continues from its finished epoch, and the study completes."""
    folder = tmp_path / "study"
    config = tiny(arms=["baseline", "kd"], train={"epochs": 2})
    last = {}

    def report(e):
        last["event"] = e

    def stop_in_third_run():
        e = last.get("event")
        return (
            e is not None and e.run == "baseline-s1" and e.stage == "run" and "epoch 2/2, step 2" in e.message
        )

    view = run_study(folder, config, report=report, should_stop=stop_in_third_run)
    assert view.status == "stopped" and view.finished_runs == 2
    stopped = folder / "runs" / "baseline-s1"
    assert (stopped / RESUME).is_file() and not (stopped / METRICS).exists()
    first_epoch = json.loads((stopped / HISTORY).read_text())
    assert len(first_epoch) == 1
    done_before = {
        r.name: ((r.folder / METRICS).stat().st_mtime_ns, (r.folder / WEIGHTS).read_bytes())
        for r in view.runs
        if r.metrics
    }
    events = []
    view = run_study(folder, config, report=events.append)
    assert view.status == "done" and view.finished_runs == 4
    for name, (mtime, weights) in done_before.items():
        assert (folder / "runs" / name / METRICS).stat().st_mtime_ns == mtime
        assert (folder / "runs" / name / WEIGHTS).read_bytes() == weights
    trained = {e.run for e in events if e.stage == "run"}
    assert trained == {"baseline-s1", "kd-s1"}
    history = json.loads((stopped / HISTORY).read_text())
    assert history[0] == first_epoch[0] and len(history) == 2  # epoch 1 kept as it was, epoch 2 added


@pytest.mark.slow
def test_a_killed_ablate_command_resumes(tmp_path):
    """``python -m kdviz ablate`` killed with SIGKILL after its first finished run; the same command
    again finishes the study and leaves that run untouched."""
    env = {**os.environ, "KDVIZ_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "kdviz",
        "ablate",
        "--preset",
        "digits",
        "--smoke",
        "96",
        "--arms",
        "baseline,kd",
        "--seeds",
        "0",
        "--student",
        "mnv2_student_4x_fast",
        "--student-kwargs",
        '{"width_mult": 0.5}',
        "--name",
        "killed",
        "--json",
    ]
    folder = tmp_path / "home" / "studies" / "killed"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = folder / "runs" / "baseline-s0" / METRICS
    deadline = time.time() + 300
    while not first.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert first.is_file(), proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "timed out"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((folder / STUDY).read_text())["status"] == "running"  # killed: no chance to say so
    before = first.stat().st_mtime_ns
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert (
        out["status"] == "done"
        and out["runs_done"] == 2
        and [r["arm"] for r in out["arms"]] == ["baseline", "kd"]
    )
    assert first.stat().st_mtime_ns == before


def test_presets_and_overrides():
    assert set(PRESETS) == {"paper", "cpu", "study", "digits"}
    study = configure("study")
    assert study.student == "airnet_student_4x" and len(study.arms) == 7 and study.seeds == [0, 1, 2, 3, 4]
    assert study.train["recipe"] == "fast" and study.train["precision"] == "bfloat16"
    assert (study.train["at_beta"], study.train["overlay_p"], study.train["epochs"]) == (0.8, 0.1, 14)
    cpu = configure("cpu")
    assert cpu.teacher_arch == "resnet56" and cpu.teacher.endswith("resnet56-4bfd9763.th")
    assert cpu.student == "resnet20" and cpu.arms == list(ARMS) and len(cpu.seeds) == 3
    assert cpu.teacher_train["epochs"] >= 1 and cpu.train["subset"] and cpu.train["epochs"] <= 10
    paper = configure("paper")
    assert (
        paper.train["temperature"],
        paper.train["alpha"],
        paper.train["overlay_p"],
        paper.train["overlay_lambda"],
    ) == (2.5, 0.01, 0.1, 0.5)
    assert (
        paper.student == "mnv2_student_4x"
        and paper.teacher_arch == "mobilenetv2_cifar"
        and paper.train["epochs"] == 100
    )
    custom = configure(
        "digits", smoke_images=64, student="resnet20", alpha=0.9, seeds=[4, 5, 6], finetune=False
    )
    assert (
        custom.student == "resnet20" and custom.student_kwargs == {}
    )  # the preset's kwargs were its student's
    assert custom.train["alpha"] == 0.9 and custom.train["subset"] == 64 and custom.train["epochs"] == 1
    assert (
        custom.seeds == [4, 5, 6] and custom.teacher_train is None
    )  # what the command line says wins over --smoke
    shrunk = configure("cpu", smoke_images=128, epochs=2)
    assert shrunk.seeds == [0, 1] and shrunk.train["epochs"] == 2 and shrunk.train["subset"] == 128
    assert shrunk.teacher_train["train_limit"] == 128 and smoke(cpu).teacher_train["train_limit"] == 256


def test_a_bfloat16_study_is_refused_before_any_set_up_on_a_cpu_without_it(tmp_path, monkeypatch):
    """The committed study runs in bfloat16; on a CPU that would only emulate it the part must
    stop at once, not after the teacher's 33-minute IG cache (as it did on an AVX2-only EPYC)."""
    from kdviz.core import machine

    monkeypatch.setattr(machine, "native_bfloat16", lambda: False)
    events = []
    with pytest.raises(machine.PrecisionError, match="no native bfloat16") as refused:
        run_study(tmp_path / "bf16", tiny(train={"precision": "bfloat16"}), report=events.append)
    assert "study 'bf16' trains in bfloat16" in str(refused.value)  # not "train in float32": another study
    assert "train in float32" not in str(refused.value)
    assert events == []  # nothing was prepared: no data, no teacher, no IG cache
    assert not (tmp_path / "bf16" / "runs").exists()
