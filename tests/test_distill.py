"""kdviz.training.ig_overlay and the distillation in kdviz.training: the KD loss, the IG overlay,
the pairing of maps with images, and a distilled student's run (card, resume)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdviz.attribution.igcache import INDEX, MAPS, IGCacheError, IGCacheSpec, IGMapStore
from kdviz.data import load_dataset
from kdviz.data.base import Dataset, ImageSplit
from kdviz.data.loader import denormalize
from kdviz.models.checkpoints import CARD, LoadedModel, ModelCard, load_model
from kdviz.training import (
    ARMS,
    DistillConfig,
    DistillRequest,
    arm_parts,
    distill_batches,
    distill_objective,
    distill_run,
    ensure_ig_cache,
    holdout_split,
    kd_loss,
    shard_order,
    subset_dataset,
    teacher_view,
)
from kdviz.training.ig_overlay import OverlayConfig, overlay, unit_maps
from kdviz.training.loop import RESUME, TrainEvent, epoch_generator

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT / "assets" / "digits_teacher"
STUDENT = ("mnv2_student_4x_fast", {"width_mult": 0.5})


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------------- the KD loss


def test_kd_loss_matches_a_hand_computation():
    s = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    t = torch.tensor([[1.0, 2.0, 0.0], [-1.0, 0.5, 2.5]])
    y = torch.tensor([0, 2])
    T, alpha = 2.5, 0.3

    def softmax(v):
        e = np.exp(v - v.max())
        return e / e.sum()

    kl = 0.0
    ce = 0.0
    for i in range(2):
        p_t, p_s = softmax(t[i].numpy() / T), softmax(s[i].numpy() / T)
        kl += float(np.sum(p_t * (np.log(p_t) - np.log(p_s))))
        ce += -float(np.log(softmax(s[i].numpy())[y[i]]))
    expected = alpha * T * T * kl / 2 + (1 - alpha) * ce / 2
    assert kd_loss(s, t, y, temperature=T, alpha=alpha).item() == pytest.approx(expected, rel=1e-5)


def test_kd_loss_limits():
    s, t, y = torch.randn(5, 4), torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    assert kd_loss(s, t, y, temperature=3.0, alpha=0.0).item() == pytest.approx(F.cross_entropy(s, y).item())
    # a student that already agrees with the teacher pays only the hard term
    assert kd_loss(t, t, y, temperature=3.0, alpha=1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(s, t, y, temperature=3.0, alpha=1.0).item() > 0


def test_arms_are_the_combinations_of_their_ingredients():
    assert {arm: arm_parts(arm) for arm in ARMS} == {
        "baseline": (False, False),
        "kd": (True, False),
        "ig": (False, True),
        "kd+ig": (True, True),
        "at": (False, False),
        "kd+at": (True, False),
        "kd+ig+at": (True, True),
    }
    assert [a for a in ARMS if DistillConfig(arm=a).uses_at] == ["at", "kd+at", "kd+ig+at"]
    assert [a for a in ARMS if not DistillConfig(arm=a).uses_teacher] == ["baseline", "ig"]
    with pytest.raises(ValueError, match="unknown arm"):
        DistillConfig(arm="ig+at")
    with pytest.raises(ValueError, match="alpha"):
        DistillConfig(alpha=1.5)
    with pytest.raises(ValueError, match="probability"):
        DistillConfig(overlay_p=2.0)


# ----------------------------------------------------------------------------------- the overlay


def _batch(n=16, h=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, h, generator=g), torch.rand(n, h, h, generator=g) * 5


@pytest.mark.parametrize("mode", ["blend", "emphasis"])
def test_overlay_at_p_zero_leaves_every_image_unchanged(mode):
    x, m = _batch()
    out, chosen = overlay(x, m, OverlayConfig(p=0.0, lam=0.9, mode=mode), torch.Generator().manual_seed(1))
    assert torch.equal(out, x) and not chosen.any()


@pytest.mark.parametrize("mode", ["blend", "emphasis"])
@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_overlay_keeps_shape_and_range(mode, lam):
    x, m = _batch(n=64)
    out, chosen = overlay(x, m, OverlayConfig(p=1.0, lam=lam, mode=mode), torch.Generator().manual_seed(2))
    assert out.shape == x.shape and out.dtype == x.dtype and chosen.all()
    assert out.min() >= 0.0 and out.max() <= 1.0
    if lam == 0.0:
        assert torch.allclose(out, x)
    else:
        assert not torch.allclose(out, x)


def test_overlay_formulas():
    """The paper's blend x' = (1 − λ)x + λM' and the multiplicative emphasis x' = x((1 − λ) + λM')."""
    x, m = _batch(n=6)
    unit = (m - m.amin((1, 2), keepdim=True)) / (m.amax((1, 2), keepdim=True) - m.amin((1, 2), keepdim=True))
    fixed = dict(p=1.0, lam=0.3, power_min=1.0, power_max=1.0)
    blend, _ = overlay(x, m, OverlayConfig(mode="blend", **fixed))
    assert torch.allclose(blend, 0.7 * x + 0.3 * unit[:, None], atol=1e-6)
    emph, _ = overlay(x, m, OverlayConfig(mode="emphasis", **fixed))
    assert torch.allclose(emph, x * (0.7 + 0.3 * unit[:, None]), atol=1e-6)
    # the paper's random power s in [1, 2]: M' = minmax(M^s) lies between minmax(M^2) and minmax(M)
    squared, _ = overlay(x, m, OverlayConfig(mode="blend", p=1.0, lam=1.0, power_min=2.0, power_max=2.0))
    assert torch.allclose(squared, unit_maps(m, 2.0)[0][:, None].expand_as(x), atol=1e-6)
    drawn, _ = overlay(x, m, OverlayConfig(mode="blend", p=1.0, lam=1.0), torch.Generator().manual_seed(3))
    u1, u2 = unit[:, None].expand_as(x), squared
    assert ((drawn <= u1 + 1e-6) & (drawn >= u2 - 1e-6)).all()  # x^s is monotone in s on [0, 1]
    assert not torch.allclose(drawn, u1) and not torch.allclose(drawn, u2)


def test_overlay_probability_and_flat_maps():
    x, m = _batch(n=4000, h=4)
    _, chosen = overlay(x, m, OverlayConfig(p=0.25), torch.Generator().manual_seed(4))
    assert 0.22 < chosen.float().mean().item() < 0.28
    flat = torch.full((3, 4, 4), 2.0)
    out, chosen = overlay(x[:3], flat, OverlayConfig(p=1.0, lam=1.0))
    assert torch.equal(out, x[:3]) and not chosen.any()  # a flat map carries nothing: the image stays
    with pytest.raises(ValueError, match="maps must be"):
        overlay(x[:3], m[:2], OverlayConfig(p=1.0))


def test_overlay_draws_the_same_numbers_whatever_p():
    """A seeded epoch stays reproducible: p changes what is overlaid, not the generator's later draws."""
    x, m = _batch()
    after = []
    for p in (0.0, 0.5, 1.0):
        g = torch.Generator().manual_seed(5)
        overlay(x, m, OverlayConfig(p=p), g)
        after.append(torch.rand(3, generator=g))
    assert torch.equal(after[0], after[1]) and torch.equal(after[1], after[2])


# ----------------------------------------------------------------------------------- pairing


def fake_store(folder: Path, maps: np.ndarray, source: str = "fake", teacher: str = "t") -> IGMapStore:
    """A cache folder as kdviz.attribution.igcache writes it, holding the given maps."""
    n, h, w = maps.shape
    folder.mkdir(parents=True, exist_ok=True)
    spec = IGCacheSpec(
        teacher=teacher,
        teacher_name="fake",
        dataset=source,
        split="train",
        n=n,
        height=h,
        width=w,
        steps=1,
        rule="gausslegendre",
        baseline="zero",
    )
    (folder / INDEX).write_text(json.dumps(asdict(spec)))
    np.save(folder / MAPS, maps.astype(np.float16))
    np.save(folder / "done-0-of-1.npy", np.ones(n, bool))
    return IGMapStore(folder)


def coded_data(n: int = 40, h: int = 8) -> Dataset:
    """Images whose pixels are a random pattern unique to each index; labels equal the index."""
    rng = np.random.default_rng(7)
    grey = rng.integers(20, 236, size=(n, h, h), dtype=np.uint8)
    split = ImageSplit(np.repeat(grey[..., None], 3, axis=-1), np.arange(n, dtype=np.int64))
    return Dataset(
        "fake", "fake", split, split, tuple(str(i) for i in range(n)), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    )


def all_transforms(img: torch.Tensor, pad: int) -> list[torch.Tensor]:
    """Every crop (after zero padding) and flip random_crop_flip can make of ``img`` (C, H, W)."""
    c, h, w = img.shape
    padded = F.pad(img, (pad, pad, pad, pad))
    out = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            out += [crop, crop.flip(2)]
    return out


def paired_under_one_transform(out: torch.Tensor, image: torch.Tensor, code: torch.Tensor, pad: int) -> bool:
    """Is ``out`` = 0.5·T(image) + 0.5·minmax(T(code)^s) for one crop-and-flip T and some power s?

    For the right T, U = 2·out − T(image) lies in [0, 1] and rises with T(code) pixel for pixel (x^s is
    monotone); for a wrong T, or another image's code, the random patterns make that impossible.
    """
    for ti, tc in zip(all_transforms(image, pad), all_transforms(code, pad), strict=False):
        u = (2 * out - ti)[0].flatten()
        if u.min() < -1e-3 or u.max() > 1 + 1e-3:
            continue
        ranked = u[torch.argsort(tc[0].flatten(), stable=True)]
        if torch.all(ranked.diff() >= -1e-3) and u.max() > 0.99 and u.min() < 0.01:
            return True
    return False


@pytest.mark.parametrize("with_index", [False, True])
def test_each_image_meets_its_own_map_through_shuffle_crop_and_flip(tmp_path, with_index):
    """The paper's code paired images with other images' maps (flaw #1) and never moved the map with
    the crop and flip (flaw #2). Here map i is image i's own random pattern; every overlaid image must be
    its image and its map under one and the same crop and flip, epoch after epoch, shuffled."""
    data = coded_data()
    maps = data.train.images[..., 0].astype(np.float32)
    if with_index:  # training on a part of the cached split: positions are mapped to cache rows
        store = fake_store(tmp_path / "ig", np.concatenate([np.zeros((5, 8, 8), np.float32), maps]))
        store_index = np.arange(5, 5 + len(maps))
    else:
        store, store_index = fake_store(tmp_path / "ig", maps), None
    cfg = DistillConfig(arm="ig", batch_size=7, overlay_p=1.0, overlay_lambda=0.5, crop_padding=2, hflip=True)
    source = distill_batches(
        data.train,
        cfg,
        mean=data.mean,
        std=data.std,
        indices=np.arange(len(maps)),
        store=store,
        store_index=store_index,
    )
    seen = []
    for epoch in (1, 2):
        for x, y, idx in source(epoch, epoch_generator(0, epoch)):
            assert torch.equal(y, idx)  # labels travel with their images (label i marks image i)
            for out, i in zip(denormalize(x, data.mean, data.std), idx.tolist(), strict=False):
                image = torch.from_numpy(data.train.images[i]).permute(2, 0, 1).float() / 255
                code = torch.from_numpy(maps[i])[None]
                assert paired_under_one_transform(out, image, code, 2), (
                    f"image {i} is not overlaid with its own map"
                )
                other = torch.from_numpy(maps[(i + 1) % len(maps)])[None]
                assert not paired_under_one_transform(out, image, other, 2)  # the check can fail
                seen.append(i)
    assert sorted(seen) == sorted(list(range(len(maps))) * 2)  # every image once per epoch
    assert (
        seen[: len(maps)] != list(range(len(maps))) and seen[: len(maps)] != seen[len(maps) :]
    )  # shuffled anew


def test_the_teacher_sees_exactly_the_students_view():
    """One teacher forward per batch, on the student's input (augmented and overlaid), in eval mode,
    without gradients."""
    seen = {}

    class Spy(torch.nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name, self.lin = name, torch.nn.Linear(3 * 4 * 4, 5)

        def forward(self, x):
            seen.setdefault(self.name, []).append((x.clone(), self.training, torch.is_grad_enabled()))
            return self.lin(x.flatten(1))

    student, teacher_net = Spy("student"), Spy("teacher")
    teacher = LoadedModel(teacher_net, ModelCard(arch="spy", mean=[0.5] * 3, std=[0.25] * 3), Path("spy"))
    cfg = DistillConfig(arm="kd", temperature=2.0, alpha=0.5)
    objective = distill_objective(cfg, teacher_view(teacher, [0.5] * 3, [0.25] * 3))
    student.train()
    x, y = torch.randn(6, 3, 4, 4), torch.tensor([0, 1, 2, 3, 4, 0])
    loss, logits = objective(student, x, y, torch.arange(6))
    loss.backward()
    assert len(seen["teacher"]) == 1 and len(seen["student"]) == 1
    (tx, t_training, t_grad), (sx, _, _) = seen["teacher"][0], seen["student"][0]
    assert torch.equal(tx, sx) and torch.equal(tx, x)
    assert not t_training and not t_grad
    assert all(p.grad is None for p in teacher_net.parameters())
    assert student.lin.weight.grad is not None
    # a teacher with its own normalisation gets the same pixels, normalised its way
    other = LoadedModel(teacher_net, ModelCard(arch="spy", mean=[0.0] * 3, std=[1.0] * 3), Path("spy"))
    teacher_view(other, [0.5] * 3, [0.25] * 3)(x)
    assert torch.allclose(seen["teacher"][-1][0], x * 0.25 + 0.5)
    # the baseline arm never calls the teacher
    distill_objective(DistillConfig(arm="ig"), None)(student, x, y, torch.arange(6))
    assert len(seen["teacher"]) == 2


def test_shards_are_disjoint_equal_and_cover_every_index():
    indices = np.arange(100, 123)  # 23 indices over 2 and 4 ranks: padding needed
    for world in (1, 2, 4):
        shards = [
            shard_order(indices, torch.Generator().manual_seed(9), rank, world) for rank in range(world)
        ]
        assert len({len(s) for s in shards}) == 1  # every rank runs the same number of steps
        together = torch.cat(shards).tolist()
        assert set(together) == set(indices.tolist())
        assert len(together) - len(indices) == (-len(indices)) % world  # only the padding repeats
    one = shard_order(indices, torch.Generator().manual_seed(9))
    assert one.tolist() != indices.tolist()  # shuffled
    padded = torch.cat([one, one[:1]])  # 23 → 24: the head repeats
    assert torch.equal(shard_order(indices, torch.Generator().manual_seed(9), 1, 2), padded[1::2])


def test_subset_and_holdout_keep_indices_stable(digits):
    sub = subset_dataset(digits, 100, seed=3)
    again = subset_dataset(digits, 100, seed=3)
    assert len(sub.train) == 100 and np.array_equal(sub.train.images, again.train.images)
    assert len(sub.test) == len(digits.test) and sub.source == digits.source
    assert not np.array_equal(subset_dataset(digits, 100, seed=4).train.labels, sub.train.labels)
    assert subset_dataset(digits, None) is digits
    held, rows = holdout_split(sub, 20)
    assert len(held.train) == 80 and len(held.test) == 20
    assert np.array_equal(held.train.images, sub.train.images[rows])  # rows name the cache's images
    assert not set(rows.tolist()) & {i for i in range(100) if i not in set(rows.tolist())}
    val_rows = np.setdiff1d(np.arange(100), rows)
    assert np.array_equal(held.test.images, sub.train.images[val_rows])
    assert holdout_split(sub, 0) == (sub, None)
    with pytest.raises(ValueError, match="holdout"):
        holdout_split(sub, 100)


# ----------------------------------------------------------------------------------- a student run


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def teacher():
    return load_model(TEACHER)


@pytest.fixture(scope="module")
def small(digits, teacher, tmp_path_factory):
    """96 training images and the teacher's IG cache of them (4 steps)."""
    data = subset_dataset(digits, 96, seed=0)
    folder = tmp_path_factory.mktemp("ig") / "cache"
    return data, ensure_ig_cache(teacher, data, folder, steps=4)


def _request(name, **cfg):
    base = dict(
        arm="kd+ig", epochs=2, batch_size=32, eval_limit=60, hflip=False, overlay_p=0.5, subset=96, seed=1
    )
    return DistillRequest(
        name=name,
        arch=STUDENT[0],
        dataset="digits",
        arch_kwargs=STUDENT[1],
        config=DistillConfig(**{**base, **cfg}),
    )


def test_a_distilled_students_card_says_how_it_was_made(small, teacher, tmp_path):
    data, store = small
    request = _request(
        "student-kd-ig", temperature=3.0, alpha=0.7, overlay_lambda=0.4, ig_cache=str(store.folder)
    )
    _, result = distill_run(request, teacher, data, tmp_path, store=store)
    assert [r.epoch for r in result.history] == [1, 2]
    card = json.loads((tmp_path / CARD).read_text())
    assert card["role"] == "student" and card["teacher"] == str(TEACHER) and card["arch"] == STUDENT[0]
    tc = card["train_config"]
    assert (
        tc["arm"],
        tc["temperature"],
        tc["alpha"],
        tc["overlay_p"],
        tc["overlay_lambda"],
        tc["overlay_mode"],
    ) == ("kd+ig", 3.0, 0.7, 0.5, 0.4, "blend")
    assert tc["ig_cache"] == str(store.folder) and tc["subset"] == 96 and tc["world_size"] == 1
    assert card["metrics"]["complete"] is True
    loaded = load_model(tmp_path)
    assert loaded.card.train_config["arm"] == "kd+ig"


def test_ig_arms_need_a_cache_of_the_training_images(small, teacher, digits, tmp_path):
    data, store = small
    with pytest.raises(ValueError, match="IG cache"):
        distill_run(_request("x", arm="ig"), teacher, data, tmp_path / "a")
    with pytest.raises(IGCacheError, match="96 maps"):
        distill_run(_request("x", arm="ig"), teacher, subset_dataset(digits, 50), tmp_path / "b", store=store)
    # a cache folder made for other images, or by another teacher, is refused, not used
    with pytest.raises(IGCacheError, match="96 maps"):
        ensure_ig_cache(teacher, subset_dataset(digits, 50), store.folder, steps=4)
    other = load_model(TEACHER)
    with torch.no_grad():
        next(other.model.parameters()).add_(1.0)
    with pytest.raises(IGCacheError, match="another teacher"):
        ensure_ig_cache(other, data, store.folder, steps=4)


def test_a_finished_cache_is_reused_not_recomputed(small, teacher):
    data, store = small
    before = (store.folder / MAPS).stat().st_mtime_ns
    again = ensure_ig_cache(
        teacher, data, store.folder, steps=32
    )  # other steps: a finished cache is still used
    assert again.complete and (store.folder / MAPS).stat().st_mtime_ns == before
    assert again.spec.steps == 4


@pytest.mark.parametrize("arm", ["kd", "kd+ig"])
def test_an_interrupted_distillation_resumes_bit_identical(small, teacher, tmp_path, arm):
    """Overlays, crops and the teacher's view are all drawn from the per-epoch seed: a run stopped
    in epoch 2 and resumed ends with the very weights of a run never stopped."""
    data, store = small
    whole, _ = distill_run(_request("a", arm=arm), teacher, data, tmp_path / "a", store=store)
    state = {"last": None}

    def remember(e: TrainEvent) -> None:
        state["last"] = e

    def stop_in_epoch_2() -> bool:
        e = state["last"]
        return e is not None and e.kind == "step" and e.epoch == 2 and e.step == 2

    _, first = distill_run(
        _request("b", arm=arm),
        teacher,
        data,
        tmp_path / "b",
        store=store,
        callback=remember,
        should_stop=stop_in_epoch_2,
    )
    assert first.stopped and len(first.history) == 1 and (tmp_path / "b" / RESUME).is_file()
    resumed, second = distill_run(_request("b", arm=arm), teacher, data, tmp_path / "b", store=store)
    assert second.resumed_from == 1 and not second.stopped
    a, b = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other, _ = distill_run(_request("c", arm=arm, seed=2), teacher, data, tmp_path / "c", store=store)
    assert not all(torch.equal(a[k], other.state_dict()[k]) for k in a)  # the check can fail
