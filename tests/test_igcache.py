"""kdviz.attribution.igcache: the teacher's IG map of every image, stored by index, resumable and shardable;
and the ``attribute`` / ``ig-precompute`` commands driven as a person would (subprocess, JSON, exit code).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdviz.attribution import attribute
from kdviz.attribution.igcache import INDEX, MAPS, IGCacheError, IGMapStore, adopt, precompute
from kdviz.data import load_dataset
from kdviz.data.loader import normalize
from kdviz.models.checkpoints import load_model

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT / "assets" / "digits_teacher"
N, STEPS, BATCH = 24, 4, 8
# Pinned: left unset, precompute first measures the fastest internal batch size (fastest_batch_size),
# which costs tens of seconds per process on a busy 2-core machine and is not what these tests check.
IBS = "32"


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def teacher():
    return load_model(TEACHER)


def run_precompute(teacher, digits, out, **kw):
    card = teacher.card
    options = dict(
        rank=0,
        world=1,
        split="train",
        steps=STEPS,
        batch_size=BATCH,
        limit=N,
        teacher_name="digits_teacher",
        internal_batch_size=int(IBS),
    )
    options.update(kw)
    model = options.pop("model", teacher.model)
    return precompute(model, digits, out, mean=card.mean, std=card.std, **options)


@pytest.fixture(scope="module")
def reference(teacher, digits, tmp_path_factory):
    """One uninterrupted run, the yardstick of the others."""
    out = tmp_path_factory.mktemp("ig-reference")
    store = run_precompute(teacher, digits, out)
    return out, store, np.array(store.maps, dtype=np.float32)


def assert_same_maps(a: np.ndarray, b: np.ndarray) -> None:
    # float16 storage: one unit in the last place is about 1e-3 relative.
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-3)


# --------------------------------------------------------------------------- layout and pairing


def test_precompute_layout(reference):
    out, store, maps = reference
    assert store.complete and len(store) == N
    on_disk = np.load(out / MAPS)
    assert on_disk.shape == (N, 32, 32) and on_disk.dtype == np.float16
    assert (out / "done-0-of-1.npy").is_file()
    spec = json.loads((out / INDEX).read_text())
    assert spec["n"] == N and spec["steps"] == STEPS and spec["target"] == "true"
    assert spec["dataset"] == "digits" and spec["split"] == "train"
    assert np.isfinite(maps).all() and (maps >= 0).all()
    assert (maps.reshape(N, -1).sum(1) > 0).all(), "every row was written"
    assert store[3].dtype == np.float32 and store[3].shape == (32, 32)
    # Reopening the folder reads the same thing.
    again = IGMapStore(out)
    assert again.complete and np.array_equal(np.asarray(again.maps), on_disk)


def test_store_index_is_the_image_index(reference, teacher, digits):
    """store[i] is |IG of image i for its TRUE label| summed over channels: computed here directly."""
    _, store, maps = reference
    card = teacher.card
    idx = np.array([23, 5, 0, 17, 11])
    split = digits.train
    x = teacher.preprocess(split.images[idx])
    direct = attribute(
        teacher.model,
        x,
        method="ig",
        steps=STEPS,
        target="true",
        labels=split.labels[idx],
        mean=card.mean,
        std=card.std,
        cache=False,
    )
    assert np.array_equal(direct.target, split.labels[idx])
    expected = np.abs(direct.maps).sum(1)
    for j, i in enumerate(idx):
        assert_same_maps(store[int(i)], expected[j])
    # ... and not the map of a neighbour: the pairing is by index, not by luck.
    assert not np.allclose(store[5], expected[0], rtol=2e-3, atol=1e-3)
    # The true label, not the prediction or another class, is attributed.
    wrong = (split.labels[idx] + 1) % 10
    other = np.abs(
        attribute(
            teacher.model,
            x,
            method="ig",
            steps=STEPS,
            target="true",
            labels=wrong,
            mean=card.mean,
            std=card.std,
            cache=False,
        ).maps
    ).sum(1)
    assert not np.allclose(other, expected, rtol=2e-3, atol=1e-3)


def test_read_keeps_the_order_asked_for(reference):
    _, store, maps = reference
    idx = [17, 3, 23, 0, 3, 9]
    out = store.read(idx)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (6, 32, 32)
    np.testing.assert_array_equal(out.numpy(), maps[idx])
    np.testing.assert_array_equal(store.read(torch.tensor([2, 1])).numpy(), maps[[2, 1]])


def test_not_a_cache_folder(tmp_path):
    with pytest.raises(IGCacheError, match="ig-precompute"):
        IGMapStore(tmp_path)


# --------------------------------------------------------------------------- resume, options, shards


def test_resume_after_a_stop_equals_an_uninterrupted_run(reference, teacher, digits, tmp_path):
    progress = []
    stopped = run_precompute(
        teacher,
        digits,
        tmp_path,
        should_stop=lambda: True,
        progress=lambda done, total, rate: progress.append((done, total)),
    )
    assert not stopped.complete
    assert stopped.done.sum() == BATCH and stopped.done[:BATCH].all()
    assert progress == [(BATCH, N)]
    first_chunk = np.array(stopped.maps[:BATCH], dtype=np.float32)

    progress.clear()
    resumed = run_precompute(
        teacher, digits, tmp_path, progress=lambda done, total, rate: progress.append((done, total))
    )
    assert resumed.complete
    assert progress == [(2 * BATCH, N), (N, N)], "the finished chunk was not recomputed"
    maps = np.array(resumed.maps, dtype=np.float32)
    np.testing.assert_array_equal(maps[:BATCH], first_chunk)
    assert_same_maps(maps, reference[2])

    # A finished cache is a no-op to run again.
    progress.clear()
    assert run_precompute(teacher, digits, tmp_path, progress=lambda *a: progress.append(a)).complete
    assert progress == []


def test_a_finished_cache_is_adopted_whole_and_an_unfinished_one_refused(
    reference, teacher, digits, tmp_path
):
    out, _, maps = reference
    mine = tmp_path / "mine"
    # an adoption cut short after its maps and before its index: the next one finishes it
    mine.mkdir()
    (mine / MAPS).write_bytes(b"half")
    adopted = adopt(out, mine)
    assert adopted.complete and adopted.spec == IGMapStore(out).spec
    np.testing.assert_array_equal(np.asarray(adopted.maps, dtype=np.float32), maps)
    assert (mine / MAPS).samefile(out / MAPS) and not list(mine.glob(".*"))  # linked; no lock, no leftovers

    unfinished = tmp_path / "unfinished"
    run_precompute(teacher, digits, unfinished, should_stop=lambda: True)
    with pytest.raises(IGCacheError, match="not finished"):
        adopt(unfinished, tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def test_other_options_in_the_same_folder_are_refused(reference, teacher, digits, tmp_path):
    run_precompute(teacher, digits, tmp_path, should_stop=lambda: True)
    before = np.array(IGMapStore(tmp_path).maps)
    other = load_model(TEACHER).model  # another teacher: one weight changed
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 0.1
    for change, word in [
        ({"steps": STEPS + 1}, "steps"),
        ({"baseline": "black"}, "baseline"),
        ({"split": "test"}, "split"),
        ({"limit": N - 1}, "n"),
        ({"model": other}, "teacher"),
    ]:
        with pytest.raises(IGCacheError) as err:
            run_precompute(teacher, digits, tmp_path, **change)
        assert re.search(rf"[(,] ?{word}: ", str(err.value)), str(err.value)
        assert "another folder" in str(err.value)
    np.testing.assert_array_equal(np.array(IGMapStore(tmp_path).maps), before)  # nothing was overwritten


def test_two_shards_fill_the_same_cache(reference, teacher, digits, tmp_path):
    first = run_precompute(teacher, digits, tmp_path, rank=0, world=2)
    assert not first.complete
    assert first.done.tolist() == [i % 2 == 0 for i in range(N)]
    second = run_precompute(teacher, digits, tmp_path, rank=1, world=2)
    assert second.complete
    assert (tmp_path / "done-0-of-2.npy").is_file() and (tmp_path / "done-1-of-2.npy").is_file()
    assert_same_maps(np.array(second.maps, dtype=np.float32), reference[2])


# --------------------------------------------------------------------------- the commands


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """The CLI from the repository root; the environment (and the test's KDVIZ_HOME) is inherited."""
    return subprocess.run(
        [sys.executable, "-m", "kdviz", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_cli_ig_precompute(reference, tmp_path):
    out = tmp_path / "ig"
    proc = cli(
        "ig-precompute",
        "--weights",
        str(TEACHER),
        "--data",
        "digits",
        "--split",
        "train",
        "--limit",
        "16",
        "--steps",
        str(STEPS),
        "--out",
        str(out),
        "--internal-batch-size",
        IBS,
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["complete"] is True and result["images"] == 16 and result["done"] == 16
    store = IGMapStore(out)
    assert store.complete and store.maps.shape == (16, 32, 32)
    # The command normalises as the library does: its maps are the reference's first 16 rows.
    assert_same_maps(np.array(store.maps, dtype=np.float32), reference[2][:16])


def test_cli_attribute_one_image(teacher, digits, tmp_path):
    png = tmp_path / "digit.png"
    Image.fromarray(digits.test.images[7]).save(png)
    out = tmp_path / "m.npy"
    proc = cli(
        "attribute",
        "--weights",
        str(TEACHER),
        "--image",
        str(png),
        "--method",
        "ig",
        "--steps",
        "8",
        "--baseline",
        "black",
        "--out",
        str(out),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    result = json.loads(lines[0])
    for key in ("target", "label", "score", "baseline_score", "delta"):
        assert key in result, key
    m = np.load(out)
    assert m.dtype == np.float32 and m.shape == (3, 32, 32)
    assert result["shape"] == [3, 32, 32]
    gap = float(m.sum()) - (result["score"] - result["baseline_score"])
    assert result["delta"] == pytest.approx(gap, rel=1e-3, abs=1e-4)

    # The numbers are the teacher's on that image.
    card = teacher.card
    x = teacher.preprocess(digits.test.images[7:8])
    black = normalize(torch.zeros(1, 3, 32, 32), card.mean, card.std)
    with torch.no_grad():
        logits = teacher.model.eval()(x)[0]
        base = teacher.model(black)[0]
    assert result["target"] == int(logits.argmax())
    assert result["label"] == card.class_names[result["target"]]
    assert result["score"] == pytest.approx(float(logits[result["target"]]), rel=1e-4, abs=1e-4)
    assert result["baseline_score"] == pytest.approx(float(base[result["target"]]), rel=1e-4, abs=1e-4)


def test_cli_attribute_unreadable_image(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    proc = cli("attribute", "--weights", str(TEACHER), "--image", str(bad), "--json")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("kdviz: error:") and "bad.png" in lines[0] and "not an image" in lines[0]
    assert proc.stdout.strip() == ""
