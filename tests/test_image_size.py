"""Image size as a property of the data set and the model (issue 15 §1, §4): sources that name their
size, decoded caches per size and memory-mapped, the shapes data set, test folders built here at 96
and 224 px, cards that record the size, and attribution, overlays, the lesson, the IG cache, the
overlay augmentation and latency at 32, 96 and 224 px."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from imagedata import cifar_folder, photos_folder, shapes_folder

from kdviz.attribution import AttributionStopped, attribute, internal_batch_for, render
from kdviz.data import (
    DataError,
    arraycache,
    channel_stats,
    check_image_size,
    load_dataset,
    size_mismatch,
    split_size,
    with_size,
)
from kdviz.data.loader import iterate_batches
from kdviz.data.synthetic import SHAPES, load_shapes
from kdviz.models import create_model, list_models
from kdviz.models.checkpoints import ModelCard, make_card, read_card, save_checkpoint
from kdviz.training.workspace import same_dataset

SIZES = (32, 96, 224)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("KDVIZ_CACHE", str(path))
    return path


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return create_model("airnet_student_64x", num_classes=10).eval()


# ------------------------------------------------------------------------- sources and sizes


def test_sources_name_their_size():
    assert split_size("digits") == ("digits", None)
    assert split_size("/data/flowers@96") == ("/data/flowers", 96)
    assert split_size("cifar10:/x/y@224") == ("cifar10:/x/y", 224)
    assert with_size("digits", 32) == "digits"  # 32 px: old cards and sources keep their meaning
    assert with_size("shapes", 96) == "shapes@96"
    assert with_size("shapes@96", None) == "shapes@96"
    assert with_size("shapes@96", 32) == "shapes"
    for bad in (0, 7, 513, 96.0, True):
        with pytest.raises(DataError, match="image size"):
            check_image_size(bad)  # type: ignore[arg-type]
    assert size_mismatch(96, 96) is None
    assert "32×32" in size_mismatch(32, 96) and "96×96" in size_mismatch(32, 96)


def test_a_data_set_source_rebuilds_it_at_its_size():
    data = load_dataset("digits", image_size=64)
    assert data.image_size == 64 and data.source == "digits@64"
    again = load_dataset(data.source)
    assert again.image_size == 64 and np.array_equal(again.test.images, data.test.images)
    assert load_dataset("digits").source == "digits"
    with pytest.raises(DataError, match="names 64 px"):
        load_dataset("digits@64", image_size=96)


def test_same_dataset_needs_the_same_size():
    assert same_dataset("cifar10:/a/b", "cifar10")
    assert same_dataset("cifar10:/a/b@96", "cifar10@96")
    assert not same_dataset("cifar10:/a/b", "cifar10@96")
    assert not same_dataset("shapes@96", "shapes@224")
    assert same_dataset("digits", "digits@32")


# ------------------------------------------------------------------------------ the data sets


@pytest.mark.parametrize("size", SIZES)
def test_shapes_at_any_size_are_fixed_and_distinct(size):
    data = load_shapes(size)
    assert data.class_names == SHAPES and data.num_classes == 10
    assert data.train.images.shape == (240, size, size, 3) and data.test.images.shape == (80, size, size, 3)
    assert np.array_equal(load_shapes(size).train.images[:5], data.train.images[:5])  # a fixed seed
    assert not np.array_equal(data.train.images[0], data.train.images[1])
    # test images are other draws than the training ones
    assert not any(np.array_equal(data.test.images[0], im) for im in data.train.images)


def test_shapes_are_learnable_from_their_outline():
    """A nearest-centroid classifier on the images' edge maps beats chance by far: the class is in
    the shape, not in a colour."""
    data = load_shapes(32)

    def edges(images):
        grey = images.astype(np.float32).mean(-1)
        gy, gx = np.gradient(grey, axis=(1, 2))
        e = np.hypot(gx, gy)
        return (e / (e.reshape(len(e), -1).max(1)[:, None, None] + 1e-6)).reshape(len(e), -1)

    tr, te = edges(data.train.images), edges(data.test.images)
    centroids = np.stack([tr[data.train.labels == c].mean(0) for c in range(10)])
    pred = np.argmin(((te[:, None] - centroids[None]) ** 2).sum(-1), 1)
    assert (pred == data.test.labels).mean() > 0.3  # chance is 0.1


def test_channel_stats_in_chunks_equal_numpy():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (37, 20, 20, 3), dtype=np.uint8)
    mean, std = channel_stats(images)
    x = images.reshape(-1, 3) / 255.0
    assert np.allclose(mean, x.mean(0), atol=1e-9) and np.allclose(std, x.std(0), atol=1e-7)


@pytest.mark.parametrize("size", (96, 224))
def test_a_shapes_folder_reads_back_at_its_size_and_at_others(tmp_path, cache, size):
    root = shapes_folder(tmp_path / "shapes", size)
    data = load_dataset(str(root), image_size=size)
    assert data.image_size == size and data.source == f"{root.resolve()}@{size}"
    assert data.class_names == tuple(sorted(SHAPES))  # folder order: sorted names
    assert len(data.train) == 30 and len(data.test) == 10
    small = load_dataset(f"{root}@32")
    assert small.train.images.shape[1:] == (32, 32, 3)
    # two sizes, two entries per split
    assert len(list((cache / "folders").iterdir())) == 4
    # the small one is the big one reduced: the same mean colour per image
    assert np.abs(small.train.images.mean((1, 2)) - data.train.images.mean((1, 2))).max() < 4


def test_large_entries_are_memory_mapped_and_batches_read_from_them(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(arraycache, "MMAP_BYTES", 0)  # every entry counts as large
    root = shapes_folder(tmp_path / "shapes", 96)
    first = load_dataset(str(root), image_size=96)  # decoded, written, then mapped
    again = load_dataset(str(root), image_size=96)  # read from the cache
    for data in (first, again):
        assert isinstance(data.train.images, np.memmap) and not data.train.images.flags.writeable
    in_memory = np.array(again.train.images)
    batches = list(
        iterate_batches(
            again.train,
            7,
            mean=again.mean,
            std=again.std,
            shuffle=True,
            generator=torch.Generator().manual_seed(0),
        )
    )
    for x, y, idx in batches:
        expected = torch.from_numpy(in_memory[idx.numpy()]).permute(0, 3, 1, 2).float() / 255.0
        mean = torch.tensor(again.mean).view(1, 3, 1, 1)
        std = torch.tensor(again.std).view(1, 3, 1, 1)
        assert torch.allclose(x, (expected - mean) / std, atol=1e-6)
        assert torch.equal(y, torch.from_numpy(again.train.labels[idx.numpy()]))
    assert sorted(torch.cat([b[2] for b in batches]).tolist()) == list(range(len(again.train)))


def test_small_entries_are_read_into_memory(tmp_path, cache):
    root = shapes_folder(tmp_path / "shapes", 32)
    data = load_dataset(str(root))
    assert not isinstance(data.train.images, np.memmap)


def test_an_interrupted_entry_is_never_used(tmp_path, cache, monkeypatch):
    """A decode that fails half-way leaves no entry behind: the next load decodes again."""
    from kdviz.data import folder as folder_mod

    root = shapes_folder(tmp_path / "shapes", 96)
    original, calls = folder_mod.decode_image, []

    def failing(path, size):
        calls.append(path)
        if len(calls) == 5:
            raise OSError("disk went away")
        return original(path, size)

    monkeypatch.setattr(folder_mod, "decode_image", failing)
    with pytest.raises(DataError, match="cannot read image"):
        load_dataset(str(root), image_size=96)
    assert not any((cache / "folders").rglob("meta.json")) if (cache / "folders").exists() else True
    assert not any((cache / "folders").rglob("images.npy")) if (cache / "folders").exists() else True
    monkeypatch.setattr(folder_mod, "decode_image", original)
    assert load_dataset(str(root), image_size=96).image_size == 96


@pytest.mark.slow
@pytest.mark.parametrize("size", (96, 224))
def test_cifar_folder_upscaled(tmp_path, cache, size):
    root = cifar_folder(tmp_path / "cifar-up", size)  # skips without ../shared/data
    data = load_dataset(str(root), image_size=size)
    assert data.image_size == size and data.num_classes == 10 and len(data.train) == 20


def test_photos_folder(tmp_path, cache):
    root = photos_folder(tmp_path / "photos", 96)
    data = load_dataset(str(root), image_size=96)
    assert data.class_names == tuple(sorted(("cat", "astronaut", "rocket", "coffee")))
    assert len(data.train) == 12 and len(data.test) == 4
    assert data.train.images.std() > 20  # photos, not flat colour


# ------------------------------------------------------------------------------ models and cards


@pytest.mark.parametrize("arch", [s.name for s in list_models()])
def test_every_registered_model_takes_96_px(arch):
    model = create_model(arch, num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 96, 96)).shape == (2, 7)


@pytest.mark.parametrize("arch", ["resnet20", "airnet_student_64x", "mnv2_student_4x"])
def test_cifar_models_take_224_px(arch):
    model = create_model(arch, num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 10)


def test_the_card_records_the_size_and_old_cards_mean_32(tmp_path, tiny_model):
    data = load_shapes(96)
    data = type(data)(**{**data.__dict__, "source": "shapes@96"})
    card = make_card("airnet_student_64x", data=data, model=tiny_model, role="student")
    assert card.image_size == 96 and card.dataset == "shapes@96"
    # MACs are counted at the card's size: more than at 32 px by about the ratio of pixels
    small = make_card("airnet_student_64x", data=load_shapes(32), model=tiny_model)
    assert card.stats["macs"] > 8 * small.stats["macs"]
    folder = save_checkpoint(tmp_path / "run", tiny_model, card)
    assert read_card(folder).image_size == 96
    old = json.loads((folder / "card.json").read_text())
    old.pop("image_size")
    assert ModelCard.from_json(old).image_size == 32


# --------------------------------------------------------------- attribution at 32, 96 and 224 px


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("method", ["ig", "saliency", "gradcam"])
def test_attribution_and_overlays_at_any_size(tiny_model, size, method):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    result = attribute(tiny_model, x, method=method, steps=8, mean=(0, 0, 0), std=(1, 1, 1), cache=False)
    assert result.maps.shape[0] == 2 and result.maps.shape[-2:] == (size, size)
    image = np.zeros((size, size, 3), np.uint8)
    assert render.heatmap(result.maps[0]).shape == (size, size, 3)
    assert render.blend(image, result.maps[0], strength=0.5).shape == (size, size, 3)
    if method == "ig":  # completeness holds at every size
        assert np.all(result.relative_delta < 0.2)


def test_crisp_enlarges_small_images_only():
    assert render.crisp(np.zeros((32, 32, 3), np.uint8)).shape == (128, 128, 3)
    assert render.crisp(np.zeros((96, 96, 3), np.uint8)).shape == (96, 96, 3)
    assert render.crisp(np.zeros((224, 224, 3), np.uint8)).shape == (224, 224, 3)


def test_ig_passes_shrink_with_the_pixels():
    assert internal_batch_for(32, 32) == 64  # capped: bigger passes are slower per input on a CPU
    assert internal_batch_for(96, 96) == 14
    assert internal_batch_for(224, 224) == 2


@pytest.mark.slow
def test_ig_at_224_reports_progress_per_chunk_and_stops(tiny_model, cache, monkeypatch):
    monkeypatch.setattr("kdviz.attribution.cache._DEFAULT_CACHE", None)  # an empty cache under tmp_path
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    seen: list[tuple[int, int]] = []
    result = attribute(
        tiny_model,
        x,
        steps=8,
        mean=(0, 0, 0),
        std=(1, 1, 1),
        cache=False,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert result.maps.shape == (1, 3, 224, 224)
    assert [d for d, _ in seen] == [2, 4, 6, 8] and {t for _, t in seen} == {8}  # 2 inputs a pass at 224
    asked: list[int] = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > 2

    with pytest.raises(AttributionStopped, match="4 of 8"):
        attribute(tiny_model, x, steps=8, mean=(0, 0, 0), std=(1, 1, 1), cache=True, should_stop=stop)
    # nothing of a stopped map is cached: the next call computes it whole
    again = attribute(tiny_model, x, steps=8, mean=(0, 0, 0), std=(1, 1, 1), cache=True)
    assert not again.cached[0] and np.allclose(again.maps, result.maps, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("size", (96, 224))
def test_lesson_running_sum_at_any_size(tiny_model, size):
    from kdviz.teaching.lesson import captum_map, running_sum

    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    walked = running_sum(tiny_model, x, torch.zeros_like(x), target=3, steps=8)
    assert walked.partial.shape == (8, 3, size, size)
    reference = captum_map(tiny_model, x, torch.zeros_like(x), target=3, steps=8)
    assert np.allclose(walked.partial[-1], reference, atol=1e-4)


def test_ig_cache_and_overlay_augmentation_at_96(tmp_path, cache, tiny_model):
    from kdviz.attribution.igcache import IGMapStore, precompute
    from kdviz.data.loader import to_float
    from kdviz.training.arms import DistillConfig
    from kdviz.training.ig_overlay import overlay

    data = load_dataset("shapes@96")
    store = precompute(tiny_model, data, tmp_path / "ig", mean=data.mean, std=data.std, steps=4, limit=6)
    assert store.done.all() and len(store) == 6
    maps = IGMapStore(tmp_path / "ig").read(np.arange(6))
    assert tuple(maps.shape) == (6, 96, 96) and float(maps.abs().sum()) > 0
    x = to_float(data.train.images[:6])
    cfg = DistillConfig(overlay_p=1.0).overlay()
    out, applied = overlay(x, maps, cfg, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and bool(torch.as_tensor(applied).any())
    assert not torch.equal(out, x)


@pytest.mark.parametrize("size", (96, 224))
def test_latency_at_any_size(tiny_model, size):
    from kdviz.bench import latency

    result = latency.eager(tiny_model, "tiny", image_size=size, warmup=1, repeats=2, max_seconds=5)
    assert result.median_ms > 0
