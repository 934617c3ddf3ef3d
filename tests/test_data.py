"""kdviz.data: the built-in digits, image folders (with the decode cache), CIFAR-10 batches and folders."""

from __future__ import annotations

import builtins
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import kdviz.data.folder as folder_mod
from kdviz.data import CIFAR10_CLASSES, IMAGENET_MEAN, IMAGENET_STD, DataError, load_dataset
from kdviz.data.cifar import find_cifar10
from kdviz.data.folder import describe_folder, load_split

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CIFAR10_DIR = SHARED_DATA / "cifar10"


# ------------------------------------------------------------------------------------------ digits


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_shape_and_counts(digits):
    assert len(digits.train) + len(digits.test) == 1797
    assert len(digits.test) == 360  # ceil(0.2 * 1797)
    assert digits.class_names == tuple(str(d) for d in range(10))
    assert digits.num_classes == 10 and digits.image_size == 32
    for split in (digits.train, digits.test):
        assert split.images.dtype == np.uint8 and split.images.shape[1:] == (32, 32, 3)
        assert split.labels.dtype == np.int64
        assert set(np.unique(split.labels)) == set(range(10))
        # grey scans shown as RGB: the three channels are equal, and not all black
        assert np.array_equal(split.images[..., 0], split.images[..., 2])
        assert split.images.max() > 200
    assert digits.source == "digits"
    s = digits.summary()
    assert (s["train"], s["test"], s["image_size"]) == (1437, 360, 32)


def test_digits_split_is_fixed_across_loads(digits):
    again = load_dataset("digits")
    for name in ("train", "test"):
        assert np.array_equal(digits.split(name).images, again.split(name).images)
        assert np.array_equal(digits.split(name).labels, again.split(name).labels)
    assert digits.mean == again.mean and digits.std == again.std


def test_digits_split_is_stratified(digits):
    from sklearn.datasets import load_digits

    total = np.bincount(load_digits().target, minlength=10)
    train = np.bincount(digits.train.labels, minlength=10)
    test = np.bincount(digits.test.labels, minlength=10)
    assert np.array_equal(train + test, total)
    # each class keeps a fifth of its scans for the test split (to within the rounding of one image)
    assert np.all(np.abs(test - 0.2 * total) <= 1.0), (test, total)


def test_digits_stats_and_other_size(digits):
    mean, std = digits.mean, digits.std
    assert len(mean) == 3 and mean[0] == pytest.approx(mean[1]) == pytest.approx(mean[2])
    assert 0.05 < mean[0] < 0.6 and 0.1 < std[0] < 0.6
    small = load_dataset("digits", image_size=16)
    assert small.train.images.shape[1:] == (16, 16, 3) and len(small.train) == len(digits.train)
    assert np.array_equal(small.train.labels, digits.train.labels)


def test_split_name_is_checked(digits):
    with pytest.raises(ValueError, match="split must be"):
        digits.split("validation")


# ------------------------------------------------------------------------------------ image folders

# (class, file name, mode, size, fill, expected RGB)
FOLDER_IMAGES = [
    ("cat", "a.png", "RGB", (40, 30), (200, 10, 10), (200, 10, 10)),
    ("cat", "b.jpg", "L", (16, 16), 90, (90, 90, 90)),
    ("dog", "a.png", "RGBA", (20, 20), (10, 200, 10, 128), (10, 200, 10)),
    ("dog", "b.bmp", "L", (24, 24), 30, (30, 30, 30)),
    ("bird", "a.gif", "P", (32, 32), 3, (10, 10, 200)),
    ("bird", "b.png", "LA", (50, 50), (120, 255), (120, 120, 120)),
]
PALETTE = [0, 0, 0, 1, 1, 1, 2, 2, 2, 10, 10, 200] + [0] * (252 * 3)


def _save(path: Path, mode: str, size, fill) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new(mode, size, fill)
    if mode == "P":
        im.putpalette(PALETTE)
    im.save(path)


def make_folder(root: Path) -> Path:
    for split in ("train", "test"):
        for cls, name, mode, size, fill, _ in FOLDER_IMAGES:
            _save(root / split / cls / name, mode, size, fill)
    (root / "train" / "cat" / "notes.txt").write_text("not an image")  # skipped: not an image suffix
    (root / "train" / ".ipynb_checkpoints").mkdir()  # hidden folders are no class
    return root


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("KDVIZ_CACHE", str(path))
    return path


@pytest.fixture
def count_decodes(monkeypatch):
    calls: list[Path] = []
    original = folder_mod.decode_image

    def counting(path, image_size):
        calls.append(Path(path))
        return original(path, image_size)

    monkeypatch.setattr(folder_mod, "decode_image", counting)
    return calls


def test_image_folder_modes_sizes_and_labels(tmp_path, cache):
    root = make_folder(tmp_path / "pets")
    data = load_dataset(str(root), image_size=24)
    assert data.class_names == ("bird", "cat", "dog")  # sorted folder names
    assert data.name == "pets" and data.source == f"{root.resolve()}@24"  # the source names its size
    assert data.image_size == 24
    for split in (data.train, data.test):
        assert split.images.shape == (6, 24, 24, 3) and split.images.dtype == np.uint8
        assert split.labels.tolist() == [0, 0, 1, 1, 2, 2]  # class by class, files sorted
    expected = sorted(FOLDER_IMAGES, key=lambda r: (r[0], r[1]))
    for i, (cls, name, mode, _, _, rgb) in enumerate(expected):
        got = data.train.images[i]
        # every pixel of a one-colour image has that colour after conversion to RGB and resizing
        tol = 2 if name.endswith(".jpg") else 0
        assert np.abs(got.astype(int) - np.array(rgb)).max() <= tol, (cls, name, mode, got[0, 0])
    assert len(data.mean) == 3 and all(0 <= m <= 1 for m in data.mean)
    assert describe_folder(root) == {
        "root": str(root),
        "classes": ["bird", "cat", "dog"],
        "train": 6,
        "test": 6,
    }


def test_image_folder_keeps_pixels_at_native_size(tmp_path, cache):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    for split in ("train", "test"):
        for cls in ("x", "y"):
            (tmp_path / "d" / split / cls).mkdir(parents=True)
            Image.fromarray(noise).save(tmp_path / "d" / split / cls / "0.png")
    data = load_dataset(str(tmp_path / "d"), image_size=16)
    assert np.array_equal(data.train.images[0], noise)
    assert np.array_equal(data.test.images[1], noise)
    assert not np.array_equal(data.train.images[0][:, ::-1], noise)  # the check above can fail


def test_decode_cache_second_load_does_not_decode(tmp_path, cache, count_decodes, monkeypatch):
    root = make_folder(tmp_path / "pets")
    first = load_dataset(str(root), image_size=24)
    assert len(count_decodes) == 12  # 6 train + 6 test images
    entries = sorted((cache / "folders").iterdir())
    assert len(entries) == 2  # one per split
    for entry in entries:
        assert {p.name for p in entry.iterdir()} == {"images.npy", "labels.npy", "meta.json"}

    def refuse(path, image_size):
        raise AssertionError(f"decoded {path} although the cache is current")

    monkeypatch.setattr(folder_mod, "decode_image", refuse)
    second = load_dataset(str(root), image_size=24)
    assert np.array_equal(first.train.images, second.train.images)
    assert np.array_equal(first.test.labels, second.test.labels)


def test_decode_cache_key_changes_with_the_folder(tmp_path, cache, count_decodes):
    root = make_folder(tmp_path / "pets")
    load_dataset(str(root), image_size=24)
    count_decodes.clear()

    _save(root / "train" / "cat" / "c.png", "RGB", (24, 24), (1, 2, 3))  # a new file in train only
    data = load_dataset(str(root), image_size=24)
    assert len(data.train) == 7 and data.train.labels.tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert data.train.images[4, 0, 0].tolist() == [1, 2, 3]
    assert len(count_decodes) == 7 and all(p.parts[-3] == "train" for p in count_decodes)
    assert len(list((cache / "folders").iterdir())) == 3

    count_decodes.clear()
    _save(root / "test" / "dog" / "a.png", "RGB", (30, 30), (9, 9, 9))  # a changed file
    data = load_dataset(str(root), image_size=24)
    assert data.test.images[4, 0, 0].tolist() == [9, 9, 9]  # test/dog/a.png
    assert len(count_decodes) == 6 and all(p.parts[-3] == "test" for p in count_decodes)

    count_decodes.clear()
    load_dataset(str(root), image_size=16)  # another size is another key
    assert len(count_decodes) == 13


def test_damaged_cache_is_rebuilt(tmp_path, cache, count_decodes):
    root = make_folder(tmp_path / "pets")
    good = load_dataset(str(root), image_size=24)
    for entry in (cache / "folders").iterdir():
        (entry / "images.npy").write_bytes(b"garbage")
    count_decodes.clear()
    again = load_dataset(str(root), image_size=24)
    assert len(count_decodes) == 12
    assert np.array_equal(good.train.images, again.train.images)


def test_missing_path_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no data set named"):
        load_dataset(str(tmp_path / "nowhere"))


def test_not_an_image_folder(tmp_path):
    (tmp_path / "plain" / "stuff").mkdir(parents=True)
    with pytest.raises(DataError, match=r"is not an image folder.*train/<class>/ and test/<class>/"):
        load_dataset(str(tmp_path / "plain"))


def test_train_without_class_folders(tmp_path):
    (tmp_path / "d" / "train").mkdir(parents=True)
    (tmp_path / "d" / "test").mkdir()
    (tmp_path / "d" / "train" / "loose.png").write_bytes(b"")
    with pytest.raises(DataError, match="holds no class folders"):
        load_dataset(str(tmp_path / "d"))


def test_split_without_images(tmp_path, cache):
    root = tmp_path / "d"
    _save(root / "train" / "a" / "0.png", "RGB", (8, 8), (0, 0, 0))
    (root / "test" / "a").mkdir(parents=True)
    (root / "test" / "a" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"test holds no images"):
        load_dataset(str(root))


def test_unreadable_image_names_the_file(tmp_path, cache):
    root = make_folder(tmp_path / "pets")
    (root / "test" / "dog" / "broken.png").write_bytes(b"this is not a PNG")
    with pytest.raises(DataError, match=r"cannot read image .*broken\.png"):
        load_dataset(str(root), image_size=24)


def test_load_split_names_a_missing_split(tmp_path):
    with pytest.raises(DataError, match="missing folder"):
        load_split(tmp_path, "test", ["a"], 32)


# ------------------------------------------------------------------------------ CIFAR-10 batches


def _batch_pixels(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def _write_batch(path: Path, data: np.ndarray, labels: list[int]) -> None:
    # protocol 4 as Python 3 writes it (the real files are Python 2 pickles of the same dict)
    path.write_bytes(pickle.dumps({"batch_label": "fake", "data": data, "labels": labels}, protocol=4))


@pytest.fixture
def batches_dir(tmp_path) -> Path:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for b in range(1, 6):
        _write_batch(root / f"data_batch_{b}", _batch_pixels(b, 2), [b, (b + 5) % 10])
    test = np.zeros((3, 3072), dtype=np.uint8)
    # image 0: the pixel at row 5, column 7 is (200, 100, 50); CIFAR rows hold 1024 R, then G, then B
    for channel, value in enumerate((200, 100, 50)):
        test[0, channel * 1024 + 5 * 32 + 7] = value
    test[1:] = _batch_pixels(9, 2)
    _write_batch(root / "test_batch", test, [3, 1, 4])
    return root


def test_cifar_batches_load_with_hwc_pixels(batches_dir):
    data = load_dataset("cifar10:" + str(batches_dir))
    assert data.train.images.shape == (10, 32, 32, 3) and data.test.images.shape == (3, 32, 32, 3)
    assert data.train.images.dtype == np.uint8 and data.train.images.flags["C_CONTIGUOUS"]
    assert data.train.labels.tolist() == [1, 6, 2, 7, 3, 8, 4, 9, 5, 0]
    assert data.test.labels.tolist() == [3, 1, 4]
    img = data.test.images[0]
    assert img[5, 7].tolist() == [200, 100, 50]
    assert img[7, 5].tolist() == [0, 0, 0]  # rows and columns are not swapped
    assert int(img.astype(int).sum()) == 350  # nothing else is lit
    # every training image is the CHW row turned to HWC
    rows = _batch_pixels(3, 2)
    assert np.array_equal(data.train.images[4:6], rows.reshape(2, 3, 32, 32).transpose(0, 2, 3, 1))
    assert data.class_names == CIFAR10_CLASSES
    assert data.mean == IMAGENET_MEAN and data.std == IMAGENET_STD
    assert data.extra["kind"] == "batches"
    # the source string written into cards rebuilds the same data set
    again = load_dataset(data.source)
    assert np.array_equal(again.test.images, data.test.images)


def test_cifar_batches_found_under_a_data_root(batches_dir, monkeypatch):
    assert find_cifar10(batches_dir.parent) == ("batches", batches_dir)
    data = load_dataset("cifar10:" + str(batches_dir.parent))
    assert len(data.train) == 10
    monkeypatch.setenv("KDVIZ_DATA", str(batches_dir.parent))
    assert len(load_dataset("cifar10").test) == 3


def test_cifar_batches_are_upscaled_and_cached_per_size(batches_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("KDVIZ_CACHE", str(tmp_path / "cache"))
    native = load_dataset("cifar10:" + str(batches_dir))
    big = load_dataset("cifar10:" + str(batches_dir), image_size=64)
    assert big.image_size == 64 and big.source.endswith("@64") and "upscaled" in big.description
    assert big.train.images.shape == (len(native.train), 64, 64, 3)
    assert np.array_equal(big.train.labels, native.train.labels)
    # a 2× bilinear upscale keeps each image's mean colour (what a wrong image order would not)
    for i in (0, len(native.train) - 1):
        assert np.abs(big.train.images[i].mean((0, 1)) - native.train.images[i].mean((0, 1))).max() < 3
    entries = list((tmp_path / "cache" / "cifar10").iterdir())
    assert len(entries) == 2  # train and test at 64 px; 32 px needs none
    again = load_dataset("cifar10:" + str(batches_dir), image_size=64)
    assert np.array_equal(again.test.images, big.test.images)
    load_dataset("cifar10:" + str(batches_dir), image_size=48)
    assert len(list((tmp_path / "cache" / "cifar10").iterdir())) == 4  # each size its own entry


class _ShellPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class _ExecPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("payload", [_ShellPayload, _ExecPayload], ids=["os.system", "builtins.exec"])
def test_tampered_cifar_batch_is_refused_and_not_run(batches_dir, tmp_path, payload):
    marker = tmp_path / "pwned"
    blob = pickle.dumps({"data": payload(marker), "labels": [0]}, protocol=4)
    # control: the payload is live, an ordinary unpickler runs it
    pickle.loads(blob)
    assert marker.exists()
    marker.unlink()

    (batches_dir / "test_batch").write_bytes(blob)
    with pytest.raises((pickle.UnpicklingError, DataError), match="refusing to load"):
        load_dataset("cifar10:" + str(batches_dir))
    assert not marker.exists()


def test_truncated_cifar_batch_is_a_data_error(batches_dir):
    path = batches_dir / "data_batch_3"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10:" + str(batches_dir))


def test_cifar_not_found_says_where_it_looked(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("KDVIZ_DATA", str(empty))
    with pytest.raises(DataError) as info:
        load_dataset("cifar10")
    message = str(info.value)
    assert "CIFAR-10 not found" in message
    assert str(empty.resolve()) in message
    assert str(empty.resolve() / "cifar-10-batches-py") in message
    assert "KDVIZ_DATA" in message


def test_cifar_image_folder_layout_is_found(tmp_path, cache):
    root = tmp_path / "data" / "cifar10"
    for split in ("train", "test"):
        for i, cls in enumerate(CIFAR10_CLASSES):
            _save(root / split / cls / "0000.png", "RGB", (32, 32), (i * 20, 0, 0))
    assert find_cifar10(tmp_path / "data") == ("folder", root)
    data = load_dataset("cifar10:" + str(tmp_path / "data"))
    assert data.extra["kind"] == "folder" and data.class_names == CIFAR10_CLASSES
    assert data.train.labels.tolist() == list(range(10))
    assert data.test.images[:, 0, 0, 0].tolist() == [i * 20 for i in range(10)]
    assert data.mean == IMAGENET_MEAN  # CIFAR keeps its standard normalisation
    # a plain path to a CIFAR-shaped folder is recognised as CIFAR-10 too
    assert load_dataset(str(root)).name == "cifar10"


# ---------------------------------------------------------------------------------- real CIFAR-10


@pytest.mark.slow
def test_real_cifar10_folder():
    if not CIFAR10_DIR.is_dir():
        pytest.skip(f"../shared/data/cifar10 not found: real-data tests need it at {CIFAR10_DIR}")
    assert find_cifar10(SHARED_DATA) == ("folder", CIFAR10_DIR)
    info = describe_folder(CIFAR10_DIR)
    assert info["classes"] == list(CIFAR10_CLASSES)
    assert (info["train"], info["test"]) == (50000, 10000)
    test = load_split(CIFAR10_DIR, "test", list(CIFAR10_CLASSES), 32)
    assert test.images.shape == (10000, 32, 32, 3) and test.images.dtype == np.uint8
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert 60 < test.images.mean() < 180  # real photographs, decoded
