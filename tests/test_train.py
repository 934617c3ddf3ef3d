"""kdviz.training: the schedule, what a run writes, stop, progress events, and bit-exact resume."""

from __future__ import annotations

import json
import math

import pytest
import torch

from kdviz.data import load_dataset
from kdviz.models import create_model
from kdviz.models.checkpoints import CARD, RESUME, WEIGHTS, ModelCard, load_model
from kdviz.training.loop import HISTORY, TrainConfig, TrainEvent, lr_at, read_history, train, train_indices

ARCH = "resnet20"
CFG = dict(epochs=2, batch_size=32, train_limit=160, eval_limit=80, lr=0.05, seed=3)  # 5 steps an epoch
STEPS = 5


# ------------------------------------------------------------------------------------- schedule


def test_lr_warmup_then_cosine_to_zero():
    base, total, warm = 0.1, 100, 10
    assert lr_at(0, total, warm, base) == pytest.approx(base / warm)
    assert lr_at(4, total, warm, base) == pytest.approx(base * 5 / warm)
    assert lr_at(warm - 1, total, warm, base) == pytest.approx(base)
    assert lr_at(warm, total, warm, base) == pytest.approx(base)  # the cosine starts at the top
    assert lr_at(55, total, warm, base) == pytest.approx(base / 2)  # half way through the decay
    assert lr_at(total, total, warm, base) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(total + 50, total, warm, base) == pytest.approx(0.0, abs=1e-12)  # never negative
    assert 0 < lr_at(total - 1, total, warm, base) < 0.01 * base
    lrs = [lr_at(s, total, warm, base) for s in range(total)]
    assert all(a <= b for a, b in zip(lrs[:warm], lrs[1:warm], strict=False))  # rises during warm-up
    assert all(a >= b for a, b in zip(lrs[warm:], lrs[warm + 1 :], strict=False))  # then only falls


def test_lr_without_warmup():
    assert lr_at(0, 10, 0, 1.0) == pytest.approx(1.0)
    assert lr_at(5, 10, 0, 1.0) == pytest.approx(0.5)
    assert lr_at(3, 10, 0, 1.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.3)))


def test_train_indices_are_a_fixed_sorted_subset():
    cfg = TrainConfig(train_limit=50, seed=1)
    a, b = train_indices(1000, cfg), train_indices(1000, cfg)
    assert len(a) == 50 and len(set(a.tolist())) == 50 and list(a) == sorted(a) and (a == b).all()
    assert not (a == train_indices(1000, TrainConfig(train_limit=50, seed=2))).all()
    assert len(train_indices(30, cfg)) == 30


def test_train_config_round_trip():
    cfg = TrainConfig(**CFG)
    assert TrainConfig.from_dict({**cfg.as_dict(), "unknown_key": 1}) == cfg


# ------------------------------------------------------------------------------------- training


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _fresh_model() -> torch.nn.Module:
    torch.manual_seed(1234)  # the same initial weights for every run
    return create_model(ARCH)


def _card(data) -> ModelCard:
    return ModelCard(
        arch=ARCH,
        num_classes=data.num_classes,
        class_names=list(data.class_names),
        dataset=data.source,
        mean=list(data.mean),
        std=list(data.std),
    )


@pytest.fixture(scope="module")
def run_a(digits, tmp_path_factory):
    """Two epochs, never interrupted."""
    run_dir = tmp_path_factory.mktemp("run_a")
    events: list[TrainEvent] = []
    model = _fresh_model()
    result = train(
        model,
        digits,
        TrainConfig(**CFG),
        run_dir=run_dir,
        card=_card(digits),
        callback=lambda e: events.append(e),
    )
    return model, result, events, run_dir


def test_training_writes_the_run_files(run_a):
    model, result, _, run_dir = run_a
    for name in (RESUME, WEIGHTS, CARD, HISTORY):
        assert (run_dir / name).is_file(), name
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    assert not result.stopped and result.resumed_from == 0
    assert [r.epoch for r in result.history] == [1, 2]
    history = json.loads((run_dir / HISTORY).read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert read_history(run_dir) == result.history
    for r in result.history:
        assert math.isfinite(r.train_loss) and 0 <= r.test_acc <= 1 and r.lr >= 0
    assert result.history[-1].lr < result.history[0].lr  # the schedule decays
    card = json.loads((run_dir / CARD).read_text())
    assert card["arch"] == ARCH and card["dataset"] == "digits"
    assert card["metrics"]["complete"] is True and card["metrics"]["epochs_done"] == 2
    assert card["metrics"]["test_accuracy"] == result.history[-1].test_acc
    assert card["train_config"]["train_limit"] == 160
    # the checkpoint holds the final weights
    loaded = load_model(run_dir)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value.cpu()), key


def test_training_learns_something(run_a):
    _, result, _, _ = run_a
    assert result.history[-1].train_loss < result.history[0].train_loss


def test_callback_events(run_a):
    _, _, events, _ = run_a
    kinds = [e.kind for e in events]
    assert kinds == (["step"] * STEPS + ["epoch"]) * 2 + ["done"]
    steps = [e for e in events if e.kind == "step"]
    assert [(e.epoch, e.step) for e in steps] == [(ep, s) for ep in (1, 2) for s in range(1, STEPS + 1)]
    assert all(e.steps == STEPS and e.epochs == 2 and math.isfinite(e.loss) for e in steps)
    fractions = [e.fraction for e in events]
    assert all(a <= b for a, b in zip(fractions, fractions[1:], strict=False)), fractions
    assert fractions[0] == pytest.approx(1 / (2 * STEPS))
    assert fractions[-1] == 1.0
    epoch_events = [e for e in events if e.kind == "epoch"]
    assert [e.record.epoch for e in epoch_events] == [1, 2]
    assert epoch_events[0].fraction == pytest.approx(0.5)
    assert len(events[-1].history) == 2 and events[-1].epoch == 2


@pytest.fixture(scope="module")
def run_b(digits, tmp_path_factory):
    """The same run, stopped at step 3 of epoch 2, then resumed in a new process-like call."""
    run_dir = tmp_path_factory.mktemp("run_b")
    state = {"last": None}

    def remember(event):
        state["last"] = event

    def stop_in_epoch_2():
        e = state["last"]
        return e is not None and e.kind == "step" and e.epoch == 2 and e.step == 3

    first = train(
        _fresh_model(),
        digits,
        TrainConfig(**CFG),
        run_dir=run_dir,
        card=_card(digits),
        callback=remember,
        should_stop=stop_in_epoch_2,
    )
    history_after_stop = json.loads((run_dir / HISTORY).read_text())
    card_after_stop = json.loads((run_dir / CARD).read_text())

    events: list[TrainEvent] = []
    model = create_model(ARCH)  # other initial weights: all must come from the resume file
    second = train(
        model,
        digits,
        TrainConfig(**CFG),
        run_dir=run_dir,
        card=_card(digits),
        callback=lambda e: events.append(e),
        resume=True,
    )
    return first, history_after_stop, card_after_stop, second, model, events, run_dir


def test_should_stop_keeps_only_finished_epochs(run_b):
    first, history_after_stop, card_after_stop, *_ = run_b
    assert first.stopped is True
    assert [r.epoch for r in first.history] == [1]
    assert [h["epoch"] for h in history_after_stop] == [1]
    assert card_after_stop["metrics"]["epochs_done"] == 1 and card_after_stop["metrics"]["complete"] is False


def test_resume_continues_from_the_last_finished_epoch(run_b, run_a):
    first, _, _, second, _, events, run_dir = run_b
    assert second.resumed_from == 1 and not second.stopped
    assert [r.epoch for r in second.history] == [1, 2]
    assert second.history[0] == first.history[0]  # the finished epoch's record is kept as it was
    assert [e.epoch for e in events if e.kind == "step"] == [2] * STEPS  # epoch 1 is not run again
    assert events[-1].kind == "done" and events[-1].fraction == 1.0
    assert [h["epoch"] for h in json.loads((run_dir / HISTORY).read_text())] == [1, 2]


def test_resumed_run_ends_with_bitwise_the_same_weights(run_a, run_b):
    model_a, result_a, *_ = run_a
    model_b, run_dir_b = run_b[4], run_b[6]
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert state_a.keys() == state_b.keys()
    differing = [k for k in state_a if not torch.equal(state_a[k], state_b[k])]
    assert not differing, f"{len(differing)} tensors differ, e.g. {differing[:3]}"
    # the same holds for the saved checkpoints and the metrics
    loaded = load_model(run_dir_b).model.state_dict()
    assert all(torch.equal(loaded[k], state_a[k]) for k in state_a)
    assert run_b[3].history[1].train_loss == result_a.history[1].train_loss
    assert run_b[3].history[1].test_acc == result_a.history[1].test_acc


def test_resume_of_a_finished_run_changes_nothing(run_a, digits):
    model_a, result_a, _, run_dir = run_a
    before = (run_dir / RESUME).read_bytes()
    model = create_model(ARCH)
    again = train(model, digits, TrainConfig(**CFG), run_dir=run_dir, card=_card(digits), resume=True)
    assert again.resumed_from == 2 and not again.stopped and again.history == result_a.history
    assert all(torch.equal(model.state_dict()[k], v) for k, v in model_a.state_dict().items())
    assert (run_dir / RESUME).read_bytes() == before


def test_stop_before_the_first_epoch_ends_leaves_nothing(digits, tmp_path):
    events: list[TrainEvent] = []
    result = train(
        _fresh_model(),
        digits,
        TrainConfig(**CFG),
        run_dir=tmp_path,
        card=_card(digits),
        callback=events.append,
        should_stop=lambda: True,
    )
    assert result.stopped and result.history == []
    assert [e.kind for e in events] == ["step", "done"]
    assert events[-1].fraction == 0.0
    assert not (tmp_path / RESUME).exists() and not (tmp_path / WEIGHTS).exists()
    assert read_history(tmp_path) == []


def test_without_a_card_only_resume_and_history_are_written(digits, tmp_path):
    cfg = TrainConfig(**{**CFG, "epochs": 1, "train_limit": 64, "eval_limit": 32})
    train(_fresh_model(), digits, cfg, run_dir=tmp_path)
    assert (tmp_path / RESUME).is_file() and (tmp_path / HISTORY).is_file()
    assert not (tmp_path / WEIGHTS).exists() and not (tmp_path / CARD).exists()
