"""kdviz.attribution: the one front door to Captum's methods, its baselines and its cache.

* kdviz's Integrated Gradients is Captum's (same baseline, steps, rule and target give the same maps);
* completeness holds on a real pretrained model and real images (the reported delta is the gap);
* every method and baseline gives finite maps of the right shape for the right target;
* a cache hit gives the same maps without running the model, in memory and from disk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import CIFAR10, pretrained, require_shared
from kdviz.attribution import (
    BASELINES,
    IG_RULES,
    METHODS,
    AttributionCache,
    AttributionOptions,
    attribute,
    make_baseline,
    rule_correction,
)
from kdviz.data import IMAGENET_MEAN, IMAGENET_STD, load_dataset
from kdviz.data.loader import denormalize, normalize, to_float
from kdviz.models.checkpoints import load_model
from kdviz.models.fingerprint import model_fingerprint

ROOT = Path(__file__).resolve().parents[1]
RESNET20_TH = pretrained("resnet20")
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class TinyNet(nn.Module):
    """A small CNN (two convolutions) so method and cache tests take milliseconds."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU()
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        return self.head(self.features(x))


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TinyNet().eval()


def tiny_images(n: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1000 + seed)  # not the noise baseline's draw (seed 0)
    return normalize(torch.rand(n, 3, size, size, generator=gen), MEAN, STD)


class CountingHook:
    """Counts forward passes of a module (a forward hook: the weights, hence the fingerprint, are
    untouched)."""

    def __init__(self, model: nn.Module) -> None:
        self.calls = 0
        self.handle = model.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        self.calls += 1


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def student():
    return load_model(ROOT / "assets" / "digits_student")


@pytest.fixture(scope="module")
def digit_batch(digits, student):
    """Four test digits of four different classes, normalised for the student, and their labels."""
    labels = digits.test.labels
    idx = np.array([int(np.flatnonzero(labels == c)[0]) for c in (0, 3, 5, 8)])
    x = student.preprocess(digits.test.images[idx])
    return x, torch.as_tensor(labels[idx])


# --------------------------------------------------------------------------- Captum reference


@pytest.mark.parametrize(
    "baseline,rule,steps", [("zero", "gausslegendre", 8), ("black", "riemann_trapezoid", 6)]
)
def test_ig_equals_captum_reference(student, digit_batch, baseline, rule, steps):
    from captum.attr import IntegratedGradients

    model, card = student.model.eval(), student.card
    x = digit_batch[0][:3]
    result = attribute(
        model,
        x,
        method="ig",
        steps=steps,
        rule=rule,
        baseline=baseline,
        target=2,
        mean=card.mean,
        std=card.std,
        cache=False,
    )
    assert (result.target == 2).all()

    base = make_baseline(x, baseline, card.mean, card.std)
    reference = (
        IntegratedGradients(model)
        .attribute(x, baselines=base, target=torch.full((3,), 2), n_steps=steps, method=rule)
        .detach()
        .numpy()
    )
    reference *= rule_correction(steps, rule)  # Captum's trapezoid weights add up to (n − 1)/n, see below
    rel = np.linalg.norm(result.maps - reference) / np.linalg.norm(reference)
    assert rel < 1e-4, f"kdviz IG differs from Captum's by {rel:.2e} (relative)"
    # Per image too: no image of the batch is mixed up with another.
    for i in range(3):
        rel_i = np.linalg.norm(result.maps[i] - reference[i]) / np.linalg.norm(reference[i])
        assert rel_i < 1e-4
    # And a different target gives a different map (the target really reaches Captum).
    other = attribute(
        model,
        x,
        method="ig",
        steps=steps,
        rule=rule,
        baseline=baseline,
        target=7,
        mean=card.mean,
        std=card.std,
        cache=False,
    )
    assert not np.allclose(other.maps, result.maps)


@pytest.mark.parametrize("rule", sorted(IG_RULES))
def test_every_rule_is_exact_on_a_linear_model(rule):
    """For F(x) = w·x the gradient is w everywhere, so IG is w·(x − x') whatever the points: any
    shortfall is in the weights. Captum's trapezoid weights add up to (n − 1)/n; kdviz's to one."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))
    x = torch.randn(2, 3, 4, 4)
    result = attribute(
        model,
        x,
        method="ig",
        steps=7,
        rule=rule,
        baseline="zero",
        target=1,
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        cache=False,
    )
    exact = (model[1].weight[1].detach().view(3, 4, 4) * x).numpy()
    np.testing.assert_allclose(result.maps, exact, rtol=1e-4, atol=1e-5)
    assert np.abs(result.delta).max() < 1e-4


# --------------------------------------------------------------------------- completeness, real data


@pytest.mark.slow
def test_completeness_resnet20_on_real_cifar10():
    """IG's completeness axiom on the pretrained ResNet-20 and eight real CIFAR-10 test images.

    Measured here (zero baseline = the normalisation's mean colour, Gauss–Legendre): the relative gap
    |sum(map) − (F(x) − F(baseline))| / |F(x) − F(baseline)| for the first test image of the classes
    airplane..horse was median 0.052 at 16 steps, 0.021 at 32 and 0.011 at 64 (max 0.055). So at 64
    steps we assert median < 0.05 and max < 0.15: room for BLAS differences, not for a broken integral.
    """
    require_shared(CIFAR10)
    require_shared(RESNET20_TH)
    from kdviz.models.checkpoints import load_model

    model = load_model(RESNET20_TH, "resnet20").model.eval()
    images = np.stack(
        [np.asarray(Image.open(CIFAR10 / "test" / c / "0000.jpg").convert("RGB")) for c in CIFAR_CLASSES[:8]]
    )
    assert images.shape == (8, 32, 32, 3)
    x = normalize(to_float(images), IMAGENET_MEAN, IMAGENET_STD)
    result = attribute(
        model,
        x,
        method="ig",
        steps=64,
        baseline="zero",
        target="pred",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        cache=False,
    )

    # The scores reported are the model's logits of the target at the image and at the baseline.
    with torch.no_grad():
        logits = model(x).numpy()
        base_logits = model(torch.zeros_like(x)).numpy()
    rows = np.arange(8)
    assert np.array_equal(result.target, logits.argmax(1))
    np.testing.assert_allclose(result.score, logits[rows, result.target], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.baseline_score, base_logits[rows, result.target], rtol=1e-5, atol=1e-5)

    # Consistency: delta is exactly the completeness gap of the returned maps.
    gap = result.maps.reshape(8, -1).sum(1) - (result.score - result.baseline_score)
    np.testing.assert_allclose(np.abs(gap), np.abs(result.delta), rtol=1e-4, atol=1e-4)
    # Completeness: the gap is small against what the map has to explain.
    rel = result.relative_delta
    assert np.isfinite(rel).all()
    assert np.median(rel) < 0.05, f"median relative delta {np.median(rel):.4f} (per image {np.round(rel, 4)})"
    assert rel.max() < 0.15, f"relative delta per image {np.round(rel, 4)}"


# --------------------------------------------------------------------------- methods and targets


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_shape_finite_and_targets(student, digit_batch, method):
    model, card = student.model, student.card
    x, labels = digit_batch
    n, c, h, w = x.shape
    fast = dict(steps=4, samples=4, window=8, stride=8)
    with torch.no_grad():
        pred = model.eval()(x).argmax(1).numpy()

    r = attribute(model, x, method=method, target="pred", mean=card.mean, std=card.std, cache=False, **fast)
    assert r.maps.shape == ((n, 1, h, w) if method == "gradcam" else (n, c, h, w))
    assert r.maps.dtype == np.float32
    assert np.isfinite(r.maps).all()
    assert np.abs(r.maps).sum() > 0, "an all-zero map says nothing"
    assert np.array_equal(r.target, pred)
    assert r.logits.shape == (n, 10) and np.allclose(r.probs.sum(1), 1.0, atol=1e-5)
    assert (r.delta is not None) == (method == "ig")

    # Predictions of the trained student on these digits are not all one class, so "true" is a real test.
    shuffled = torch.as_tensor(labels.numpy()[::-1].copy())
    r_true = attribute(
        model,
        x,
        method=method,
        target="true",
        labels=shuffled,
        mean=card.mean,
        std=card.std,
        cache=False,
        **fast,
    )
    assert np.array_equal(r_true.target, shuffled.numpy())

    r_k = attribute(model, x, method=method, target=6, mean=card.mean, std=card.std, cache=False, **fast)
    assert np.array_equal(r_k.target, np.full(n, 6))
    assert np.isfinite(r_k.maps).all()

    with pytest.raises(ValueError, match="label"):
        attribute(model, x, method=method, target="true", mean=card.mean, std=card.std, cache=False, **fast)


def test_target_true_differs_from_pred_when_labels_differ():
    model, x = tiny_model(), tiny_images(2)
    a = attribute(model, x, method="saliency", target=1, mean=MEAN, std=STD, cache=False)
    b = attribute(model, x, method="saliency", target="true", labels=[1, 1], mean=MEAN, std=STD, cache=False)
    c = attribute(model, x, method="saliency", target="true", labels=[4, 4], mean=MEAN, std=STD, cache=False)
    np.testing.assert_array_equal(a.maps, b.maps)
    assert not np.allclose(a.maps, c.maps)


def test_unknown_method_baseline_rule_and_bad_target_are_refused():
    model, x = tiny_model(), tiny_images(1)
    with pytest.raises(ValueError) as err:
        AttributionOptions(method="lime")
    assert "lime" in str(err.value) and all(m in str(err.value) for m in METHODS)
    with pytest.raises(ValueError) as err:
        attribute(model, x, method="deeplift", mean=MEAN, std=STD, cache=False)
    assert all(m in str(err.value) for m in METHODS)
    with pytest.raises(ValueError) as err:
        AttributionOptions(baseline="white")
    assert "white" in str(err.value) and all(b in str(err.value) for b in BASELINES)
    with pytest.raises(ValueError) as err:
        AttributionOptions(rule="simpson")
    assert "gausslegendre" in str(err.value)
    with pytest.raises(ValueError, match="steps"):
        AttributionOptions(steps=0)
    with pytest.raises(ValueError, match="outside 0..9"):
        attribute(model, x, method="saliency", target=10, mean=MEAN, std=STD, cache=False)
    with pytest.raises(ValueError, match="unknown baseline"):
        make_baseline(x, "white", MEAN, STD)


# --------------------------------------------------------------------------- baselines


@pytest.mark.parametrize("baseline", list(BASELINES))
def test_every_baseline_gives_a_consistent_ig(baseline):
    model, x = tiny_model(), tiny_images(2)
    r = attribute(
        model,
        x,
        method="ig",
        steps=8,
        baseline=baseline,
        mean=MEAN,
        std=STD,
        data_mean=(0.2, 0.3, 0.4),
        cache=False,
    )
    assert r.maps.shape == (2, 3, 16, 16) and np.isfinite(r.maps).all()
    assert np.abs(r.maps).sum() > 0
    gap = r.maps.reshape(2, -1).sum(1) - (r.score - r.baseline_score)
    np.testing.assert_allclose(gap, r.delta, rtol=1e-4, atol=1e-5)
    if baseline != "multi":
        base = make_baseline(x, baseline, MEAN, STD, data_mean=(0.2, 0.3, 0.4))
        assert base.shape == x.shape and torch.isfinite(base).all()
        with torch.no_grad():
            expected = model(base).gather(1, torch.as_tensor(r.target)[:, None])[:, 0].numpy()
        np.testing.assert_allclose(r.baseline_score, expected, rtol=1e-5, atol=1e-6)


def test_baselines_in_pixel_space():
    x = tiny_images(2)
    black = make_baseline(x, "black", MEAN, STD)
    assert torch.allclose(denormalize(black, MEAN, STD), torch.zeros_like(x), atol=1e-6)
    assert torch.equal(make_baseline(x, "zero", MEAN, STD), torch.zeros_like(x))
    mean = make_baseline(x, "mean", MEAN, STD, data_mean=(0.2, 0.3, 0.4))
    pix = denormalize(mean, MEAN, STD)
    assert torch.allclose(pix[:, :, 3, 5], torch.tensor([0.2, 0.3, 0.4]).expand(2, 3), atol=1e-6)

    blur = make_baseline(x, "blur", MEAN, STD)
    assert blur.shape == x.shape

    def tv(t: torch.Tensor) -> torch.Tensor:  # total variation: what a blur removes
        return (t[..., 1:, :] - t[..., :-1, :]).abs().mean() + (t[..., 1:] - t[..., :-1]).abs().mean()

    assert tv(blur) < 0.5 * tv(x), "the blurred baseline keeps the image's edges"

    n1 = make_baseline(x, "noise", MEAN, STD, seed=3)
    n2 = make_baseline(x, "noise", MEAN, STD, seed=3)
    n3 = make_baseline(x, "noise", MEAN, STD, seed=4)
    assert torch.equal(n1, n2)
    assert not torch.equal(n1, n3)
    pix = denormalize(n1, MEAN, STD)
    assert pix.min() >= -1e-6 and pix.max() <= 1 + 1e-6, "noise is drawn in pixel space [0, 1]"

    model = tiny_model()
    a = attribute(model, x, method="ig", steps=4, baseline="noise", seed=3, mean=MEAN, std=STD, cache=False)
    b = attribute(model, x, method="ig", steps=4, baseline="noise", seed=3, mean=MEAN, std=STD, cache=False)
    c = attribute(model, x, method="ig", steps=4, baseline="noise", seed=4, mean=MEAN, std=STD, cache=False)
    np.testing.assert_array_equal(a.maps, b.maps)
    assert not np.allclose(a.maps, c.maps)


# --------------------------------------------------------------------------- cache


def test_cache_hit_skips_the_model_in_memory_and_on_disk(tmp_path):
    model, x = tiny_model(), tiny_images(3)
    counter = CountingHook(model)
    cache = AttributionCache(tmp_path)

    first = attribute(model, x, method="ig", steps=6, mean=MEAN, std=STD, cache=cache)
    assert counter.calls > 0
    assert not first.cached.any()
    assert list(tmp_path.rglob("*.npz")), "nothing was written to the disk cache"

    before = counter.calls
    second = attribute(model, x, method="ig", steps=6, mean=MEAN, std=STD, cache=cache)
    assert counter.calls - before == 0, "a cache hit ran the model"
    assert second.cached.all()
    for name in ("maps", "target", "logits", "score", "baseline_score", "delta"):
        np.testing.assert_array_equal(getattr(second, name), getattr(first, name))

    # Another process (a new cache object) on the same folder reads the disk.
    fresh = AttributionCache(tmp_path)
    before = counter.calls
    third = attribute(model, x, method="ig", steps=6, mean=MEAN, std=STD, cache=fresh)
    assert counter.calls - before == 0
    assert third.cached.all() and fresh.hits == 3
    np.testing.assert_array_equal(third.maps, first.maps)
    np.testing.assert_array_equal(third.delta, first.delta)

    # An option that changes the map misses.
    before = counter.calls
    other = attribute(model, x, method="ig", steps=7, mean=MEAN, std=STD, cache=cache)
    assert counter.calls > before
    assert not other.cached.any()

    # A batch half known, half new: only the new images are computed, in the right places.
    y = torch.cat([x[:1], tiny_images(1, seed=9), x[2:]])
    mixed = attribute(model, y, method="ig", steps=6, mean=MEAN, std=STD, cache=cache)
    assert mixed.cached.tolist() == [True, False, True]
    np.testing.assert_array_equal(mixed.maps[[0, 2]], first.maps[[0, 2]])
    alone = attribute(model, y[1:2], method="ig", steps=6, mean=MEAN, std=STD, cache=False)
    np.testing.assert_allclose(mixed.maps[1], alone.maps[0], rtol=1e-5, atol=1e-7)
    counter.handle.remove()


def test_cache_ignores_options_the_method_does_not_use(tmp_path):
    model, x = tiny_model(), tiny_images(2)
    counter = CountingHook(model)
    cache = AttributionCache(tmp_path)
    a = attribute(model, x, method="saliency", steps=4, baseline="zero", mean=MEAN, std=STD, cache=cache)
    before = counter.calls
    b = attribute(
        model,
        x,
        method="saliency",
        steps=64,
        baseline="blur",
        rule="riemann_left",
        mean=MEAN,
        std=STD,
        cache=cache,
    )
    assert counter.calls == before and b.cached.all()
    np.testing.assert_array_equal(a.maps, b.maps)
    # ... but a different target or another model's weights miss.
    c = attribute(model, x, method="saliency", target=3, mean=MEAN, std=STD, cache=cache)
    assert not c.cached.any()
    other_model = tiny_model(seed=1)
    d = attribute(other_model, x, method="saliency", mean=MEAN, std=STD, cache=cache)
    assert not d.cached.any()
    # target="true" keys on the label: the same image with another label is another entry.
    e = attribute(model, x, method="saliency", target="true", labels=[1, 2], mean=MEAN, std=STD, cache=cache)
    f = attribute(model, x, method="saliency", target="true", labels=[1, 5], mean=MEAN, std=STD, cache=cache)
    assert f.cached.tolist() == [True, False]
    assert f.target.tolist() == [1, 5]
    assert not np.allclose(e.maps[1], f.maps[1])
    counter.handle.remove()


def test_model_fingerprint_follows_the_weights():
    model = tiny_model()
    fp = model_fingerprint(model)
    assert fp == model_fingerprint(tiny_model()), "same weights, same fingerprint"
    with torch.no_grad():
        model.head[2].weight[0, 0] += 1e-3
    assert model_fingerprint(model) != fp
    with torch.no_grad():
        model.head[2].weight[0, 0] -= 1e-3
    # Buffers count too (BatchNorm statistics change what the model computes).
    bn = nn.Sequential(nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2))
    fp_bn = model_fingerprint(bn)
    bn.train()(torch.randn(4, 3, 5, 5))
    assert model_fingerprint(bn) != fp_bn
