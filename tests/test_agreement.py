"""kdviz.attribution.agreement, .faithfulness and .comparison: do two maps agree, are they
faithful, and the teacher-against-student comparison on the built-in digits assets.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from kdviz.attribution import AttributionOptions, agreement, comparison
from kdviz.attribution.faithfulness import deletion_insertion, randomized_copy
from kdviz.data import load_dataset
from kdviz.models.checkpoints import load_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def teacher():
    return load_model(ROOT / "assets" / "digits_teacher")


@pytest.fixture(scope="module")
def student():
    return load_model(ROOT / "assets" / "digits_student")


def smooth_map(seed: int = 0, size: int = 16) -> np.ndarray:
    """A map with structure (a blob) and texture, all values distinct."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    blob = np.exp(-((yy - size / 3) ** 2 + (xx - size / 2) ** 2) / (2 * (size / 5) ** 2))
    return (blob + 0.05 * rng.random((size, size))).astype(np.float32)


# --------------------------------------------------------------------------- agreement scores


def test_identical_maps_agree_perfectly():
    m = smooth_map()
    scores = agreement.compare_maps(m, m.copy())
    assert scores.spearman == pytest.approx(1.0)
    assert scores.cosine == pytest.approx(1.0)
    assert scores.top_k_iou == pytest.approx(1.0)
    assert scores.ssim == pytest.approx(1.0)
    assert set(scores.as_dict()) == {"spearman", "cosine", "top_k_iou", "ssim"}
    # A rescaled copy orders and shapes the pixels the same.
    scaled = agreement.compare_maps(m, 7 * m + 0)
    assert scaled.spearman == pytest.approx(1.0) and scaled.cosine == pytest.approx(1.0)
    assert scaled.top_k_iou == 1.0 and scaled.ssim == pytest.approx(1.0)


def test_negated_and_permuted_maps_score_lower():
    m = smooth_map()
    same = agreement.compare_maps(m, m)
    neg = agreement.compare_maps(m, -m)
    assert neg.spearman == pytest.approx(-1.0)
    assert neg.cosine == pytest.approx(-1.0)
    assert neg.top_k_iou < 0.05
    assert neg.ssim < same.ssim

    perm = np.random.default_rng(1).permutation(m.ravel()).reshape(m.shape)
    shuffled = agreement.compare_maps(m, perm)
    for name in ("spearman", "cosine", "top_k_iou", "ssim"):
        assert getattr(shuffled, name) < getattr(same, name) - 0.1, name
    assert abs(shuffled.spearman) < 0.3

    shifted = agreement.compare_maps(m, np.roll(m, 4, axis=1))
    assert shuffled.spearman < shifted.spearman < 1.0, (
        "a shifted blob agrees more than noise, less than itself"
    )


def test_top_k_iou_by_hand():
    a = np.arange(100, dtype=np.float32).reshape(10, 10)  # top 10 %: the last row
    b = a.copy()
    b[9, :5] = -1  # half of a's top row leaves b's top 10 %; b's top 10 % is 9,5..9 and 8,5..9
    assert agreement.top_k_iou(a, b, 10) == pytest.approx(5 / 15)
    assert agreement.top_k_iou(a, a, 50) == 1.0


def test_constant_map_has_no_rank_correlation():
    """A constant map has no ordering: Spearman is undefined and reported as NaN (not 0, not an error)."""
    m = smooth_map()
    flat = np.full_like(m, 0.3)
    assert math.isnan(agreement.spearman(m, flat))
    assert math.isnan(agreement.spearman(flat, m))
    assert math.isnan(agreement.cosine(m, np.zeros_like(m)))
    assert agreement.cosine(flat, flat) == pytest.approx(1.0)
    assert math.isfinite(agreement.ssim(m, flat))


def test_compare_batches():
    a = np.stack([smooth_map(i) for i in range(3)])
    out = agreement.compare_batches(a, a[::-1].copy())
    assert len(out) == 3
    assert out[1].spearman == pytest.approx(1.0)  # the middle one is compared with itself
    assert out[0].spearman < 1.0
    with pytest.raises(ValueError, match="shape"):
        agreement.compare_batches(a, a[:2])


def test_ssim_on_small_maps():
    """SSIM's window fits a map smaller than 7 pixels (the Grad-CAM of a tiny model)."""
    m = smooth_map(size=6)
    assert agreement.ssim(m, m) == pytest.approx(1.0)
    assert agreement.ssim(m, m[::-1].copy()) < 1.0


# --------------------------------------------------------------------------- faithfulness


def test_deletion_insertion_curves(student, digits):
    model = student.model.eval()
    x = student.preprocess(digits.test.images[:3])
    maps = np.abs(np.random.default_rng(0).normal(size=(3, 32, 32))).astype(np.float32)
    with torch.no_grad():
        probs = model(x).softmax(1)
        target = probs.argmax(1).numpy()
        p_image = probs.numpy()[np.arange(3), target]
        p_base = model(torch.zeros_like(x)).softmax(1).numpy()[np.arange(3), target]

    curves = deletion_insertion(model, x, maps, target, steps=8)
    assert curves.fractions.shape == (9,)
    assert curves.fractions[0] == 0 and curves.fractions[-1] == 1 and np.all(np.diff(curves.fractions) > 0)
    assert curves.deletion.shape == (3, 9) and curves.insertion.shape == (3, 9)
    for c in (curves.deletion, curves.insertion):
        assert np.all((c >= 0) & (c <= 1))
    np.testing.assert_allclose(curves.deletion[:, 0], p_image, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(curves.insertion[:, 0], p_base, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(curves.deletion[:, -1], p_base, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(curves.insertion[:, -1], p_image, rtol=1e-4, atol=1e-6)
    assert curves.deletion_auc.shape == (3,) and np.all(
        (curves.deletion_auc >= 0) & (curves.deletion_auc <= 1)
    )
    assert curves.insertion_auc.shape == (3,)

    # A custom baseline is used at the ends too.
    grey = torch.full((1, 3, 1, 1), 0.7)
    custom = deletion_insertion(model, x, maps, target, baseline=grey, steps=2)
    with torch.no_grad():
        p_grey = model(grey.expand_as(x)).softmax(1).numpy()[np.arange(3), target]
    np.testing.assert_allclose(custom.insertion[:, 0], p_grey, rtol=1e-4, atol=1e-6)


def test_deletion_follows_the_map_order():
    """Deleting along the map removes the pixels the model uses first (a model that reads one pixel)."""

    class OnePixel(torch.nn.Module):
        def forward(self, x):
            v = x[:, 0, 2, 3]
            return torch.stack([v * 5, -v * 5], 1)

    model = OnePixel()
    x = torch.ones(1, 3, 8, 8)
    good = np.zeros((1, 8, 8), np.float32)
    good[0, 2, 3] = 1.0
    bad = -good  # that pixel last
    g = deletion_insertion(model, x, good, np.array([0]), steps=4)
    b = deletion_insertion(model, x, bad, np.array([0]), steps=4)
    assert g.deletion[0, 1] < 0.6 and b.deletion[0, 1] > 0.99
    assert g.deletion_auc[0] < b.deletion_auc[0]
    assert g.insertion_auc[0] > b.insertion_auc[0]


def test_randomized_copy_changes_the_weights_and_leaves_the_original(student):
    model = student.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clone = randomized_copy(model, seed=0)
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), f"{k} of the original changed"
    cs = clone.state_dict()
    changed = [
        k for k, v in before.items() if v.is_floating_point() and v.numel() > 1 and not torch.equal(cs[k], v)
    ]
    weights = [k for k in before if k.endswith("weight") and before[k].dim() > 1]
    assert set(weights) <= set(changed), "every conv and linear weight is re-initialised"
    assert not clone.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(clone(x), model.eval()(x))
    # Seeded: the same seed gives the same random model.
    again = randomized_copy(model, seed=0)
    assert all(torch.equal(again.state_dict()[k], cs[k]) for k in cs)


# --------------------------------------------------------------------------- compare


def test_choose_images(digits):
    split = digits.test
    cls = comparison.choose_images(split, "class", label=3, n=10, seed=0)
    assert len(cls) == 10 and (split.labels[cls] == 3).all() and np.all(np.diff(cls) > 0)
    all_threes = comparison.choose_images(split, "class", label=3, n=10_000)
    assert np.array_equal(all_threes, np.flatnonzero(split.labels == 3))

    r1 = comparison.choose_images(split, "random", n=12, seed=5)
    r2 = comparison.choose_images(split, "random", n=12, seed=5)
    r3 = comparison.choose_images(split, "random", n=12, seed=6)
    assert len(r1) == 12 and len(set(r1.tolist())) == 12
    assert r1.min() >= 0 and r1.max() < len(split)
    assert np.array_equal(r1, r2) and not np.array_equal(r1, r3)

    tp = split.labels.copy()
    sp = split.labels.copy()
    sp[[4, 9, 100]] = (sp[[4, 9, 100]] + 1) % 10
    assert comparison.choose_images(split, "disagree", teacher_pred=tp, student_pred=sp).tolist() == [
        4,
        9,
        100,
    ]
    assert len(comparison.choose_images(split, "disagree", n=2, teacher_pred=tp, student_pred=sp)) == 2
    assert len(comparison.choose_images(split, "disagree", teacher_pred=tp, student_pred=tp)) == 0
    with pytest.raises(ValueError, match="predictions"):
        comparison.choose_images(split, "disagree")
    with pytest.raises(ValueError, match="class, random or disagree"):
        comparison.choose_images(split, "best")


def test_compare_teacher_and_student_on_digits(teacher, student, digits):
    split = digits.test
    indices = np.array([0, 1, 2, 3])
    options = AttributionOptions(method="ig", steps=4, target="true")
    seen = []
    result = comparison.compare(
        teacher, student, split, indices, options, batch=2, progress=lambda f, text: seen.append(f)
    )
    assert np.array_equal(result.indices, indices)
    assert np.array_equal(result.labels, split.labels[indices])
    assert result.teacher_maps.shape == (4, 32, 32) and result.student_maps.shape == (4, 32, 32)
    assert (result.teacher_maps >= 0).all() and (result.student_maps >= 0).all()
    assert not np.allclose(result.teacher_maps, result.student_maps)
    assert set(result.agreement) == {"spearman", "cosine", "top_k_iou", "ssim"}
    for name, values in result.agreement.items():
        assert values.shape == (4,), name
        assert np.isfinite(values).all(), name
    a = result.agreement
    assert ((a["spearman"] >= -1) & (a["spearman"] <= 1)).all()
    assert ((a["cosine"] >= 0) & (a["cosine"] <= 1 + 1e-9)).all()  # maps of |IG| are non-negative
    assert ((a["top_k_iou"] >= 0) & (a["top_k_iou"] <= 1)).all()
    assert ((a["ssim"] >= -1) & (a["ssim"] <= 1)).all()
    # Both trained models look at the digit's strokes: their maps correlate (measured: cosine 0.60-0.71,
    # Spearman 0.36-0.45 on these four images at 4 steps).
    assert a["cosine"].min() > 0.3 and a["spearman"].min() > 0.1
    assert seen and seen[-1] == pytest.approx(1.0) and all(0 <= f <= 1 for f in seen)
    rows = result.table(digits.class_names)
    assert len(rows) == 4 and rows[0]["class"] == digits.class_names[split.labels[0]]
    worst = result.most_different("spearman", k=2)
    assert len(worst) == 2 and a["spearman"][worst[0]] == a["spearman"].min()
