"""kdviz.core.atomic: a reader sees the old file or the new one, never half of one, and no temp files stay."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from kdviz.core import atomic


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_json_creates_and_replaces(tmp_path):
    target = tmp_path / "sub" / "card.json"  # the parent folder is made on demand
    atomic.write_json(target, {"a": 1, "b": [1, 2]})
    assert json.loads(target.read_text()) == {"a": 1, "b": [1, 2]}
    atomic.write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert _names(target.parent) == ["card.json"]  # no .card.json.*.tmp left behind


def test_write_bytes_and_text_replace_and_leave_no_temp(tmp_path):
    target = tmp_path / "blob.bin"
    atomic.write_bytes(target, b"old" * 1000)
    atomic.write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    atomic.write_text(tmp_path / "t.txt", "héllo")
    assert (tmp_path / "t.txt").read_bytes() == "héllo".encode()
    assert _names(tmp_path) == ["blob.bin", "t.txt"]


def test_replace_keeps_the_inode_swap_atomic(tmp_path):
    """The new content arrives by rename: a reader holding the old file still reads it whole."""
    target = tmp_path / "f.json"
    atomic.write_json(target, {"v": "old"})
    with open(target) as reader:
        atomic.write_json(target, {"v": "new"})
        assert json.loads(reader.read()) == {"v": "old"}
    assert json.loads(target.read_text()) == {"v": "new"}


def test_failure_inside_atomic_path_leaves_old_file_untouched(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"the old, complete file")
    with pytest.raises(RuntimeError, match="killed half-way"):
        with atomic.atomic_path(target) as tmp:
            assert tmp != target and tmp.parent == target.parent
            tmp.write_bytes(b"half of a new fi")
            raise RuntimeError("killed half-way")
    assert target.read_bytes() == b"the old, complete file"
    assert _names(tmp_path) == ["model.safetensors"]


def test_failure_with_no_old_file_creates_nothing(tmp_path):
    target = tmp_path / "new.json"
    with pytest.raises(ValueError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("{")
            raise ValueError("boom")
    assert not target.exists()
    assert _names(tmp_path) == []


def test_write_json_failure_to_serialise_leaves_old_file(tmp_path):
    target = tmp_path / "h.json"
    atomic.write_json(target, [1, 2, 3])
    with pytest.raises(TypeError, match="not JSON serialisable"):
        atomic.write_json(target, {"x": object()})
    assert json.loads(target.read_text()) == [1, 2, 3]
    assert _names(tmp_path) == ["h.json"]


def test_write_json_numbers_arrays_and_paths(tmp_path):
    target = tmp_path / "n.json"
    atomic.write_json(
        target,
        {
            "f32": np.float32(1.5),
            "i64": np.int64(7),
            "b": np.bool_(True),
            "t": torch.tensor(3),
            "arr": np.arange(3),
            "tensor": torch.tensor([0.5, 1.0]),
            "path": Path("runs") / "a",
            "tuple": (1, 2),
        },
    )
    assert json.loads(target.read_text()) == {
        "f32": 1.5,
        "i64": 7,
        "b": True,
        "t": 3,
        "arr": [0, 1, 2],
        "tensor": [0.5, 1.0],
        "path": os.path.join("runs", "a"),
        "tuple": [1, 2],
    }


def test_saved_file_gets_the_usual_mode_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic.write_bytes(tmp_path / "m", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o644


def test_write_npy_and_npz_round_trip_and_leave_no_temp(tmp_path):
    atomic.write_npy(tmp_path / "a.npy", np.arange(6, dtype=np.float16).reshape(2, 3))
    atomic.write_npy(tmp_path / "a.npy", [True, False])  # replaces; anything array-like
    atomic.write_npz(tmp_path / "b.npz", logits=np.ones((2, 3), np.float32), labels=np.array([1, 2]))
    assert np.load(tmp_path / "a.npy").tolist() == [True, False]
    with np.load(tmp_path / "b.npz") as npz:
        assert sorted(npz.files) == ["labels", "logits"] and npz["labels"].tolist() == [1, 2]
    assert _names(tmp_path) == ["a.npy", "b.npz"]


def test_write_npy_refuses_objects_and_keeps_the_old_file(tmp_path):
    """Only numbers are written: what np.load would refuse to read back never replaces a good file."""
    target = tmp_path / "maps.npy"
    atomic.write_npy(target, np.zeros(3))
    with pytest.raises(ValueError):
        atomic.write_npy(target, np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError):
        atomic.write_npz(tmp_path / "e.npz", entry=np.array([object()]))
    assert np.load(target).tolist() == [0.0, 0.0, 0.0]
    assert _names(tmp_path) == ["maps.npy"]
