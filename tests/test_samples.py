"""Sample photos: real photographs from scikit-image, loaded offline, prepared exactly as an upload."""

from __future__ import annotations

import io
import socket

import numpy as np
import pytest

from kdviz.data.images import ImageError, from_array, read_image
from kdviz.data.samples import SAMPLES, load_sample, sample_names


@pytest.fixture
def no_network(monkeypatch):
    """Every attempt to open a connection fails, as on a machine with no network."""

    def refuse(*args, **kwargs):
        raise OSError("network is switched off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_the_offered_photos_include_the_ones_the_issue_names():
    assert {"cat", "astronaut", "rocket", "coffee"} <= set(sample_names())
    assert len(sample_names()) >= 6
    assert sample_names() == list(SAMPLES)


@pytest.mark.parametrize("name", list(SAMPLES))
def test_every_sample_loads_offline_as_rgb(name, no_network):
    with pytest.raises(OSError, match="switched off"):  # the block is real
        socket.create_connection(("example.org", 80))
    image = load_sample(name)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3
    assert min(image.shape[:2]) >= 128  # a photograph, not an icon
    assert image.std() > 10  # and not a blank frame


def test_colour_photos_keep_their_colour_and_grey_ones_get_three_equal_channels():
    cat = load_sample("cat").astype(int)
    assert np.abs(cat[..., 0] - cat[..., 2]).mean() > 5  # a tabby cat is not grey
    coins = load_sample("coins")
    assert np.array_equal(coins[..., 0], coins[..., 1]) and np.array_equal(coins[..., 1], coins[..., 2])


def test_an_unknown_sample_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown sample photo 'dog'.*cat"):
        load_sample("dog")


def test_a_sample_is_prepared_as_an_upload_would_be():
    photo = load_sample("cat")  # 451 × 300: wider than tall
    prepared = from_array(photo, size=32, name="cat")
    assert prepared.model_input.shape == (32, 32, 3) and prepared.model_input.dtype == np.uint8
    assert prepared.notes == ["cropped to its central 300×300 square", "resized from 300×300 to 32×32"]
    assert prepared.original_size == (451, 300)

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="PNG")
    uploaded = read_image(buf.getvalue(), size=32, name="cat.png")
    assert np.array_equal(uploaded.model_input, prepared.model_input)
    assert uploaded.notes == prepared.notes


def test_a_square_sample_is_only_resized():
    prepared = from_array(load_sample("astronaut"), size=48)
    assert prepared.model_input.shape == (48, 48, 3)
    assert prepared.notes == ["resized from 512×512 to 48×48"]


def test_from_array_converts_grey_and_transparent_arrays_and_refuses_others():
    grey = from_array(np.full((40, 40), 200, np.uint8), size=32)
    assert grey.model_input.shape == (32, 32, 3) and "L converted to RGB" in grey.notes
    rgba = np.zeros((32, 32, 4), np.uint8)  # fully transparent: shown on white
    assert from_array(rgba, size=32).model_input.min() == 255
    with pytest.raises(ImageError, match="must be uint8"):
        from_array(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ImageError, match="must be uint8"):
        from_array(np.zeros((32, 32, 2), np.uint8))
