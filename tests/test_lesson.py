"""The lesson's numbers: IG's path, its running sum against Captum, soft targets, the KD loss, the overlay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kdviz.attribution import make_baseline
from kdviz.data.loader import normalize, to_float
from kdviz.teaching import lesson

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def teacher():
    from kdviz.models.checkpoints import load_model

    return load_model(ROOT / "assets" / "digits_teacher")


@pytest.fixture(scope="module")
def digit(teacher):
    """The first digits test image, normalised for the teacher, and its predicted class."""
    from kdviz.data import load_dataset

    image = load_dataset("digits").test.images[0]
    x = teacher.preprocess(image)
    with torch.no_grad():
        target = int(teacher.model.eval()(x).argmax())
    return image, x, target


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5)
    ).eval()


def photo() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------------- the path


@pytest.mark.parametrize("name", ["black", "zero", "blur", "noise"])
def test_the_strip_starts_at_the_baseline_and_ends_at_the_image(name):
    image = photo()
    x = normalize(to_float(image[None]), MEAN, STD)
    base = make_baseline(x, name, MEAN, STD)
    alphas, frames = lesson.path_strip(x, base, MEAN, STD, frames=8)
    assert alphas[0] == 0.0 and alphas[-1] == 1.0 and len(frames) == 8 and np.all(np.diff(alphas) > 0)
    assert frames.dtype == np.uint8 and frames.shape == (8, 8, 8, 3)
    assert np.abs(frames[-1].astype(int) - image).max() <= 1
    assert np.array_equal(frames[0], lesson.to_uint8(base, MEAN, STD)[0])
    assert np.abs(frames[0].astype(int) - image).mean() > 10  # the first frame is not the image
    if name == "black":
        assert frames[0].max() == 0


def test_a_middle_frame_lies_between_the_baseline_and_the_image():
    image = photo()
    x = normalize(to_float(image[None]), MEAN, STD)
    _, frames = lesson.path_strip(x, make_baseline(x, "black", MEAN, STD), MEAN, STD, frames=3)  # α = 0, ½, 1
    assert np.abs(frames[1].astype(float) - image / 2).max() <= 1


def test_scores_along_the_path_end_at_the_image_and_the_baseline(digit, teacher):
    _, x, target = digit
    base = make_baseline(x, "black", teacher.card.mean, teacher.card.std)
    scores = lesson.path_scores(teacher.model, x, base, target, points=11)
    with torch.no_grad():
        at_image, at_base = teacher.model(x)[0, target].item(), teacher.model(base)[0, target].item()
    assert scores.alphas.tolist() == pytest.approx(np.linspace(0, 1, 11).tolist())
    assert scores.logits[-1] == pytest.approx(at_image, abs=1e-4)
    assert scores.logits[0] == pytest.approx(at_base, abs=1e-4)
    assert np.all((scores.probs >= 0) & (scores.probs <= 1))


# ----------------------------------------------------------------------------------- the running sum


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_trapezoid", "riemann_middle"])
def test_the_running_sum_ends_at_captums_map(rule):
    from captum.attr import IntegratedGradients

    model = small_model()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    base = torch.zeros_like(x)
    walked = lesson.running_sum(model, x, base, target=2, steps=12, rule=rule)
    captum = (
        IntegratedGradients(model).attribute(x, baselines=base, target=2, n_steps=12, method=rule)[0].numpy()
    )
    # Captum's trapezoid weights add up to (n − 1)/n; kdviz scales them back to one, lesson and front
    # door alike
    captum *= 12 / 11 if rule == "riemann_trapezoid" else 1.0
    assert walked.steps == 12 and walked.partial.shape == (12, 3, 8, 8)
    assert walked.weights.sum() == pytest.approx(1.0)
    assert np.all(np.diff(walked.alphas) >= 0)
    np.testing.assert_allclose(walked.map, captum, atol=1e-6)
    assert walked.totals[-1] == pytest.approx(float(walked.map.sum()), abs=1e-5)
    assert not np.allclose(walked.partial[5], walked.map)  # half-way is not the end


def test_completeness_numbers_are_the_maps_sum_and_the_change_in_score(digit, teacher):
    _, x, target = digit
    base = make_baseline(x, "zero", teacher.card.mean, teacher.card.std)
    walked = lesson.running_sum(teacher.model, x, base, target, steps=16)
    with torch.no_grad():
        change = (teacher.model(x)[0, target] - teacher.model(base)[0, target]).item()
    done = walked.completeness()
    assert done.score_change == pytest.approx(change, abs=1e-4)
    assert done.map_sum == pytest.approx(float(walked.map.sum()), rel=1e-5)
    assert done.gap == pytest.approx(done.map_sum - change, abs=1e-4)
    assert done.relative_gap == pytest.approx(abs(done.gap) / abs(change), rel=1e-6)


@pytest.fixture(scope="module")
def reference(digit, teacher):
    """Captum's Gauss–Legendre map of the digit with 128 steps (the page uses 256; 128 keeps the test
    short)."""
    _, x, target = digit
    base = make_baseline(x, "zero", teacher.card.mean, teacher.card.std)
    return lesson.captum_map(teacher.model, x, base, target, steps=128)


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_middle"])
def test_more_steps_approach_captums_map_and_close_the_gap(digit, teacher, reference, rule):
    """On the shipped teacher (a ReLU6 network) the map settles steadily as the steps grow; the
    completeness gap does not fall step by step (it swings around zero: on this image, with the
    midpoint rule, |gap| is 0.4 at 2 steps, 2.3 at 8 and 1.0 at 32), but it ends small."""
    _, x, target = digit
    base = make_baseline(x, "zero", teacher.card.mean, teacher.card.std)
    points = lesson.convergence(teacher.model, x, base, target, [2, 8, 32, 128], rule, reference)
    assert [p.steps for p in points] == [2, 8, 32, 128]
    errors = [p.error for p in points]
    gaps = [abs(p.gap) for p in points]
    assert errors[0] > errors[1] > errors[2] > errors[3]
    assert errors[3] < 0.05 < 0.3 < errors[0]
    with torch.no_grad():
        change = (teacher.model(x)[0, target] - teacher.model(base)[0, target]).item()
    assert gaps[3] < 0.03 * abs(change)
    assert gaps[3] < max(gaps[:2]) / 5


def test_convergence_reports_each_step_count_and_the_reference(digit, teacher, reference):
    """The page's bar: one report per step count, counted in steps (the reference's 256 first when
    it is computed here), ending at the total."""
    _, x, target = digit
    base = make_baseline(x, "zero", teacher.card.mean, teacher.card.std)
    seen: list[tuple[int, int]] = []
    lesson.convergence(
        teacher.model,
        x,
        base,
        target,
        [2, 8],
        "gausslegendre",
        reference,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert seen == [(2, 10), (10, 10)]
    seen.clear()
    lesson.convergence(
        teacher.model, x, base, target, [2], "gausslegendre", progress=lambda d, t: seen.append((d, t))
    )
    assert seen == [(lesson.REFERENCE_STEPS, lesson.REFERENCE_STEPS + 2), (lesson.REFERENCE_STEPS + 2,) * 2]


def test_ig_needs_two_steps():
    with pytest.raises(ValueError, match="at least 2 steps"):
        lesson.rule_points(1)


def test_map_error_is_zero_for_the_same_map_and_one_for_zeros():
    m = np.random.default_rng(0).standard_normal((3, 4, 4))
    assert lesson.map_error(m, m) == 0.0
    assert lesson.map_error(np.zeros_like(m), m) == pytest.approx(1.0)


# ---------------------------------------------------------------------------- soft targets and the KD loss


LOGITS = np.array([6.0, 2.5, 1.0, -1.0, 0.0, 3.0, -2.0, 0.5, 1.5, -0.5])


def test_softened_probabilities_sum_to_one_and_flatten_as_the_temperature_grows():
    temperatures = [1.0, 1.5, 2.5, 4.0, 8.0, 20.0]
    probs = [lesson.soften(LOGITS, t) for t in temperatures]
    for p in probs:
        assert p.sum() == pytest.approx(1.0, abs=1e-12)
        assert np.all(p > 0) and p.argmax() == 0  # softening never changes the answer
    entropies = [lesson.entropy(p) for p in probs]
    assert all(a < b for a, b in zip(entropies, entropies[1:], strict=False))
    tops = [p[0] for p in probs]
    assert all(a > b for a, b in zip(tops, tops[1:], strict=False))
    assert entropies[-1] > 0.9 * np.log2(10)  # T = 20: close to uniform


def test_temperature_one_is_the_plain_softmax_and_a_bad_temperature_is_refused():
    np.testing.assert_allclose(
        lesson.soften(LOGITS, 1.0), torch.softmax(torch.tensor(LOGITS), 0).numpy(), rtol=1e-12
    )
    with pytest.raises(ValueError, match="temperature must be positive"):
        lesson.soften(LOGITS, 0.0)


def test_entropy_of_one_hot_and_uniform_answers():
    assert lesson.entropy(np.eye(10)[3]) == 0.0
    assert lesson.entropy(np.full(8, 1 / 8)) == pytest.approx(3.0)


def test_the_kd_terms_are_the_training_loss_taken_apart():
    from kdviz.training import kd_loss

    student = np.array([2.0, 0.5, -1.0, 0.0])
    terms = lesson.kd_terms(student, LOGITS[:4], label=1, temperature=3.0)
    s = torch.tensor(student[None], dtype=torch.float32)
    t, y = torch.tensor(LOGITS[None, :4], dtype=torch.float32), torch.tensor([1])
    for alpha in (0.0, 0.01, 0.5, 1.0):
        assert terms.total(alpha) == pytest.approx(
            float(kd_loss(s, t, y, temperature=3.0, alpha=alpha)), rel=1e-5
        )
    assert terms.hard == pytest.approx(-np.log(torch.softmax(s[0], 0)[1].item()), rel=1e-5)
    assert terms.soft > 0
    same = lesson.kd_terms(LOGITS[:4], LOGITS[:4], label=0, temperature=3.0)
    assert same.soft == pytest.approx(
        0.0, abs=1e-6
    )  # a student that answers as the teacher has nothing to learn


# ----------------------------------------------------------------------------------- the paper's trick


def examples():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    maps = rng.random((6, 8, 8)).astype(np.float32)
    return images, maps


def test_the_overlay_with_p_one_changes_every_image_and_with_p_zero_none():
    images, maps = examples()
    out, applied = lesson.overlay_examples(images, maps, 1.0, 0.5, seed=0)
    assert applied.all() and out.shape == images.shape and out.dtype == np.uint8
    assert all(not np.array_equal(a, b) for a, b in zip(out, images, strict=False))
    out, applied = lesson.overlay_examples(images, maps, 0.0, 0.5, seed=0)
    assert not applied.any() and np.array_equal(out, images)


def test_the_overlay_is_the_papers_blend():
    images, maps = examples()
    plain, _ = lesson.overlay_examples(images, maps, 1.0, 0.0, seed=0)
    assert np.array_equal(plain, images)  # λ = 0: the image as it is
    only_map, _ = lesson.overlay_examples(images, maps, 1.0, 1.0, seed=0)
    # λ = 1: the min-max normalised map, grey in all three channels
    for m, o in zip(maps, only_map, strict=False):
        assert o[..., 0].min() == 0 and o[..., 0].max() == 255
        assert np.array_equal(o[..., 0], o[..., 1]) and np.array_equal(o[..., 1], o[..., 2])
        assert o[..., 0][np.unravel_index(m.argmax(), m.shape)] == 255  # the map's peak is white
        assert o[..., 0][np.unravel_index(m.argmin(), m.shape)] == 0  # its lowest pixel black


def test_the_same_seed_draws_the_same_images():
    images, maps = examples()
    a, applied_a = lesson.overlay_examples(images, maps, 0.5, 0.5, seed=7)
    b, applied_b = lesson.overlay_examples(images, maps, 0.5, 0.5, seed=7)
    assert np.array_equal(a, b) and np.array_equal(applied_a, applied_b)
    draws = {tuple(lesson.overlay_examples(images, maps, 0.5, 0.5, seed=s)[1]) for s in range(8)}
    assert len(draws) > 1  # another seed, another roll
