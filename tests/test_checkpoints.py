"""kdviz.models.checkpoints: safetensors + card round trips, foreign files, and refusing what does not fit."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from kdviz.models import FOREIGN_SUFFIXES, count_params, create_model
from kdviz.models.checkpoints import (
    CARD,
    WEIGHTS,
    CheckpointError,
    ModelCard,
    load_model,
    read_card,
    read_state_dict,
    save_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(name: str = "resnet20", seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model(name, **kw)
    # BatchNorm statistics that differ from the defaults, so that buffers are checked too
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _outputs(model: torch.nn.Module) -> torch.Tensor:
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model.eval()(x)


def _card(**kw) -> ModelCard:
    base = dict(
        arch="resnet20",
        num_classes=10,
        class_names=[f"c{i}" for i in range(10)],
        dataset="digits",
        mean=[0.1, 0.2, 0.3],
        std=[0.4, 0.5, 0.6],
        role="teacher",
        metrics={"test_accuracy": 0.93},
        name="my-teacher",
    )
    base.update(kw)
    return ModelCard(**base)


# ---------------------------------------------------------------------------------- round trips


def test_save_and_load_round_trip(tmp_path):
    model = _model()
    out = save_checkpoint(tmp_path / "ckpt", model, _card())
    assert out == tmp_path / "ckpt"
    assert sorted(p.name for p in out.iterdir()) == sorted([WEIGHTS, CARD])  # and no temp files

    loaded = load_model(out)
    assert type(loaded.model) is type(model) and not loaded.model.training
    assert torch.equal(_outputs(loaded.model), _outputs(model))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    card = loaded.card
    assert (card.arch, card.num_classes, card.dataset, card.role, card.name) == (
        "resnet20",
        10,
        "digits",
        "teacher",
        "my-teacher",
    )
    assert card.class_names == [f"c{i}" for i in range(10)]
    assert card.mean == [0.1, 0.2, 0.3] and card.std == [0.4, 0.5, 0.6]
    assert card.metrics == {"test_accuracy": 0.93}
    assert card.stats["params"] == count_params(model) and card.stats["macs"] > 0
    assert card.created  # stamped on save
    on_disk = json.loads((out / CARD).read_text())
    assert on_disk["arch"] == "resnet20" and on_disk["stats"]["params"] == 269_722


def test_round_trip_keeps_arch_kwargs(tmp_path):
    model = _model("mnv2_student_12x", width_mult=0.25, num_classes=4)
    save_checkpoint(
        tmp_path, model, _card(arch="mnv2_student_12x", arch_kwargs={"width_mult": 0.25}, num_classes=4)
    )
    loaded = load_model(tmp_path)
    assert count_params(loaded.model) == count_params(model) < count_params(create_model("mnv2_student_12x"))
    assert torch.equal(_outputs(loaded.model), _outputs(model))


def test_name_safetensors_with_name_json_beside(tmp_path):
    model = _model(seed=3)
    save_checkpoint(tmp_path / "src", model, _card())
    (tmp_path / "flat").mkdir()
    shutil.copy(tmp_path / "src" / WEIGHTS, tmp_path / "flat" / "teacher.safetensors")
    shutil.copy(tmp_path / "src" / CARD, tmp_path / "flat" / "teacher.json")
    loaded = load_model(tmp_path / "flat" / "teacher.safetensors", "resnet56")  # the card wins over arch
    assert loaded.card.name == "my-teacher" and loaded.card.arch == "resnet20"
    assert torch.equal(_outputs(loaded.model), _outputs(model))


def test_foreign_pt_with_module_prefix_and_wrapper(tmp_path):
    model = _model(seed=5)
    wrapped = {
        "epoch": 180,
        "best_prec1": 91.7,
        "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
    }
    path = tmp_path / "resnet20-foreign.th"
    torch.save(wrapped, path)
    loaded = load_model(path, "resnet20")
    assert torch.equal(_outputs(loaded.model), _outputs(model))
    assert loaded.card.arch == "resnet20" and loaded.card.source_file == str(path)
    assert loaded.card.name == "resnet20-foreign"


def test_foreign_file_without_num_batches_tracked_loads(tmp_path):
    """Older files lack BatchNorm's bookkeeping counter; that alone is no reason to refuse them."""
    model = _model(seed=6)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    assert torch.equal(_outputs(load_model(tmp_path / "old.pth", "resnet20").model), _outputs(model))


def test_foreign_safetensors_without_card(tmp_path):
    from safetensors.torch import save_file

    model = _model(seed=7)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError, match="--arch"):
        load_model(tmp_path / "w.safetensors")
    loaded = load_model(tmp_path / "w.safetensors", "resnet20")
    assert torch.equal(_outputs(loaded.model), _outputs(model))


# ------------------------------------------------------------------------------------ refusals


def test_file_of_another_architecture_names_missing_and_unexpected(tmp_path):
    torch.save(_model("resnet20").state_dict(), tmp_path / "r20.pt")
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "r20.pt", "mnv2_student_12x")
    message = str(info.value)
    assert "r20.pt" in message and "does not fit" in message
    assert "missing" in message and "unexpected" in message
    assert "features.0.0.weight" in message  # a tensor the student needs
    assert "conv1.weight" in message  # a tensor it does not know


def test_deeper_resnet_into_a_shallower_one_names_unexpected(tmp_path):
    torch.save(_model("resnet56").state_dict(), tmp_path / "r56.pt")
    with pytest.raises(CheckpointError, match=r"unexpected: layer1\.3\."):
        load_model(tmp_path / "r56.pt", "resnet20")


def test_class_count_mismatch_names_the_misshaped_tensor(tmp_path):
    torch.save(_model("resnet20", num_classes=100).state_dict(), tmp_path / "c100.pt")
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "c100.pt", "resnet20")
    message = str(info.value)
    assert "mis-shaped" in message
    assert "linear.weight (file (100, 64), model (10, 64))" in message
    assert "linear.bias" in message
    assert "conv1.weight" not in message
    # with the right class count it loads
    assert load_model(tmp_path / "c100.pt", "resnet20", num_classes=100).card.num_classes == 100


def test_card_and_weights_disagreeing_on_classes(tmp_path):
    save_checkpoint(tmp_path, _model(), _card())
    card = json.loads((tmp_path / CARD).read_text())
    card["num_classes"] = 3
    (tmp_path / CARD).write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match=r"mis-shaped: linear\.bias"):
        load_model(tmp_path)


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


def _save_with_torch(obj, path):
    torch.save(obj, path)
    return lambda: torch.load(path, weights_only=False)  # how an unwary reader would load it


def _save_with_pickle(obj, path):
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)
    return lambda: pickle.loads(path.read_bytes())


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("payload", [_ShellPayload, _ExecPayload], ids=["os.system", "builtins.exec"])
@pytest.mark.parametrize("writer", [_save_with_torch, _save_with_pickle], ids=["torch.save", "pickle.dump"])
@pytest.mark.parametrize("suffix", [".pt", ".th"])
def test_hostile_pickle_is_refused_and_not_run(tmp_path, payload, writer, suffix):
    marker = tmp_path / "pwned"
    obj = {"state_dict": _model().state_dict(), "extra": payload(marker)}
    path = tmp_path / f"hostile{suffix}"
    unsafe_load = writer(obj, path)
    # control: the file is live, an unrestricted load runs its payload
    unsafe_load()
    assert marker.exists()
    marker.unlink()

    with pytest.raises(CheckpointError, match="refused"):
        load_model(path, "resnet20")
    with pytest.raises(CheckpointError):
        read_state_dict(path)
    assert not marker.exists()


def test_truncated_safetensors_is_refused(tmp_path):
    save_checkpoint(tmp_path, _model(), _card())
    weights = tmp_path / WEIGHTS
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_model(tmp_path)
    weights.write_bytes(data[:20])  # cut inside the header
    with pytest.raises(CheckpointError, match=WEIGHTS):
        load_model(tmp_path)


def test_truncated_pt_is_refused(tmp_path):
    torch.save(_model().state_dict(), tmp_path / "w.pt")
    data = (tmp_path / "w.pt").read_bytes()
    (tmp_path / "w.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_model(tmp_path / "w.pt", "resnet20")


@pytest.mark.parametrize("name", ["empty.safetensors", "empty.pt"])
def test_empty_file_is_refused(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        load_model(tmp_path / name, "resnet20")


def test_empty_weights_in_a_checkpoint_folder(tmp_path):
    save_checkpoint(tmp_path, _model(), _card())
    (tmp_path / WEIGHTS).write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        load_model(tmp_path)


def test_card_with_invalid_json(tmp_path):
    save_checkpoint(tmp_path, _model(), _card())
    (tmp_path / CARD).write_text('{"arch": "resnet20",')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="card.json"):
        read_card(tmp_path)


@pytest.mark.parametrize("content", ['{"num_classes": 10}', "[1, 2]", '"resnet20"'])
def test_card_without_arch(tmp_path, content):
    save_checkpoint(tmp_path, _model(), _card())
    (tmp_path / CARD).write_text(content)
    with pytest.raises(CheckpointError, match="no 'arch'"):
        load_model(tmp_path)


def test_card_with_unknown_arch(tmp_path):
    save_checkpoint(tmp_path, _model(), _card())
    card = json.loads((tmp_path / CARD).read_text())
    card["arch"] = "resnet9000"
    (tmp_path / CARD).write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="unknown architecture 'resnet9000'"):
        load_model(tmp_path)


def test_card_with_unknown_fields_still_loads(tmp_path):
    """Cards written by a newer kdviz may carry fields this one does not know."""
    model = _model()
    save_checkpoint(tmp_path, model, _card())
    card = json.loads((tmp_path / CARD).read_text())
    card["future_field"] = {"x": 1}
    (tmp_path / CARD).write_text(json.dumps(card))
    assert torch.equal(_outputs(load_model(tmp_path).model), _outputs(model))


def test_load_model_without_card_or_arch(tmp_path):
    torch.save(_model().state_dict(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "plain.pt")
    assert "--arch" in str(info.value) and "plain.pt" in str(info.value)


def test_missing_paths(tmp_path):
    with pytest.raises(CheckpointError, match="no such"):
        load_model(tmp_path / "nothing.pt", "resnet20")
    with pytest.raises(CheckpointError, match="no such file or folder"):
        load_model(tmp_path / "nothing")
    (tmp_path / "folder").mkdir()
    with pytest.raises(CheckpointError, match="folder without card.json"):
        load_model(tmp_path / "folder")
    with pytest.raises(CheckpointError, match="unknown architecture"):
        load_model(_touch(tmp_path / "x.pt"), "nope")


def _touch(path: Path) -> Path:
    torch.save({"w": torch.zeros(1)}, path)
    return path


def test_file_without_tensors(tmp_path):
    torch.save({"epoch": 3, "note": "no weights here"}, tmp_path / "meta.pt")
    with pytest.raises(CheckpointError, match="holds no tensors"):
        load_model(tmp_path / "meta.pt", "resnet20")


# ------------------------------------------------------------------- one door, one card, the loaded model


@pytest.fixture(scope="module")
def digits():
    from kdviz.data import load_dataset

    return load_dataset("digits")


def test_a_foreign_file_with_data_gets_the_data_sets_card(tmp_path, digits):
    """A file from elsewhere knows neither its classes nor its normalisation: the data set says them."""
    torch.save(_model().state_dict(), tmp_path / "r20.th")
    card = load_model(tmp_path / "r20.th", "resnet20", data=digits).card
    assert (card.num_classes, card.dataset, card.image_size) == (10, "digits", digits.image_size)
    assert card.class_names == list(digits.class_names)
    assert card.mean == list(digits.mean) and card.std == list(digits.std)
    assert (card.name, card.source_file, card.stats) == ("r20", str(tmp_path / "r20.th"), {})


def test_with_data_a_model_for_another_class_count_is_refused(tmp_path, digits):
    save_checkpoint(tmp_path / "c4", _model(num_classes=4), _card(num_classes=4, class_names=list("abcd")))
    assert load_model(tmp_path / "c4").card.num_classes == 4  # alone it loads
    with pytest.raises(CheckpointError, match="predicts 4 classes but digits has 10"):
        load_model(tmp_path / "c4", data=digits)


def test_make_card_is_the_card_of_a_run_and_of_a_file(digits):
    from kdviz.models import make_card

    model = _model()
    card = make_card("resnet20", data=digits, model=model, role="teacher", name="t", arch_kwargs={"a": 1})
    assert (card.arch, card.arch_kwargs, card.role, card.name, card.dataset) == (
        "resnet20",
        {"a": 1},
        "teacher",
        "t",
        "digits",
    )
    assert card.stats["params"] == count_params(model)
    bare = make_card("resnet20", num_classes=100)
    assert (bare.num_classes, bare.class_names, bare.stats, bare.mean) == (100, [], {}, [0.5] * 3)


def test_the_loaded_model_preprocesses_with_its_cards_normalisation(tmp_path, digits):
    from kdviz.data.loader import normalize, to_float

    save_checkpoint(tmp_path, _model(), _card())
    loaded = load_model(tmp_path)
    images = digits.test.images[:3]
    expected = normalize(to_float(images), [0.1, 0.2, 0.3], [0.4, 0.5, 0.6])
    assert torch.equal(loaded.preprocess(images), expected)
    assert torch.equal(loaded.preprocess(images[0]), expected[:1])  # one image is a batch of one


def test_the_loaded_model_carries_its_fingerprint_computed_once(tmp_path, monkeypatch):
    from kdviz.models import checkpoints, model_fingerprint

    save_checkpoint(tmp_path, _model(), _card())
    loaded = load_model(tmp_path)
    assert loaded.fingerprint == model_fingerprint(loaded.model)
    monkeypatch.setattr(checkpoints, "model_fingerprint", lambda m: pytest.fail("hashed twice"))
    assert loaded.fingerprint == model_fingerprint(_model())  # the same weights, the same key, not rehashed


@pytest.mark.parametrize(
    "metrics, plain, tta",
    [
        ({"test_accuracy": 0.93, "test_accuracy_tta": 0.94}, 0.93, 0.94),
        ({"test_accuracy": 1}, 1.0, None),
        ({}, None, None),
        (None, None, None),  # "metrics": null in a hand-edited card
        ({"test_accuracy": "high", "test_accuracy_tta": True}, None, None),
    ],
)
def test_the_card_says_its_accuracies(metrics, plain, tta):
    card = _card(metrics=metrics)
    assert card.test_accuracy == plain and card.test_accuracy_tta == tta


@pytest.mark.parametrize("suffix", FOREIGN_SUFFIXES)
def test_every_foreign_suffix_offered_loads(tmp_path, suffix):
    """The upload box offers FOREIGN_SUFFIXES: a file of each kind loads into its architecture."""
    from safetensors.torch import save_file

    model, path = _model(seed=8), tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    assert torch.equal(_outputs(load_model(path, "resnet20").model), _outputs(model))
