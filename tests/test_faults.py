"""Faults that lose nothing (issue 14 §3): a disk that fills up, a read-only folder, flipped bytes.

Each test makes the fault happen. A full disk and a read-only folder are a real small file system
(tmpfs, mounted for the test; remounted read-only) where this machine allows mounting (root on
Linux); elsewhere (CI without privileges), or with ``KDVIZ_TEST_FAKE_DISK=1``, a fake makes kdviz's
write path (:func:`kdviz.core.atomic._sync`) raise the same ENOSPC / EROFS errors. Each test prints
which one ran (``pytest -s``: "small disk: tmpfs" or "small disk: fake ENOSPC/EROFS").
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from kdviz.core import atomic, settings
from kdviz.core.atomic import SaveError
from kdviz.core.integrity import digest_file, read_checked_npy, write_checked_npy

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT / "assets" / "digits_teacher"
FS_BYTES = 24 * 1024 * 1024


class SmallDisk:
    """A folder on a small file system that a test can fill up, free again, or make read-only."""

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.folder, self._mp = folder, monkeypatch
        folder.mkdir(parents=True)
        forced_fake = bool(os.environ.get("KDVIZ_TEST_FAKE_DISK"))  # to check the fallback here too
        self.real = not forced_fake and _mount(
            ["-t", "tmpfs", "-o", f"size={FS_BYTES}", "tmpfs", str(folder)]
        )
        self._fault: int | None = None
        self._filler = folder / ".filler"
        if not self.real:  # the fake: kdviz's write path raises what a full or read-only disk would
            original = atomic._sync

            def sync(tmp: Path) -> None:
                if self._fault is not None and self.folder in tmp.parents:
                    raise OSError(self._fault, os.strerror(self._fault))
                original(tmp)

            monkeypatch.setattr(atomic, "_sync", sync)

    def fill(self) -> None:
        """Leave no free byte (real) or make every write fail with ENOSPC (fake)."""
        if not self.real:
            self._fault = errno.ENOSPC
            return
        with open(self._filler, "ab", buffering=0) as fh:  # unbuffered: nothing left to flush
            for size in (1 << 20, 1 << 12, 1):
                try:
                    while True:
                        fh.write(b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
        assert os.statvfs(self.folder).f_bavail == 0

    def free(self) -> None:
        self._fault = None
        if self._filler.exists():
            self._filler.unlink()

    def read_only(self) -> None:
        if not self.real:
            self._fault = errno.EROFS
            return
        assert _mount(["-o", "remount,ro", str(self.folder)])

    def close(self) -> None:
        if self.real:
            subprocess.run(["umount", "-l", str(self.folder)], check=False, capture_output=True)


def _mount(args: list[str]) -> bool:
    try:
        done = subprocess.run(["mount", *args], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.fixture
def disk(tmp_path, monkeypatch) -> Iterator[SmallDisk]:
    d = SmallDisk(tmp_path / f"fs-{uuid.uuid4().hex[:6]}", monkeypatch)
    print(f"small disk: {'tmpfs' if d.real else 'fake ENOSPC/EROFS'}")
    try:
        yield d
    finally:
        d.close()


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------ a full disk


def _tiny_request(name: str, epochs: int):
    from kdviz.training.loop import TrainConfig
    from kdviz.training.workflows import TrainRequest

    return TrainRequest(
        name=name,
        arch="mnv2_student_12x",
        arch_kwargs={"width_mult": 0.25},
        role="student",
        config=TrainConfig(epochs=epochs, batch_size=32, train_limit=64, eval_limit=40, hflip=False),
    )


@pytest.mark.slow
def test_disk_full_during_a_checkpoint_keeps_the_last_epoch_and_the_resume_continues(disk):
    from safetensors import safe_open

    from kdviz.data import load_dataset
    from kdviz.models.checkpoints import load_model
    from kdviz.training.workflows import train_run
    from kdviz.training.workspace import Workspace

    data = load_dataset("digits")
    ws = Workspace(disk.folder / "runs")
    run_dir, first = train_run(_tiny_request("full", 1), workspace=ws, data=data)
    saved = (run_dir / "model.safetensors").read_bytes()

    def fill_in_epoch_two(event) -> None:
        if event.kind == "step" and event.epoch == 2 and event.step == 1:
            disk.fill()  # the disk fills while epoch 2 trains: its checkpoint cannot be written

    with pytest.raises(SaveError) as info:
        train_run(_tiny_request("full", 2), workspace=ws, data=data, callback=fill_in_epoch_two)
    message = str(info.value)
    assert str(run_dir) in message and "no space left on device" in message, message
    assert "\n" not in message
    # the previous good state is whole and readable: the epoch-1 checkpoint, card and resume state
    assert not _leftovers(run_dir), "the failed write's temporary file is removed"
    assert (run_dir / "model.safetensors").read_bytes() == saved
    assert load_model(run_dir).card.metrics["epochs_done"] == 1
    with safe_open(str(run_dir / "resume.safetensors"), "pt") as fh:
        assert len(json.loads(fh.metadata()["history"])) == 1
    assert not (run_dir / ".writer-lock.json").exists(), "the failed writer released its lock"

    disk.free()
    _, resumed = train_run(_tiny_request("full", 2), workspace=ws, data=data)
    assert resumed.resumed_from == 1 and [r.epoch for r in resumed.history] == [1, 2]
    assert resumed.history[0] == first.history[0]


@pytest.mark.slow
def test_disk_full_during_an_ig_cache_chunk_keeps_the_finished_maps(disk):
    from kdviz.attribution.igcache import IGMapStore, precompute
    from kdviz.data import load_dataset
    from kdviz.models.checkpoints import load_model

    data, teacher = load_dataset("digits"), load_model(TEACHER)
    out = disk.folder / "igcache"
    common = dict(
        mean=teacher.card.mean, std=teacher.card.std, steps=4, batch_size=8, limit=24, internal_batch_size=32
    )
    calls = []

    def fill_after_first_chunk(done: int, total: int, rate: float) -> None:
        calls.append(done)
        if len(calls) == 1:
            disk.fill()

    with pytest.raises(SaveError, match="no space left on device") as info:
        precompute(teacher.model, data, out, progress=fill_after_first_chunk, **common)
    assert str(out) in str(info.value)
    store = IGMapStore(out)
    assert int(store.done.sum()) == 8, "the first chunk is kept, flagged and whole"
    first_chunk = np.array(store.maps[:8])
    disk.free()

    seen: list[int] = []
    store = precompute(teacher.model, data, out, progress=lambda d, t, r: seen.append(d), **common)
    assert store.complete and seen[0] == 16, "the resume started after the kept chunk"
    np.testing.assert_array_equal(np.array(store.maps[:8]), first_chunk)
    assert not _leftovers(out)


def test_disk_full_while_a_study_summary_is_written_keeps_the_last_one(disk):
    from kdviz.experiments.ablation import StudyConfig, _write_state, load_study, open_or_create

    folder = disk.folder / "study"
    config = StudyConfig(teacher=str(TEACHER), arms=["baseline", "kd"], seeds=[0])
    _, _, state = open_or_create(folder, config)
    state["status"] = "running"
    _write_state(folder, state)
    disk.fill()
    state["status"] = "done"
    with pytest.raises(SaveError, match="no space left on device") as info:
        _write_state(folder, state)
    assert str(folder / "study.json") in str(info.value)
    assert load_study(folder).status == "running", "the last good summary is still there, whole"
    disk.free()
    _write_state(folder, state)
    assert load_study(folder).status == "done"


def test_disk_full_in_the_attribution_cache_still_gives_the_maps_and_says_why(disk):
    from kdviz.attribution import AttributionCache

    cache = AttributionCache(disk.folder / "attributions")
    good = {"maps": np.ones((3, 4, 4), np.float32)}
    cache.put("aa" + "0" * 38, good)
    assert cache.write_error is None
    disk.fill()
    cache.put("bb" + "0" * 38, {"maps": np.zeros((3, 4, 4), np.float32)})
    assert cache.write_error and "no space left on device" in cache.write_error
    assert str(disk.folder / "attributions") in cache.write_error
    assert cache.get("bb" + "0" * 38) is not None, "kept in memory all the same"
    fresh = AttributionCache(disk.folder / "attributions")  # the entry written before is whole
    np.testing.assert_array_equal(fresh.get("aa" + "0" * 38)["maps"], good["maps"])
    assert not _leftovers(disk.folder)


def test_a_read_only_folder_names_the_file_and_the_cause(disk):
    atomic.write_json(disk.folder / "a.json", {"v": 1})
    disk.read_only()
    with pytest.raises(SaveError, match="read-only file system") as info:
        atomic.write_json(disk.folder / "a.json", {"v": 2})
    assert str(disk.folder / "a.json") in str(info.value)
    assert json.loads((disk.folder / "a.json").read_text()) == {"v": 1}


def test_save_error_recognises_a_library_error_that_wraps_enospc(tmp_path):
    error = atomic.save_error(
        tmp_path / "x", RuntimeError("I/O error: No space left on device (os error 28)")
    )
    assert isinstance(error, SaveError) and "no space left" in str(error)
    assert atomic.save_error(tmp_path / "x", RuntimeError("something else")) is None


# ------------------------------------------------------------------------------ flipped bytes


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_corrupted_attribution_cache_entry_is_discarded_and_recomputed(tmp_path):
    from kdviz.attribution import AttributionCache, attribute
    from kdviz.models.checkpoints import load_model

    teacher = load_model(TEACHER)
    x = torch.rand(2, 3, 32, 32)
    opts = dict(method="saliency", mean=teacher.card.mean, std=teacher.card.std)
    first = attribute(teacher.model, x, cache=AttributionCache(tmp_path), **opts)
    files = sorted(tmp_path.rglob("*.npz"))
    assert len(files) == 2
    for f in files:  # one flipped byte inside the maps of each entry (not the zip's header)
        _flip(f, len(f.read_bytes()) // 2)
    fresh = AttributionCache(tmp_path)
    again = attribute(teacher.model, x, cache=fresh, **opts)
    assert not again.cached.any() and fresh.discarded == 2, "both damaged entries were found"
    np.testing.assert_array_equal(again.maps, first.maps)
    # replaced by whole entries: a third reader hits them
    third = AttributionCache(tmp_path)
    assert attribute(teacher.model, x, cache=third, **opts).cached.all() and third.discarded == 0


def test_an_attribution_cache_entry_cut_short_or_without_checksum_is_recomputed(tmp_path):
    from kdviz.attribution import AttributionCache

    cache = AttributionCache(tmp_path)
    key = "cd" + "1" * 38
    cache.put(key, {"maps": np.arange(48, dtype=np.float32)})
    path = next(tmp_path.rglob("*.npz"))
    path.write_bytes(path.read_bytes()[:-40])
    assert AttributionCache(tmp_path).get(key) is None and not path.exists()
    np.savez(path, maps=np.arange(48, dtype=np.float32))  # an entry from before checksums
    assert AttributionCache(tmp_path).get(key) is None


@pytest.mark.slow
def test_a_corrupted_ig_cache_map_is_never_used_and_is_recomputed(tmp_path):
    from kdviz.attribution.igcache import IGMapStore, precompute
    from kdviz.data import load_dataset
    from kdviz.models.checkpoints import load_model

    data, teacher = load_dataset("digits"), load_model(TEACHER)
    common = dict(
        mean=teacher.card.mean, std=teacher.card.std, steps=4, batch_size=8, limit=16, internal_batch_size=32
    )
    out = tmp_path / "ig"
    store = precompute(teacher.model, data, out, **common)
    good = np.array(store.maps)
    assert store.complete
    maps_file = out / "maps.npy"
    header = len(maps_file.read_bytes()) - good.nbytes
    row_bytes = good[0].nbytes
    _flip(maps_file, header + 5 * row_bytes + 17)  # a byte of map 5
    damaged = IGMapStore(out)
    assert not damaged.complete and damaged.damaged.tolist() == [5]
    assert not damaged.done[5] and damaged.done.sum() == 15
    seen: list[int] = []
    store = precompute(teacher.model, data, out, progress=lambda d, t, r: seen.append(d), **common)
    assert seen == [16], "only the damaged map was recomputed"
    assert store.complete
    np.testing.assert_array_equal(np.array(store.maps), good)


def _image_folder(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in ("cat", "dog"):
            d = root / split / label
            d.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def test_a_corrupted_decoded_image_cache_is_rebuilt_from_the_images(tmp_path, monkeypatch):
    from kdviz.data.folder import list_classes, load_split

    monkeypatch.setenv("KDVIZ_CACHE", str(tmp_path / "cache"))
    root = _image_folder(tmp_path / "pets")
    classes = list_classes(root)
    decoded = load_split(root, "train", classes, 32).images.copy()
    images_file = next((tmp_path / "cache").rglob("images.npy"))
    _flip(images_file, len(images_file.read_bytes()) - 100)
    assert not np.array_equal(np.load(images_file), decoded), "the cache really is damaged"
    again = load_split(root, "train", classes, 32)
    np.testing.assert_array_equal(again.images, decoded)
    np.testing.assert_array_equal(np.load(images_file), decoded), "and it was rewritten whole"


def test_a_corrupted_prediction_cache_is_discarded(tmp_path):
    path = tmp_path / "teacher_predictions.npy"
    preds = np.arange(100, dtype=np.int64) % 10
    write_checked_npy(path, preds)
    np.testing.assert_array_equal(read_checked_npy(path), preds)
    _flip(path, len(path.read_bytes()) - 3)
    assert read_checked_npy(path) is None
    assert not path.exists() and not digest_file(path).exists(), "deleted, to be recomputed"
    write_checked_npy(path, preds)
    path.write_bytes(path.read_bytes()[:-8])  # cut short
    assert read_checked_npy(path) is None


def test_unwritable_folders_are_reported(disk, monkeypatch):
    monkeypatch.setenv("KDVIZ_HOME", str(disk.folder / "runs"))
    monkeypatch.setenv("KDVIZ_CACHE", str(disk.folder / "cache"))
    assert settings.unwritable() == []
    if not disk.real:
        pytest.skip("a fake read-only folder is only seen by writes, not by os.access")
    disk.read_only()
    found = {what: why for what, _, why in settings.unwritable()}
    assert found == {"workspace": "read-only file system", "cache": "read-only file system"}
