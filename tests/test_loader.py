"""kdviz.data.loader: uint8 NHWC to normalised NCHW batches, augmentations that keep maps aligned."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdviz.data.base import IMAGENET_MEAN, IMAGENET_STD, ImageSplit
from kdviz.data.loader import (
    Augment,
    denormalize,
    iterate_batches,
    normalize,
    num_batches,
    random_crop_flip,
    to_float,
)


def _split(n: int = 23, size: int = 8) -> ImageSplit:
    """Image i is filled with the value i (so a batch tells which images it holds); label i % 10."""
    images = np.zeros((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        images[i] = i
        images[i, 0, 0] = (i, 255 - i, 7)  # and one pixel with distinct channels
    return ImageSplit(images, (np.arange(n) % 10).astype(np.int64))


# ------------------------------------------------------------------------------------ conversion


def test_to_float_is_nchw_in_unit_range():
    images = np.zeros((2, 4, 5, 3), dtype=np.uint8)
    images[1, 2, 3] = (255, 51, 0)
    x = to_float(images)
    assert x.shape == (2, 3, 4, 5) and x.dtype == torch.float32
    assert x[1, :, 2, 3].tolist() == pytest.approx([1.0, 0.2, 0.0])
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    # a tensor gives the same as the array, and the input is not modified in place
    t = torch.from_numpy(images.copy())
    assert torch.equal(to_float(t), x)
    assert torch.equal(t, torch.from_numpy(images))


def test_to_float_accepts_read_only_arrays():
    import warnings

    images = np.full((1, 2, 2, 3), 51, dtype=np.uint8)
    images.setflags(write=False)  # as PIL and memory-mapped arrays come
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "not writable" warning either
        x = to_float(images)
    assert torch.allclose(x, torch.full((1, 3, 2, 2), 0.2))
    assert not images.flags.writeable and int(images[0, 0, 0, 0]) == 51


def test_normalize_denormalize_round_trip():
    x = torch.rand(4, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    z = normalize(x, IMAGENET_MEAN, IMAGENET_STD)
    # channel 0 of a mean-valued image is 0 after normalisation
    assert torch.allclose(
        normalize(torch.full((1, 3, 1, 1), 0.485), IMAGENET_MEAN, IMAGENET_STD)[0, 0], torch.zeros(1, 1)
    )
    assert not torch.allclose(z, x)
    assert torch.allclose(z[:, 1], (x[:, 1] - 0.456) / 0.224, atol=1e-6)
    assert torch.allclose(denormalize(z, IMAGENET_MEAN, IMAGENET_STD), x, atol=1e-6)


# ---------------------------------------------------------------------------------- augmentation


def test_augment_active():
    assert Augment().active
    assert Augment(crop_padding=0, hflip=True).active
    assert Augment(crop_padding=2, hflip=False).active
    assert not Augment(crop_padding=0, hflip=False).active


def test_random_crop_flip_keeps_shape_and_range():
    x = torch.rand(16, 3, 10, 12, generator=torch.Generator().manual_seed(1))
    out, extras = random_crop_flip(x, Augment(4, True), torch.Generator().manual_seed(2))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert extras == []
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.equal(out, x)  # something was done


def test_no_crop_no_flip_is_identity():
    x = torch.rand(8, 3, 7, 7, generator=torch.Generator().manual_seed(3))
    extra = torch.rand(8, 1, 7, 7)
    out, (e,) = random_crop_flip(
        x, Augment(crop_padding=0, hflip=False), torch.Generator().manual_seed(0), [extra]
    )
    assert torch.equal(out, x)
    assert torch.equal(e, extra)


def _windows(img: torch.Tensor, pad: int) -> list[tuple[int, int, bool, torch.Tensor]]:
    """Every crop and flip of one (C, H, W) image that random_crop_flip may produce."""
    c, h, w = img.shape
    padded = torch.nn.functional.pad(img, (pad, pad, pad, pad))
    out = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            win = padded[:, dy : dy + h, dx : dx + w]
            out.append((dy, dx, False, win))
            out.append((dy, dx, True, win.flip(2)))
    return out


def test_each_output_is_a_crop_of_the_zero_padded_image_or_its_mirror():
    pad = 2
    x = torch.rand(12, 3, 6, 6, generator=torch.Generator().manual_seed(4)) + 0.1  # no zeros in the image
    out, _ = random_crop_flip(x, Augment(pad, True), torch.Generator().manual_seed(5))
    flips, offsets = set(), set()
    for i in range(len(x)):
        hits = [(dy, dx, f) for dy, dx, f, win in _windows(x[i], pad) if torch.equal(win, out[i])]
        assert hits, f"output {i} is not a crop/flip of its input"
        flips.add(hits[0][2])
        offsets.add(hits[0][:2])
    assert flips == {False, True}  # both happen over 12 images
    assert len(offsets) > 1  # offsets differ per image


@pytest.mark.parametrize("seed", range(25))
def test_extras_stay_aligned_with_the_image(seed):
    gen = torch.Generator().manual_seed(1000 + seed)
    x = torch.rand(6, 3, 9, 11, generator=gen)
    first = x[:, :1].clone()  # an "attribution map" equal to channel 0
    two = x[:, 1:].clone()  # extras may have other channel counts
    out, (e1, e2) = random_crop_flip(x, Augment(3, True), torch.Generator().manual_seed(seed), [first, two])
    assert e1.shape == first.shape and e2.shape == two.shape
    assert torch.equal(e1, out[:, :1])
    assert torch.equal(e2, out[:, 1:])


def test_same_generator_seed_same_augmentation():
    x = torch.rand(10, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    a, _ = random_crop_flip(x, Augment(), torch.Generator().manual_seed(7))
    b, _ = random_crop_flip(x, Augment(), torch.Generator().manual_seed(7))
    c, _ = random_crop_flip(x, Augment(), torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# ----------------------------------------------------------------------------------- batches


def _collect(split, **kw):
    batches = list(iterate_batches(split, 5, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), **kw))
    return batches, torch.cat([idx for _, _, idx in batches])


def test_iterate_batches_indices_map_to_labels_and_images():
    split = _split()
    batches, order = _collect(split, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert [len(y) for _, y, _ in batches] == [5, 5, 5, 5, 3]
    for x, y, idx in batches:
        assert x.shape == (len(idx), 3, 8, 8) and x.dtype == torch.float32
        assert torch.equal(y, torch.from_numpy(split.labels[idx.numpy()]))
        pixels = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        assert np.array_equal(pixels, split.images[idx.numpy()])
    assert sorted(order.tolist()) == list(range(len(split)))  # every index once
    assert order.tolist() != list(range(len(split)))  # and it was shuffled


def test_iterate_batches_normalises_with_mean_and_std():
    split = _split(4)
    ((x, _, idx),) = list(iterate_batches(split, 8, mean=IMAGENET_MEAN, std=IMAGENET_STD))
    expected = normalize(to_float(split.images), IMAGENET_MEAN, IMAGENET_STD)
    assert torch.allclose(x, expected, atol=1e-6)
    assert idx.tolist() == [0, 1, 2, 3]


def test_unshuffled_order_is_the_data_set_order():
    _, order = _collect(_split())
    assert order.tolist() == list(range(23))


def test_shuffle_is_reproducible_with_a_seeded_generator():
    split = _split()
    _, a = _collect(split, shuffle=True, generator=torch.Generator().manual_seed(42))
    _, b = _collect(split, shuffle=True, generator=torch.Generator().manual_seed(42))
    _, c = _collect(split, shuffle=True, generator=torch.Generator().manual_seed(43))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_augmented_batches_are_reproducible_and_keep_labels():
    split = _split()
    kw = dict(shuffle=True, augment=Augment(2, True))
    a, ia = _collect(split, generator=torch.Generator().manual_seed(9), **kw)
    b, ib = _collect(split, generator=torch.Generator().manual_seed(9), **kw)
    assert torch.equal(ia, ib)
    for (xa, _ya, _), (xb, yb, idx) in zip(a, b, strict=False):
        assert torch.equal(xa, xb)
        assert torch.equal(yb, torch.from_numpy(split.labels[idx.numpy()]))


def test_indices_subset_and_drop_last():
    split = _split()
    subset = np.array([3, 4, 10, 11, 12, 20, 22])
    _, order = _collect(split, indices=subset, shuffle=True, generator=torch.Generator().manual_seed(1))
    assert sorted(order.tolist()) == subset.tolist()
    batches, order = _collect(split, drop_last=True)
    assert [len(idx) for _, _, idx in batches] == [5, 5, 5, 5]
    assert order.tolist() == list(range(20))


def test_num_batches():
    assert num_batches(23, 5) == 5
    assert num_batches(23, 5, drop_last=True) == 4
    assert num_batches(20, 5) == 4
    assert num_batches(0, 5) == 0
