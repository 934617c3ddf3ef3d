"""The CIFAR-10 teacher and student that ship in assets/: they load, match their cards, and score
what their cards say on the real test folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import CIFAR10, ROOT, require_shared
from kdviz.data import load_dataset
from kdviz.models import load_model, model_stats, predict, spread_indices

ASSETS = ROOT / "assets"
PAIR = ("cifar10_teacher", "cifar10_student")
SLICE = 1000  # test images, spread over every class

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", PAIR)
def test_asset_loads_and_matches_its_card(name):
    folder = ASSETS / name
    loaded = load_model(folder)
    card = loaded.card
    assert card.dataset.startswith("cifar10") and card.num_classes == 10
    assert card.class_names[3] == "cat" and card.image_size == 32
    assert card.train_config["recipe"] == "fast"
    assert card.metrics["complete"] and card.metrics["stored_dtype"] == "float16"
    assert abs(card.metrics["test_accuracy_stored"] - card.test_accuracy) <= 0.002
    assert card.test_accuracy_tta >= card.test_accuracy - 0.01
    assert "cpu" in card.metrics["machine"]
    assert (folder / "model.safetensors").stat().st_size < 5 * 2**20
    history = json.loads((folder / "history.json").read_text())
    assert len(history) == card.train_config["epochs"] == card.metrics["epochs_done"]
    assert model_stats(loaded.model, 32).params == card.stats["params"]


def test_student_is_at_least_four_times_smaller_and_names_its_teacher():
    teacher, student = (load_model(ASSETS / n).card for n in PAIR)
    assert teacher.stats["params"] / student.stats["params"] >= 4.0
    assert student.role == "student" and "cifar10_teacher" in (student.teacher or "")
    assert student.train_config["arm"] == "kd"


@pytest.fixture(scope="module")
def cifar_test():
    require_shared(CIFAR10)
    return load_dataset(f"cifar10:{CIFAR10}")


@pytest.mark.slow
@pytest.mark.parametrize("name", PAIR)
def test_asset_reaches_its_card_accuracy_on_a_slice(name, cifar_test):
    loaded = load_model(ASSETS / name)
    preds = predict(loaded.model, cifar_test.test, mean=loaded.card.mean, std=loaded.card.std, limit=SLICE)
    stated = loaded.card.test_accuracy
    # 1,000 images: the standard error of an accuracy near 0.9 is about 0.01
    assert preds.accuracy >= stated - 0.03, (preds.accuracy, stated)
    assert len(np.unique(preds.labels)) == 10 and len(spread_indices(len(cifar_test.test), SLICE)) == SLICE
