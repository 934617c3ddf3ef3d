"""Knowledge distillation with IG overlays: the loss, the objective, the batches, one student run.

A distilled student is an ordinary :func:`kdviz.train.train` call with two hooks: an objective
that adds the teacher's softened outputs to the cross-entropy (Hinton et al. 2015), and a batch
source that lays the teacher's precomputed IG maps onto some training images (the paper's
augmentation, :mod:`kdviz.augment`). Everything else (schedule, resume, atomic saving, progress,
stop) is train()'s. The four arms of the paper's ablation are the four combinations of the two.

Two flaws of the authors' code are not repeated: maps are read from the IG cache by data-set index
(the batch carries the indices), and each map goes through its image's crop and flip. The teacher
sees exactly the view the student sees, overlay included, in eval mode and without gradients.

Under ``torchrun`` every rank takes its own shard of each epoch's shuffled indices, gradients are
averaged by DistributedDataParallel, and only rank 0 writes.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .ig_overlay import OverlayConfig, overlay
from ..models.checkpoints import LoadedModel, load_any
from ..data.base import Dataset, ImageSplit
from ..data.loader import Augment, denormalize, iterate_batches, normalize, random_crop_flip, to_float
from ..attribution.igcache import INDEX, IGCacheError, IGMapStore, precompute
from ..models import create_model
from .workflows import TrainRequest, card_for
from ..models.speedups import fused_for_inference
from .loop import BatchSource, Objective, TrainConfig, TrainEvent, TrainResult, train, train_indices

#: The paper's ablation: what each arm adds to the student trained alone.
ARMS: dict[str, str] = {
    "baseline": "student alone (cross-entropy on the labels)",
    "kd": "+ knowledge distillation (the teacher's softened outputs)",
    "ig": "+ IG overlays (the teacher's maps laid onto training images)",
    "kd+ig": "+ both (the paper's method)",
}


def arm_parts(arm: str) -> tuple[bool, bool]:
    """(uses KD, uses IG overlays) for an arm name."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; choose one of {', '.join(ARMS)}")
    return arm in ("kd", "kd+ig"), arm in ("ig", "kd+ig")


@dataclass
class DistillConfig(TrainConfig):
    """A training configuration plus what distillation adds; all of it lands in the card's
    ``train_config``, so a student's card says how it was made."""

    arm: str = "kd+ig"
    temperature: float = 4.0
    alpha: float = 0.5  # weight of the KD term against the cross-entropy
    overlay_p: float = 0.1
    overlay_lambda: float = 0.5
    overlay_mode: str = "blend"
    subset: int | None = None  # train on a fixed random subset of N images; the IG cache covers exactly them
    subset_seed: int = 0
    holdout: int = 0  # training images held out to validate on (a search never looks at the test split)
    ig_steps: int = 32  # for an IG cache made on the way
    teacher: str = ""  # where the teacher came from
    ig_cache: str = ""  # the IG cache the overlays read
    world_size: int = 1

    def __post_init__(self) -> None:
        arm_parts(self.arm)
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha}")
        self.overlay()  # checks p, λ and the mode

    def overlay(self) -> OverlayConfig:
        return OverlayConfig(p=self.overlay_p, lam=self.overlay_lambda, mode=self.overlay_mode)

    @property
    def uses_kd(self) -> bool:
        return arm_parts(self.arm)[0]

    @property
    def uses_ig(self) -> bool:
        return arm_parts(self.arm)[1]


# ---------------------------------------------------------------------------------- the loss


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
    temperature: float, alpha: float,
) -> torch.Tensor:
    """α·T²·KL(teacher ‖ student at temperature T) + (1 − α)·CE(student, labels).

    T² keeps the soft term's gradients on the scale of the hard term's as T changes (Hinton et al.).
    """
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)
    hard = F.cross_entropy(student_logits, labels)
    return alpha * soft + (1.0 - alpha) * hard


def teacher_view(teacher: LoadedModel, mean: Sequence[float], std: Sequence[float]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The teacher's logits for a batch normalised with ``mean``/``std`` (re-normalised when its own differ).

    The teacher only runs forward, so it runs fused and channels-last (:mod:`kdviz.speedups`): its
    pass is most of a KD step's extra cost. Its parameters are the checkpoint's, untouched.
    """
    device = next(iter(teacher.model.parameters()), torch.empty(0)).device
    size = teacher.card.image_size
    example = torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    model = fused_for_inference(teacher.model.eval().requires_grad_(False), example)  # about 0.25 s, once per run
    same = list(map(float, teacher.card.mean)) == list(map(float, mean)) and \
        list(map(float, teacher.card.std)) == list(map(float, std))

    @torch.no_grad()
    def logits(x: torch.Tensor) -> torch.Tensor:
        if not same:
            x = normalize(denormalize(x, mean, std), teacher.card.mean, teacher.card.std)
        return model(x)

    return logits


def distill_objective(cfg: DistillConfig, teacher: Callable[[torch.Tensor], torch.Tensor] | None,
                      forward: nn.Module | None = None) -> Objective:
    """train()'s objective for an arm: cross-entropy, or the KD loss on the view the student sees.

    ``forward`` replaces the model in the forward pass (the DistributedDataParallel wrapper).
    """

    def objective(model, x, y, idx):
        net = forward if forward is not None else model
        if forward is not None:
            forward.train(model.training)
        logits = net(x)
        if not cfg.uses_kd:
            return F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing), logits
        return kd_loss(logits, teacher(x), y, temperature=cfg.temperature, alpha=cfg.alpha), logits

    return objective


# ---------------------------------------------------------------------------------- the batches


def shard_order(indices: np.ndarray, generator: torch.Generator, rank: int = 0, world: int = 1) -> torch.Tensor:
    """This rank's share of one epoch's shuffle of ``indices``.

    Every rank draws the same permutation (same seeded generator), pads it to a multiple of
    ``world`` by repeating its head (as DistributedSampler does) and takes every ``world``-th
    index from ``rank``: disjoint shards of equal length, so every rank runs the same number of steps.
    """
    order = torch.as_tensor(np.asarray(indices), dtype=torch.long)
    order = order[torch.randperm(len(order), generator=generator)]
    if world > 1:
        pad = (-len(order)) % world
        if pad:
            order = torch.cat([order, order[:pad]])
        order = order[rank::world]
    return order


def distill_batches(
    split: ImageSplit,
    cfg: DistillConfig,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    indices: np.ndarray,
    store: IGMapStore | None = None,
    store_index: np.ndarray | None = None,
    rank: int = 0,
    world: int = 1,
    device: str = "cpu",
) -> BatchSource:
    """train()'s batch source: shuffled, sharded, cropped and flipped, overlaid when ``store`` is given.

    The overlay works in pixel space before normalisation; each map is read by its image's data-set
    index (through ``store_index`` when the split is a part of the cached one: ``store_index[i]`` is
    the cache row of image ``i``) and cropped and flipped with it. Under DDP each rank's batch is ``batch_size / world`` so
    the global batch, and the number of steps per epoch, stay those of a single process.
    """
    augment = Augment(cfg.crop_padding, cfg.hflip)
    per_rank = max(1, -(-cfg.batch_size // world))
    overlay_cfg = cfg.overlay()
    images = torch.from_numpy(np.ascontiguousarray(split.images))
    labels = torch.from_numpy(np.asarray(split.labels))

    def batches(epoch: int, gen: torch.Generator):
        order = shard_order(indices, gen, rank, world)
        if world > 1:  # every rank its own crops and overlays, still fixed by the seed
            gen = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=gen)) + rank)
        if store is None:
            yield from iterate_batches(split, per_rank, mean=mean, std=std, augment=augment, generator=gen,
                                       device=device, indices=order.numpy())
            return
        for start in range(0, len(order), per_rank):
            idx = order[start : start + per_rank]
            x = to_float(images[idx]).to(device)
            rows = idx.numpy() if store_index is None else store_index[idx.numpy()]
            maps = store.read(rows).to(device).unsqueeze(1)
            if augment.active:
                x, (maps,) = random_crop_flip(x, augment, gen, extras=[maps])
            x, _ = overlay(x, maps[:, 0], overlay_cfg, gen)
            yield normalize(x, mean, std), labels[idx].to(device), idx

    return batches


# ---------------------------------------------------------------------------------- inputs


def subset_dataset(data: Dataset, n: int | None, seed: int = 0) -> Dataset:
    """``data`` with its training split cut to a fixed random subset of ``n`` images (in data-set order).

    The subset's index ``i`` names one image for good, so an IG cache made on it is read by index.
    """
    if not n or n >= len(data.train):
        return data
    keep = train_indices(len(data.train), TrainConfig(train_limit=n, seed=seed))
    return replace(data, train=data.train.subset(keep),
                   extra={**data.extra, "subset": n, "subset_seed": seed})


HOLDOUT_SEED = 12345  # fixed: every run of a search validates on the same images


def holdout_split(data: Dataset, n: int) -> tuple[Dataset, np.ndarray | None]:
    """Hold ``n`` training images out as the evaluation split (for a search, which must not see the test
    split). Returns the data to train on and, for each of its training images, its row in ``data.train``
    (None when nothing is held out)."""
    if not n:
        return data, None
    if not 0 < n < len(data.train):
        raise ValueError(f"holdout must be between 1 and {len(data.train) - 1} images, got {n}")
    val = np.sort(np.random.default_rng(HOLDOUT_SEED).permutation(len(data.train))[:n])
    keep = np.setdiff1d(np.arange(len(data.train)), val)
    return replace(data, train=data.train.subset(keep), test=data.train.subset(val),
                   extra={**data.extra, "holdout": n}), keep


def load_teacher(path: str | Path, data: Dataset, arch: str | None = None) -> LoadedModel:
    """A teacher checkpoint, or a foreign file loaded into ``arch`` with the data set's normalisation."""
    loaded = load_any(path, arch, num_classes=data.num_classes)
    if loaded.card.num_classes != data.num_classes:
        raise ValueError(f"the teacher {path} predicts {loaded.card.num_classes} classes but {data.name} has {data.num_classes}")
    if loaded.card.source_file is not None:  # a foreign file knows no normalisation: the data set's
        loaded.card.mean, loaded.card.std = list(data.mean), list(data.std)
        loaded.card.dataset, loaded.card.class_names = data.source, list(data.class_names)
    return loaded


def ensure_ig_cache(
    teacher: LoadedModel, data: Dataset, folder: str | Path, *, steps: int = 32,
    progress: Callable[[int, int, float], None] | None = None, should_stop: Callable[[], bool] | None = None,
) -> IGMapStore:
    """The teacher's IG cache of ``data``'s training split in ``folder``: reused when finished, else made or resumed.

    A cache made by another teacher, or for other images, is refused with a message, never used.
    """
    from ..models.fingerprint import model_fingerprint

    folder = Path(folder)
    rule, baseline = "gausslegendre", "zero"
    if (folder / INDEX).is_file():
        store = IGMapStore(folder)
        if store.spec.n != len(data.train) or store.spec.dataset != data.source or store.spec.split != "train":
            raise IGCacheError(f"{folder} holds {store.spec.n} maps of {store.spec.dataset}/{store.spec.split}, but "
                               f"training uses {len(data.train)} images of {data.source}/train")
        if store.spec.teacher != model_fingerprint(teacher.model):
            raise IGCacheError(f"{folder} was made with another teacher ({store.spec.teacher_name}); choose another folder")
        if store.complete:
            return store
        steps, rule, baseline = store.spec.steps, store.spec.rule, store.spec.baseline  # finish it as it was begun
    return precompute(teacher.model, data, folder, mean=teacher.card.mean, std=teacher.card.std, split="train",
                      steps=steps, rule=rule, baseline=baseline, teacher_name=teacher.card.name or str(teacher.path),
                      progress=progress, should_stop=should_stop)


def default_ig_cache(teacher: LoadedModel, data: Dataset, cfg: DistillConfig) -> Path:
    """A cache folder under ``KDVIZ_CACHE/igcache`` named by teacher, data and subset: made once, reused."""
    import re

    from ..core import settings
    from ..models.fingerprint import model_fingerprint

    source = re.sub(r"[^A-Za-z0-9._-]+", "-", data.source).strip("-")[-40:]
    part = f"subset{cfg.subset}-{cfg.subset_seed}" if cfg.subset else "all"
    return settings.cache_dir() / "igcache" / f"{model_fingerprint(teacher.model)[:16]}-{source}-{part}-{cfg.ig_steps}steps"


# ---------------------------------------------------------------------------------- one run


@dataclass
class DistillRequest:
    """A student to distil: its name, architecture, data set and configuration."""

    name: str
    arch: str
    dataset: str = "digits"
    arch_kwargs: dict = field(default_factory=dict)
    config: DistillConfig = field(default_factory=DistillConfig)


@dataclass
class DistContext:
    """Where this process stands under torchrun (rank 0 of 1 otherwise)."""

    rank: int = 0
    world: int = 1

    @property
    def is_writer(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistContext:
    """Join the torchrun process group when there is one: gloo on the CPU, nccl with CUDA."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return DistContext()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() and os.environ.get("KDVIZ_DEVICE", "cuda") != "cpu" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size())


def _synced_stop(should_stop: Callable[[], bool] | None, ctx: DistContext, device: str) -> Callable[[], bool] | None:
    """Under DDP a stop must be agreed by all ranks, or one would wait forever for the others."""
    if ctx.world <= 1:
        return should_stop
    import torch.distributed as dist

    def check() -> bool:
        flag = torch.tensor([1.0 if should_stop and should_stop() else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    return check


def distill_run(
    request: DistillRequest,
    teacher: LoadedModel,
    data: Dataset,
    run_dir: str | Path,
    *,
    store: IGMapStore | None = None,
    callback: Callable[[TrainEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str = "cpu",
    resume: bool = True,
    ctx: DistContext | None = None,
) -> tuple[nn.Module, TrainResult]:
    """Train one student of ``request``'s arm into ``run_dir`` (resumed if it holds a finished epoch).

    ``data`` is the data set already cut to ``config.subset`` (see :func:`subset_dataset`); IG arms
    need ``store``, the teacher's IG cache of exactly its training images.
    """
    cfg, ctx = request.config, ctx or DistContext()
    if cfg.uses_ig:
        if store is None:
            raise ValueError(f"the {cfg.arm} arm needs the teacher's IG cache (make one with `python -m kdviz ig-precompute`)")
        if len(store) != len(data.train):
            raise IGCacheError(f"the IG cache holds {len(store)} maps but training uses {len(data.train)} images")
    data, store_index = holdout_split(data, cfg.holdout)
    cfg.world_size = ctx.world
    torch.manual_seed(cfg.seed)  # the initial weights are part of what the seed fixes
    model = create_model(request.arch, num_classes=data.num_classes, **request.arch_kwargs).to(device)
    card = card_for(TrainRequest(name=request.name, arch=request.arch, dataset=data.source,
                                 arch_kwargs=request.arch_kwargs, role="student", config=cfg,
                                 teacher=cfg.teacher or str(teacher.path)), data, model)
    teacher.model.to(device)
    forward = None
    if ctx.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        dev = torch.device(device)
        forward = DistributedDataParallel(model, device_ids=[dev.index or 0] if dev.type == "cuda" else None)
    objective = distill_objective(cfg, teacher_view(teacher, data.mean, data.std) if cfg.uses_kd else None, forward)
    batches = distill_batches(data.train, cfg, mean=data.mean, std=data.std, indices=train_indices(len(data.train), cfg),
                              store=store if cfg.uses_ig else None, store_index=store_index, rank=ctx.rank,
                              world=ctx.world, device=device)
    result = train(model, data, cfg, run_dir=run_dir, card=card, objective=objective, batches=batches,
                   callback=callback if ctx.is_writer else None, should_stop=_synced_stop(should_stop, ctx, device),
                   device=device, resume=resume, write=ctx.is_writer)
    return model, result


def config_summary(cfg: DistillConfig) -> dict:
    """The distillation-specific part of a configuration (what a table of arms shows)."""
    base = {f for f in asdict(TrainConfig())}
    return {k: v for k, v in asdict(cfg).items() if k not in base}


def replica_checksums(model: nn.Module, ctx: DistContext, device: str = "cpu") -> list[float]:
    """The sum of every weight on each rank: equal on all ranks when DDP kept the replicas in step."""
    total = torch.tensor([sum(float(p.detach().double().sum()) for p in model.parameters())], dtype=torch.float64,
                         device=device)
    if ctx.world <= 1:
        return [float(total.item())]
    import torch.distributed as dist

    gathered = [torch.zeros_like(total) for _ in range(ctx.world)]
    dist.all_gather(gathered, total)
    return [float(t.item()) for t in gathered]
