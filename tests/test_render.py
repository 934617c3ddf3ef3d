"""kdviz.attribution.render: maps to pictures (heat maps, blends, masks, PNG, Plotly) without losing
the numbers."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from kdviz.attribution import render
from kdviz.attribution.render import COLORMAPS, SIGNS


@pytest.fixture
def attr() -> np.ndarray:
    """A signed (3, H, W) map with a known layout: positive top-left, negative bottom-right."""
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.01, size=(3, 12, 16)).astype(np.float32)
    a[:, :4, :4] += 1.0
    a[:, -4:, -4:] -= 2.0
    return a


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)


def test_reduce_channels_each_sign(attr):
    total = attr.sum(0)
    np.testing.assert_allclose(render.reduce_channels(attr, "absolute"), np.abs(attr).sum(0), rtol=1e-6)
    np.testing.assert_allclose(render.reduce_channels(attr, "positive"), np.clip(total, 0, None), rtol=1e-6)
    np.testing.assert_allclose(render.reduce_channels(attr, "negative"), np.clip(-total, 0, None), rtol=1e-6)
    np.testing.assert_allclose(render.reduce_channels(attr, "both"), total, rtol=1e-6)
    # absolute is |.| before the channel sum: opposite channels do not cancel.
    cancel = np.stack([np.ones((2, 2)), -np.ones((2, 2))]).astype(np.float32)
    assert (render.reduce_channels(cancel, "absolute") == 2).all()
    assert (render.reduce_channels(cancel, "both") == 0).all()
    # (H, W) maps pass through the sign mode.
    np.testing.assert_array_equal(render.reduce_channels(total, "negative"), np.clip(-total, 0, None))
    assert render.reduce_channels(attr, "positive")[-1, -1] == 0
    assert render.reduce_channels(attr, "negative")[0, 0] == 0
    with pytest.raises(ValueError, match="absolute"):
        render.reduce_channels(attr, "sideways")
    with pytest.raises(ValueError, match="shape"):
        render.reduce_channels(np.zeros(5), "absolute")


@pytest.mark.parametrize("sign", list(SIGNS))
def test_heatmap_blend_masked_shapes_and_ranges(attr, image, sign):
    heat = render.heatmap(attr, sign=sign)
    assert heat.shape == (12, 16, 3) and heat.dtype == np.uint8
    assert heat.min() >= 0 and heat.max() <= 255 and heat.std() > 0
    out = render.blend(image, attr, sign=sign)
    assert out.shape == (12, 16, 3) and out.dtype == np.uint8
    assert not np.array_equal(out, image), "a blend at strength 0.6 shows the heat map"
    m = render.masked(image, attr, percent=25, sign=sign)
    assert m.shape == image.shape and m.dtype == np.uint8


def test_blend_strength_zero_is_the_image_and_one_is_the_heat_where_attributed(attr, image):
    np.testing.assert_array_equal(render.blend(image, attr, strength=0.0), image)
    full = render.blend(image, attr, strength=1.0)
    heat = render.heatmap(attr)
    # Where the map is at full scale the blend is the heat map alone.
    np.testing.assert_allclose(full[-2, -2].astype(int), heat[-2, -2].astype(int), atol=1)


@pytest.mark.parametrize("percent", [0, 10, 25, 50, 100])
def test_masked_keeps_exactly_k_percent(image, percent):
    rng = np.random.default_rng(2)
    a = rng.normal(size=(3, 10, 10)).astype(np.float32)
    a[:, :, :5] = 0.0  # many ties: still exactly k pixels
    m = render.masked(image[:10, :10], a, percent=percent, fill=7)
    mask = render.top_k_mask(render.reduce_channels(a), percent)
    assert mask.sum() == round(100 * percent / 100)
    np.testing.assert_array_equal(m[mask], image[:10, :10][mask])
    assert (m[~mask] == 7).all()
    # The kept pixels are the most attributed ones.
    if 0 < percent < 100:
        red = render.reduce_channels(a)
        assert red[mask].min() >= red[~mask].max()


@pytest.mark.parametrize("cmap", COLORMAPS)
@pytest.mark.parametrize("sign", list(SIGNS))
def test_every_sign_and_colour_map_renders(attr, image, cmap, sign):
    heat = render.heatmap(attr, sign=sign, cmap=cmap)
    assert heat.shape == (12, 16, 3) and heat.dtype == np.uint8
    assert len({tuple(p) for p in heat.reshape(-1, 3)}) > 1
    assert render.blend(image, attr, sign=sign, cmap=cmap).shape == (12, 16, 3)
    fig = render.figure(render.reduce_channels(attr, sign), sign=sign, cmap=cmap)
    assert len(fig.data[0].colorscale) == 11


def test_signed_colours_follow_the_sign(attr):
    heat = render.heatmap(attr, sign="both").astype(int)
    pos, neg = heat[1, 1], heat[-2, -2]  # RdBu_r: red is positive, blue negative
    assert pos[0] > pos[2] and neg[2] > neg[0]


def test_shared_scale_is_one_scale_for_both_maps():
    a = np.ones((8, 8), np.float32)
    b = 4 * np.ones((8, 8), np.float32)
    s = render.shared_scale([a, b])
    assert isinstance(s, float) and s == pytest.approx(
        np.percentile(np.concatenate([a.ravel(), b.ravel()]), 99)
    )
    ha, hb = render.heatmap(a, scale=s), render.heatmap(b, scale=s)
    assert not np.array_equal(ha, hb), "on one scale the weaker map is drawn fainter"
    # Each on its own scale they look the same.
    np.testing.assert_array_equal(render.heatmap(a), render.heatmap(b))
    assert render.normalise(b, scale=s).max() == 1.0
    assert render.normalise(a, scale=s).max() == pytest.approx(a.max() / s)
    # An all-zero map does not divide by zero.
    z = render.heatmap(np.zeros((4, 4), np.float32))
    assert z.shape == (4, 4, 3) and len({tuple(p) for p in z.reshape(-1, 3)}) == 1


def test_to_png_round_trips(attr):
    heat = render.heatmap(attr)
    back = np.asarray(Image.open(io.BytesIO(render.to_png(heat))))
    np.testing.assert_array_equal(back, heat)
    big = np.asarray(Image.open(io.BytesIO(render.to_png(heat, upscale=3))))
    assert big.shape == (36, 48, 3)
    np.testing.assert_array_equal(big[::3, ::3], heat)
    assert render.to_pil(heat).size == (16, 12)


def test_figure_holds_the_map_values(attr):
    import plotly.graph_objects as go

    m = render.reduce_channels(attr, "both")
    fig = render.figure(m, title="teacher", sign="both", scale=2.5)
    assert isinstance(fig, go.Figure)
    hm = fig.data[0]
    assert isinstance(hm, go.Heatmap)
    np.testing.assert_array_equal(np.asarray(hm.z, dtype=np.float32), m)
    assert hm.zmin == -2.5 and hm.zmax == 2.5 and hm.zmid == 0
    assert fig.layout.title.text == "teacher"
    unsigned = render.figure(render.reduce_channels(attr))
    assert unsigned.data[0].zmin == 0.0 and unsigned.data[0].zmax > 0
