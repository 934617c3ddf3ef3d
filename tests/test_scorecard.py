"""kdviz.bench.scorecard: the headline table's ratios, the Pareto front, and predictions cached per
model and data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdviz.bench import scorecard
from kdviz.bench.scorecard import Entry, cached_predictions, headline, pareto_front

ROOT = Path(__file__).resolve().parents[1]


def test_headline_ratios_are_against_the_teacher():
    rows = headline(
        [
            Entry(
                "s",
                "student",
                params=500,
                size_bytes=2 * 2**20,
                macs=5_000_000,
                accuracy=0.9,
                latency_ms=2.0,
                latency_batch_ms=20.0,
                onnx_ms=0.5,
            ),
            Entry(
                "t",
                "teacher",
                params=2000,
                size_bytes=8 * 2**20,
                macs=80_000_000,
                accuracy=0.96,
                latency_ms=10.0,
                latency_batch_ms=200.0,
                onnx_ms=1.0,
            ),
        ],
        batch=64,
    )
    student, teacher = rows  # the order of the entries is kept; the teacher is found by its role
    assert student["compression ×"] == 4.0 and teacher["compression ×"] == 1.0
    assert student["teacher's accuracy kept"] == pytest.approx(0.9 / 0.96)
    assert student["speed-up × (batch 1)"] == pytest.approx(5.0)
    assert student["latency ms (batch 64)"] == 20.0 and student["speed-up × (batch 64)"] == pytest.approx(
        10.0
    )
    assert student["ONNX speed-up × (batch 1)"] == pytest.approx(2.0)
    assert student["ONNX Runtime over eager ×"] == pytest.approx(4.0)
    assert teacher["ONNX Runtime over eager ×"] == pytest.approx(10.0)
    assert student["size MB"] == 2.0 and student["MMACs"] == 5.0 and student["parameters"] == 500


def test_headline_leaves_gaps_where_nothing_was_measured():
    rows = headline(
        [Entry("t", "teacher", 100, 400, 1000, accuracy=0.0), Entry("s", "student", 50, 200, 500)]
    )
    student = rows[1]
    for column in (
        "accuracy",
        "teacher's accuracy kept",
        "latency ms (batch 1)",
        "speed-up × (batch 1)",
        "latency ms (batch)",
        "ONNX speed-up × (batch 1)",
        "ONNX Runtime over eager ×",
    ):
        assert student[column] is None, column
    assert rows[0]["teacher's accuracy kept"] is None  # 0 / 0 is not a share
    assert headline([]) == []


def test_headline_without_a_teacher_compares_with_the_first_entry():
    rows = headline([Entry("a", "student", 300, 0, 0), Entry("b", "student", 100, 0, 0)])
    assert [r["compression ×"] for r in rows] == [1.0, 3.0]


def test_pareto_front():
    latency = [1.0, 2.0, 3.0, 2.5, 1.0]
    accuracy = [0.80, 0.90, 0.95, 0.85, 0.70]
    # (2.5, 0.85) is beaten by (2.0, 0.90); (1.0, 0.70) by (1.0, 0.80) at equal speed
    assert pareto_front(latency, accuracy).tolist() == [True, True, True, False, False]
    assert pareto_front([1.0, 1.0], [0.5, 0.5]).tolist() == [True, True]  # ties beat no one


@pytest.fixture
def student_and_digits(tmp_path, monkeypatch):
    from kdviz.data import load_dataset
    from kdviz.models.checkpoints import load_model

    monkeypatch.setenv("KDVIZ_CACHE", str(tmp_path / "cache"))
    return load_model(ROOT / "assets" / "digits_student"), load_dataset("digits")


def test_cached_predictions_are_computed_once_per_model_and_data(student_and_digits, monkeypatch, tmp_path):
    from kdviz.models.evaluate import predict

    loaded, data = student_and_digits
    first = cached_predictions(loaded, data, "test", 100)
    direct = predict(loaded.model, data.test, mean=loaded.card.mean, std=loaded.card.std, limit=100)
    np.testing.assert_array_equal(first.logits, direct.logits)
    assert len(first.labels) == 100 and first.accuracy == direct.accuracy

    def no_model(*args, **kwargs):
        raise AssertionError("the cached predictions should have been read from disk")

    monkeypatch.setattr(scorecard, "predict", no_model)
    again = cached_predictions(loaded, data, "test", 100)
    np.testing.assert_array_equal(again.logits, first.logits)
    with pytest.raises(AssertionError, match="read from disk"):  # another slice is another key
        cached_predictions(loaded, data, "test", 50)
    assert len(list((tmp_path / "cache" / "eval").glob("*.npz"))) == 1


def test_a_damaged_cache_file_is_computed_again(student_and_digits, tmp_path):
    loaded, data = student_and_digits
    first = cached_predictions(loaded, data, "test", 40)
    (path,) = (tmp_path / "cache" / "eval").glob("*.npz")
    path.write_bytes(b"not an npz file")
    again = cached_predictions(loaded, data, "test", 40)
    np.testing.assert_array_equal(again.logits, first.logits)
    assert np.load(path)["logits"].shape == first.logits.shape  # and written back whole
