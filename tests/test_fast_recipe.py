"""The fast CPU recipe: each technique on a tiny slice, the airnet family, determinism and resume."""

from __future__ import annotations

import pytest
import torch

from kdviz.core import machine
from kdviz.data import load_dataset
from kdviz.data.loader import Augment, iterate_batches, random_crop_flip
from kdviz.models import create_model, get_spec, list_models, model_stats
from kdviz.models.airnet import AirNet
from kdviz.models.evaluate import predict, tta_logits
from kdviz.training.loop import Lookahead, TrainConfig, lr_at, make_optimizer, train
from kdviz.training.optimizers import FilterMuon, normalised_filters
from kdviz.training.workflows import FAST_TECHNIQUES, fast_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: a fast-recipe run small enough for a test: 3 epochs of 4 steps on 128 digits
TINY = dict(batch_size=32, train_limit=128, eval_limit=64, seed=5)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _card(digits):
    from kdviz.models.checkpoints import ModelCard

    return ModelCard(
        arch="airnet_student_64x",
        num_classes=10,
        class_names=list(digits.class_names),
        dataset="digits",
        mean=list(digits.mean),
        std=list(digits.std),
    )


# ------------------------------------------------------------------------------------- the family


def test_airnet_family_is_registered_with_stated_ratios():
    names = {s.name for s in list_models("airnet")}
    assert names == {
        "airnet_cifar",
        "airnet_student_2x",
        "airnet_student_4x",
        "airnet_student_8x",
        "airnet_student_16x",
        "airnet_student_32x",
        "airnet_student_64x",
    }
    teacher = model_stats(create_model("airnet_cifar"), 32)
    assert 1.9e6 < teacher.params < 2.05e6  # airbench94's size
    for name in names - {"airnet_cifar"}:
        stated = float(name.rsplit("_", 1)[1].rstrip("x"))
        stats = model_stats(create_model(name), 32)
        ratio = teacher.params / stats.params
        assert 0.85 * stated <= ratio <= 1.1 * stated, (name, ratio)
        assert f"{ratio:.1f}"[:1] in get_spec(name).description  # the description states it
        assert stats.macs < teacher.macs
    four = teacher.params / model_stats(create_model("airnet_student_4x"), 32).params
    assert 4.0 <= four <= 4.3  # at least 4× fewer parameters, near the paper's 4.1


def test_airnet_has_no_depthwise_layers_and_tuned_batch_norm():
    net = create_model("airnet_cifar")
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.groups == 1 for c in convs)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(not b.weight.requires_grad and b.eps == 1e-12 for b in bns)
    plain = create_model("airnet_cifar", tuned_bn=False)
    assert all(m.weight.requires_grad for m in plain.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_whitening_layer_decorrelates_patches(digits):
    from kdviz.data.loader import normalize, to_float

    net = AirNet()
    images = normalize(to_float(digits.train.images[:400]), digits.mean, digits.std)
    net.init_whitening(images)
    with torch.no_grad():
        out = net.whiten(images) - net.whiten.bias.view(1, -1, 1, 1)
    half = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12).double()  # the + half; the - half mirrors it
    cov = half.T @ half / len(half)
    eigen = torch.linalg.eigvalsh(torch.cov(half.T))
    # every whitened direction with (near) unit variance where the data varies, uncorrelated with the rest
    assert torch.allclose(net.whiten.weight[12:], -net.whiten.weight[:12])
    off_diagonal = cov - torch.diag(torch.diag(cov))
    assert off_diagonal.abs().max() < 0.05
    assert (torch.diag(cov)[:4] > 0.8).all() and (torch.diag(cov) < 1.05).all()
    assert eigen.max() < 1.05


# ------------------------------------------------------------------------------------- the techniques


def test_triangle_schedule():
    total, base = 100, 2.0
    lrs = [lr_at(s, total, 0, base, "triangle") for s in range(total)]
    assert lrs[0] == pytest.approx(0.2 * base)
    assert max(lrs) == pytest.approx(base) and lrs.index(max(lrs)) == 23
    assert lrs[-1] == pytest.approx(base * (1 - 0.93 * 76 / 77))
    assert lr_at(total, total, 0, base, "triangle") == pytest.approx(0.07 * base)
    with pytest.raises(ValueError, match="schedule"):
        lr_at(0, 10, 0, 1.0, "steps")


def test_linear_schedule_falls_from_the_rate_to_zero():
    assert [lr_at(s, 4, 0, 2.0, "linear") for s in range(5)] == [2.0, 1.5, 1.0, 0.5, 0.0]


def test_bias_learning_rate_scale_and_its_decay():
    net = create_model("airnet_student_64x")
    cfg = fast_config(2)
    opt = make_optimizer(net, cfg)
    weights, biases, _filters = opt.param_groups
    assert weights["lr_scale"] == 1.0 and biases["lr_scale"] == 64.0
    assert biases["weight_decay"] == pytest.approx(cfg.weight_decay / 64)
    plain = make_optimizer(net, TrainConfig())
    assert plain.param_groups[1]["weight_decay"] == 0.0  # the default recipe: no decay on 1-D parameters


def test_lookahead_pulls_weights_to_their_average_and_copies_it_at_the_end():
    net = torch.nn.Linear(3, 2)
    look = Lookahead(net)
    start = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    look.update(net, step=3, total_steps=10)  # not a multiple of 5: nothing happens
    assert torch.equal(net.weight, start + 1.0)
    look.update(net, step=5, total_steps=10)
    decay = 0.95**5 * 0.5**3
    assert torch.allclose(net.weight, start + (1 - decay))  # moved toward the average, not onto it
    assert torch.equal(look.average["weight"], net.weight)
    with torch.no_grad():
        net.weight.add_(5.0)
    look.update(net, step=10, total_steps=10)  # the last step: the model becomes the average
    assert torch.allclose(net.weight, start + (1 - decay))


def test_lookahead_leaves_a_run_too_short_to_average_alone():
    """A run of at most ``every`` steps never updated the average: the end must not undo the run."""
    net = torch.nn.Linear(3, 2)
    look = Lookahead(net)
    with torch.no_grad():
        net.weight.add_(1.0)
    trained = net.weight.detach().clone()
    look.update(net, step=1, total_steps=1)  # one step per epoch, one epoch: a 1,024-image smoke run
    assert torch.equal(net.weight, trained)
    look.update(net, step=5, total_steps=5)
    assert torch.equal(net.weight, trained)


def test_ema_weights_differ_from_raw_weights(digits):
    torch.manual_seed(0)
    a = create_model("airnet_student_64x")
    torch.manual_seed(0)
    b = create_model("airnet_student_64x")
    train(a, digits, fast_config(2, **TINY), write=False)
    train(b, digits, fast_config(2, off=("lookahead",), **TINY), write=False)
    assert any(
        not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_alternating_flip_flips_each_image_every_other_epoch():
    aug = Augment(crop_padding=0, hflip=True, flip_mode="alternate", seed=3)
    idx = torch.arange(200)
    e1, e2, e3 = (aug.epoch_flips(idx, 200, e) for e in (1, 2, 3))
    assert torch.equal(e1, e3) and torch.equal(e1, ~e2)
    assert 60 < int(e1.sum()) < 140  # about half flipped
    assert not torch.equal(e1, Augment(0, True, flip_mode="alternate", seed=4).epoch_flips(idx, 200, 1))
    assert Augment().epoch_flips(idx, 200, 1) is None  # random flips draw per batch


def test_reflect_translation_keeps_the_border_and_moves_maps_with_images():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    maps = x[:, :1].clone()
    aug = Augment(crop_padding=2, hflip=False, pad_mode="reflect")
    out, (m,) = random_crop_flip(x, aug, torch.Generator().manual_seed(0), extras=[maps])
    assert torch.equal(out[:, :1], m)  # the map follows its image
    assert (out != 0).all()  # no zero border, unlike zero padding (x has no zeros but its first pixel)
    with pytest.raises(ValueError, match="pad_mode"):
        Augment(pad_mode="wrap")


def test_tta_changes_logits_but_not_the_plain_accuracy_figure(digits):
    torch.manual_seed(0)
    net = create_model("airnet_student_64x").eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(tta_logits(net, x), net(x))
    plain = predict(net, digits.test, mean=digits.mean, std=digits.std, limit=64)
    again = predict(net, digits.test, mean=digits.mean, std=digits.std, limit=64)
    tta = predict(net, digits.test, mean=digits.mean, std=digits.std, limit=64, tta=True)
    assert plain.accuracy == again.accuracy and (plain.logits == again.logits).all()
    assert not (tta.logits == plain.logits).all()


def test_every_technique_can_be_switched_off():
    on = fast_config(3)
    for name, values in FAST_TECHNIQUES.items():
        off = fast_config(3, off=(name,))
        for key, value in values.items():
            assert getattr(off, key) == value and getattr(on, key) != value, (name, key)
    with pytest.raises(ValueError, match="unknown technique"):
        fast_config(3, off=("magic",))


def test_whitening_needs_a_model_with_a_whitening_stem(digits):
    with pytest.raises(ValueError, match="whitening stem"):
        train(create_model("resnet20"), digits, fast_config(1, **TINY), write=False)
    # with whitening off, the fast recipe trains any architecture
    train(create_model("resnet20"), digits, fast_config(1, off=("whiten",), **TINY), write=False)


def test_bfloat16_is_refused_where_the_cpu_would_emulate_it(monkeypatch):
    monkeypatch.setattr(machine, "native_bfloat16", lambda: False)
    with pytest.raises(machine.PrecisionError, match="no native bfloat16"):
        machine.check_precision("bfloat16")
    machine.check_precision("float32")
    with pytest.raises(machine.PrecisionError):
        machine.check_precision("float16")


@pytest.mark.skipif(not machine.native_bfloat16(), reason="this CPU has no native bfloat16 instructions")
def test_bfloat16_run_trains_and_its_card_says_so(digits, tmp_path):
    from kdviz.models.checkpoints import read_card

    torch.manual_seed(0)
    net = create_model("airnet_student_64x")
    card = _card(digits)
    train(net, digits, fast_config(1, precision="bfloat16", **TINY), run_dir=tmp_path, card=card)
    saved = read_card(tmp_path)
    assert saved.metrics["precision"] == "bfloat16" and saved.metrics["machine"]["native_bfloat16"]
    assert all(p.dtype == torch.float32 for p in net.parameters())  # autocast: the weights stay float32


# ------------------------------------------------------------------------------------- the loop


def _run(digits, run_dir, stop_after_steps: int | None = None, **overrides):
    torch.manual_seed(11)
    net = create_model("airnet_student_64x")
    steps = {"n": 0}

    def should_stop() -> bool:
        steps["n"] += 1
        return stop_after_steps is not None and steps["n"] >= stop_after_steps

    cfg = fast_config(3, **TINY, **overrides)
    result = train(net, digits, cfg, run_dir=run_dir, should_stop=should_stop)
    return net, result


@pytest.mark.parametrize("optimizer", ["sgd", "muon"])
def test_fast_recipe_resume_is_bitwise_the_uninterrupted_run(digits, tmp_path, optimizer):
    full, result_full = _run(digits, tmp_path / "full", optimizer=optimizer)
    _, stopped = _run(digits, tmp_path / "cut", stop_after_steps=6, optimizer=optimizer)  # stops in epoch 2
    assert stopped.stopped and len(stopped.history) == 1
    resumed, result_resumed = _run(digits, tmp_path / "cut", optimizer=optimizer)
    assert result_resumed.resumed_from == 1 and len(result_resumed.history) == 3
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), (
        "the resumed fast-recipe run differs from the uninterrupted one"
    )
    assert result_full.history[-1].test_acc == result_resumed.history[-1].test_acc
    again, _ = _run(digits, tmp_path / "again", optimizer=optimizer)  # the same seed, the same weights
    assert all(torch.equal(a[k], again.state_dict()[k]) for k in a)


def test_fast_recipe_writes_the_tta_accuracy_beside_the_plain_one(digits, tmp_path):
    from kdviz.models.checkpoints import read_card

    torch.manual_seed(0)
    net = create_model("airnet_student_64x")
    card = _card(digits)
    result = train(net, digits, fast_config(2, **TINY), run_dir=tmp_path, card=card)
    metrics = read_card(tmp_path).metrics
    assert metrics["test_accuracy"] == result.history[-1].test_acc  # the plain figure, as every run has
    assert 0.0 <= metrics["test_accuracy_tta"] <= 1.0 and metrics["precision"] == "float32"
    assert "test_accuracy_tta" not in {f for f in vars(result.history[-1])}


def test_iterate_batches_passes_the_epoch_to_the_alternating_flip(digits):
    aug = Augment(crop_padding=0, hflip=True, flip_mode="alternate", seed=0)
    first = [
        x
        for x, _, _ in iterate_batches(
            digits.train,
            16,
            mean=digits.mean,
            std=digits.std,
            augment=aug,
            indices=torch.arange(16).numpy(),
            epoch=1,
        )
    ][0]
    second = [
        x
        for x, _, _ in iterate_batches(
            digits.train,
            16,
            mean=digits.mean,
            std=digits.std,
            augment=aug,
            indices=torch.arange(16).numpy(),
            epoch=2,
        )
    ][0]
    assert torch.allclose(first, second.flip(3))


def test_only_norm_parameters_get_the_bias_learning_rate():
    net = create_model("airnet_student_64x")
    weights, norms, _filters = make_optimizer(net, fast_config(2)).param_groups
    bn_params = {id(p) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    assert {id(p) for p in norms["params"]} == bn_params
    assert any(p is net.whiten.bias for p in weights["params"])  # the stem's bias: base rate, decayed


# ------------------------------------------------------------------------------------------ Muon


def test_muon_takes_the_filters_a_norm_layer_follows_and_sgd_the_rest():
    net = create_model("airnet_student_64x")
    convs = [m for m in net.layers.modules() if isinstance(m, torch.nn.Conv2d)]
    assert {id(p) for p in normalised_filters(net)} == {id(c.weight) for c in convs} and len(convs) == 6
    cfg = fast_config(2, optimizer="muon")
    opt = make_optimizer(net, cfg)
    assert isinstance(opt, FilterMuon)
    weights, norms, filters = opt.param_groups
    assert filters["muon"] and not weights["muon"] and not norms["muon"]
    assert filters["lr_scale"] * cfg.lr == pytest.approx(cfg.muon_lr)
    assert any(p is net.whiten.weight for p in weights["params"])  # the stem: no norm layer after it
    assert any(p is net.head.weight for p in weights["params"])
    owned = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(owned) == sorted(id(p) for p in net.parameters())  # each parameter in one group


def test_a_muon_step_renormalises_the_filters_and_orthogonalises_the_update():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 8, 3, bias=False)
    with torch.no_grad():
        conv.weight.mul_(5.0)
    u, _, v = torch.linalg.svd(torch.randn(8, 36), full_matrices=False)
    spread = torch.logspace(0, -1.3, 8)  # singular values from 1 down to 0.05
    conv.weight.grad = (u @ torch.diag(spread) @ v).view_as(conv.weight).clone()
    renormed = conv.weight.detach() * (8**0.5) / conv.weight.detach().norm()
    opt = FilterMuon([{"params": [conv.weight], "muon": True}], lr=0.1)
    opt.step()
    update = (renormed - conv.weight.detach()).reshape(8, -1) / 0.1
    sv = torch.linalg.svdvals(update)
    assert sv.min() > 0.5 and sv.max() < 1.5, sv  # every direction moves alike, however small its gradient
    assert renormed.norm() == pytest.approx(8**0.5, rel=1e-5)
    with pytest.raises(ValueError, match="1-D"):
        FilterMuon([{"params": [torch.nn.Parameter(torch.zeros(3))], "muon": True}], lr=0.1)


def test_the_sgd_groups_of_filter_muon_step_as_torch_sgd_does():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    ours = FilterMuon([{"params": list(a.parameters()), "weight_decay": 0.01}], lr=0.2, momentum=0.85)
    torch_sgd = torch.optim.SGD(b.parameters(), lr=0.2, momentum=0.85, nesterov=True, weight_decay=0.01)
    for _ in range(3):
        x = torch.randn(7, 5)
        for net, opt in ((a, ours), (b, torch_sgd)):
            opt.zero_grad()
            net(x).square().sum().backward()
            opt.step()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
