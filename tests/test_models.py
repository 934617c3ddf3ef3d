"""kdviz.models: the registry, the paper's teacher and students, the CIFAR ResNets, their costs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import pretrained
from kdviz.models import (
    UnknownModelError,
    compression_ratio,
    count_params,
    create_model,
    get_spec,
    list_models,
    model_stats,
    pretrained_path,
    register_model,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ALL_MODELS = [spec.name for spec in list_models()]
TEACHER_PARAMS = 2_236_682


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_registry_lists_the_expected_models():
    for name in (
        "mobilenetv2_cifar",
        "mobilenetv2_cifar_cut",
        "mnv2_student_2x",
        "mnv2_student_4x",
        "mnv2_student_7x",
        "mnv2_student_12x",
        "resnet20",
        "resnet56",
    ):
        assert name in ALL_MODELS
    assert {s.name for s in list_models("resnet_cifar")} >= {"resnet20", "resnet56"}
    assert all(s.family == "mobilenetv2" for s in list_models("mobilenetv2"))
    assert get_spec("resnet20").pretrained_file == "resnet20-12fca82f.th"


def test_the_registry_says_where_pretrained_weights_lie(tmp_path, monkeypatch):
    """One place knows the pretrained files: the registry, under the data root's pretrained/."""
    monkeypatch.setenv("KDVIZ_DATA", str(tmp_path))
    assert pretrained_path("resnet56") == tmp_path / "pretrained" / "resnet56-4bfd9763.th"
    with pytest.raises(ValueError, match="resnet20, resnet56"):
        pretrained_path("mnv2_student_4x")


@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_model_builds_and_classifies(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


def test_every_model_is_a_function_of_its_own_name():
    """As in timm: ``@register_model def resnet56(...)``, so the name is found where the model is defined."""
    for spec in list_models():
        assert spec.builder.__name__ == spec.name, spec.name


def test_register_model_takes_the_name_from_the_function(monkeypatch):
    from kdviz.models import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_model
    def tiny_net(num_classes: int = 10) -> nn.Module:
        """A linear layer on the mean colour.

        Longer text stays out of the description."""
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, num_classes))

    @register_model(family="toys", description="two layers", pretrained_file="toy.th", hidden=4)
    def toy_mlp(num_classes: int = 10, hidden: int = 8) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, hidden), nn.Linear(hidden, num_classes))

    tiny, toy = get_spec("tiny_net"), get_spec("toy_mlp")
    assert (tiny.family, tiny.description) == ("test_models", "A linear layer on the mean colour.")
    assert (toy.family, toy.description, toy.pretrained_file, toy.defaults) == (
        "toys",
        "two layers",
        "toy.th",
        {"hidden": 4},
    )
    assert create_model("toy_mlp", num_classes=3)[1].out_features == 4  # registered defaults apply
    assert create_model("tiny_net", num_classes=5)(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    with pytest.raises(ValueError, match="registered twice"):
        register_model(tiny_net)


def test_register_model_still_accepts_a_name_first(monkeypatch):
    """The older form, ``@register_model("name", family=..., description=...)``, keeps working."""
    from kdviz.models import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_model("toy_named", family="toys", description="named explicitly")
    def build(num_classes: int = 10) -> nn.Module:
        return nn.Linear(3, num_classes)

    assert get_spec("toy_named").builder is build and "build" not in {s.name for s in list_models()}


def test_num_classes_is_honoured():
    with torch.no_grad():
        assert create_model("resnet20", num_classes=7).eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 7)
        assert create_model("mnv2_student_12x", num_classes=3, width_mult=0.25).eval()(
            torch.zeros(1, 3, 32, 32)
        ).shape == (1, 3)


@pytest.mark.parametrize(
    "name, params",
    [
        ("mobilenetv2_cifar", TEACHER_PARAMS),
        ("mnv2_student_4x", 543_498),
        ("mnv2_student_4x_fast", 543_498),  # the paper's student with a stride-2 stem: same weights
        ("mnv2_student_4x_edge", 540_218),
        ("mobilenetv2_cifar_cut", 543_498),  # cut=5 by default: the paper's student
        ("resnet20", 269_722),
        ("resnet56", 853_018),
    ],
)
def test_parameter_counts(name, params):
    assert count_params(create_model(name)) == params


@pytest.mark.parametrize(
    "name, ratio",
    [
        ("mnv2_student_2x", 2.19),
        ("mnv2_student_4x", 4.12),
        ("mnv2_student_7x", 7.29),
        ("mnv2_student_12x", 12.04),
        ("mnv2_student_4x_fast", 4.12),
        ("mnv2_student_4x_edge", 4.14),
    ],
)
def test_student_compression_ratios(name, ratio):
    assert TEACHER_PARAMS / count_params(create_model(name)) == pytest.approx(ratio, abs=0.01)


def test_cut_out_of_range():
    with pytest.raises(ValueError, match="cut must be between 1 and"):
        create_model("mobilenetv2_cifar_cut", cut=0)
    with pytest.raises(ValueError, match="cut must be between 1 and"):
        create_model("mobilenetv2_cifar_cut", cut=99)


def test_width_mult_shrinks_the_teacher():
    assert count_params(create_model("mobilenetv2_cifar", width_mult=0.5)) < TEACHER_PARAMS / 2


def test_unknown_keyword_names_the_accepted_ones():
    with pytest.raises(TypeError) as info:
        create_model("mnv2_student_4x", depth=3)
    message = str(info.value)
    assert "depth" in message and "width_mult" in message and "num_classes" in message
    with pytest.raises(TypeError, match=r"resnet20 does not take \['width_mult'\]"):
        create_model("resnet20", width_mult=0.5)


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(UnknownModelError) as info:
        create_model("resnet9000")
    message = str(info.value)
    assert "resnet9000" in message
    for name in ALL_MODELS:
        assert name in message
    assert isinstance(info.value, KeyError)  # callers may catch it as a KeyError
    assert not message.startswith('"')  # it reads as a sentence, not a quoted key


@pytest.mark.parametrize("name", [s.name for s in list_models("mobilenetv2")])
def test_no_inplace_activations_in_mobilenets(name):
    model = create_model(name)
    acts = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    assert acts, "a MobileNet-V2 has ReLU6 activations"
    assert not any(m.inplace for m in acts)


def test_teacher_has_cifar_strides_and_dropout():
    teacher = create_model("mobilenetv2_cifar", dropout=0.3)
    assert teacher.features[0][0].stride == (1, 1)
    assert teacher.features[2].conv[1][0].stride == (1, 1)
    assert teacher.classifier[0].p == 0.3
    # of MobileNet-V2's five stride-2 layers three remain: a 32×32 image leaves the features at 4×4
    # (torchvision's ImageNet form would leave 1×1)
    with torch.no_grad():
        assert teacher.eval().features(torch.zeros(1, 3, 32, 32)).shape[-2:] == (4, 4)


def test_resnet_parameter_names_match_the_public_files():
    names = set(create_model("resnet20").state_dict())
    assert {
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.conv1.weight",
        "layer3.2.bn2.weight",
        "linear.weight",
        "linear.bias",
    } <= names
    assert not any("shortcut" in n for n in names)  # option A: parameter-free shortcuts


@pytest.mark.parametrize("name", ["resnet20", "mnv2_student_12x"])
def test_model_stats(name):
    model = create_model(name)
    was = model.training
    stats = model_stats(model)
    assert model.training == was  # counting MACs does not leave the model in eval mode
    assert stats.params == count_params(model)
    assert stats.macs > 1_000_000
    # float32 weights plus BatchNorm buffers (running mean and var) and a small header
    assert 4 * stats.params < stats.size_bytes < 4 * stats.params * 1.1
    assert stats.as_dict() == {"params": stats.params, "size_bytes": stats.size_bytes, "macs": stats.macs}


def test_model_stats_macs_grow_with_image_size_and_depth():
    r20 = create_model("resnet20")
    assert model_stats(r20, image_size=64).macs > 3 * model_stats(r20).macs
    assert model_stats(create_model("resnet56")).macs > 2.5 * model_stats(r20).macs


def test_compression_ratio():
    teacher = model_stats(create_model("mobilenetv2_cifar"))
    student = model_stats(create_model("mnv2_student_4x"))
    assert compression_ratio(teacher, student) == pytest.approx(4.12, abs=0.01)
    assert student.macs < teacher.macs


# ------------------------------------------------------------------------ pretrained, real data


@pytest.fixture(scope="module")
def cifar_test_slice():
    """The first 100 images of each class of the real CIFAR-10 test folder (1,000 images)."""
    from kdviz.data.cifar import CLASSES
    from kdviz.data.folder import load_split

    root = SHARED_DATA / "cifar10"
    if not (root / "test").is_dir() or not (SHARED_DATA / "pretrained").is_dir():
        pytest.skip(f"../shared/data/cifar10 not found: the pretrained-model tests need {SHARED_DATA}")
    test = load_split(root, "test", list(CLASSES), 32)
    idx = np.concatenate([np.flatnonzero(test.labels == c)[:100] for c in range(10)])
    return test.subset(idx)


@pytest.mark.slow
@pytest.mark.parametrize(
    "arch, minimum",
    # measured on this slice: resnet20 0.804, resnet56 0.825 (full test set: 81.0 % and 83.2 %)
    [("resnet20", 0.78), ("resnet56", 0.80)],
)
def test_pretrained_resnets_load_and_are_accurate(cifar_test_slice, arch, minimum):
    from kdviz.data import IMAGENET_MEAN, IMAGENET_STD
    from kdviz.models.checkpoints import load_model
    from kdviz.models.evaluate import predict

    path = pretrained(arch)
    if not path.is_file():
        pytest.skip(f"{path} not found")
    loaded = load_model(path, arch)
    assert loaded.card.arch == arch and loaded.card.source_file == str(path)
    assert not loaded.model.training
    assert np.bincount(cifar_test_slice.labels).tolist() == [100] * 10
    pred = predict(loaded.model, cifar_test_slice, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert pred.logits.shape == (1000, 10)
    assert pred.accuracy >= minimum, f"{arch}: {pred.accuracy:.3f} on 1,000 test images"
    # every class is recognised well above chance
    assert np.nanmin(pred.per_class_accuracy(10)) > 0.5


def test_speed_students_do_less_work_than_the_papers_student():
    """The CPU students keep the paper's 4.1× parameter ratio but cut the work (and, for the edge
    student, the layers) that make the paper's student slow at batch 1; latency itself is measured
    in benchmarks/bench_latency.py, not here."""
    paper = create_model("mnv2_student_4x")
    fast, edge = create_model("mnv2_student_4x_fast"), create_model("mnv2_student_4x_edge")
    macs = {n: model_stats(m).macs for n, m in (("paper", paper), ("fast", fast), ("edge", edge))}
    assert macs["fast"] < macs["paper"] / 3.5 and macs["edge"] < macs["paper"] / 5
    convs = {
        n: sum(isinstance(x, nn.Conv2d) for x in m.modules()) for n, m in (("paper", paper), ("edge", edge))
    }
    assert convs["edge"] * 3 <= convs["paper"]  # a third of the layers
