"""Training, readable top to bottom: one loop for teachers and plain students.

Every epoch ends with one atomic write of everything a resume needs (weights, optimizer state,
history) to ``resume.safetensors``, then the usable checkpoint (``model.safetensors`` + ``card.json``)
and ``history.json``. A killed run resumes from its last finished epoch; a seeded run resumed after
an interruption ends with the same weights as one that was never interrupted, because every epoch
draws its shuffle, crops, flips and dropout from a generator seeded by (seed, epoch).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..core import atomic, machine
from ..core.lock import WriterLock
from ..core.machine import check_precision
from ..data.base import Dataset
from ..data.loader import Augment, iterate_batches, normalize, num_batches, to_float
from ..models.checkpoints import RESUME, ModelCard, save_checkpoint
from ..models.evaluate import predict, spread_indices
from ..models.library import classifier_head
from ..models.speedups import channels_last
from .optimizers import NORMS, FilterMuon, normalised_filters

HISTORY = "history.json"
#: what ``TrainConfig.optimizer`` may name (``muon``: Muon for the filters, SGD for the rest)
OPTIMIZERS = ("sgd", "adamw", "muon")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "sgd"  # "sgd" (momentum, Nesterov), "adamw", or "muon" (Muon filters, SGD the rest)
    lr: float = 0.05
    momentum: float = 0.9
    muon_lr: float = 0.24  # optimizer "muon": the filters' learning rate (the schedule scales it too)
    muon_momentum: float = 0.6
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0  # linear warm-up, then cosine decay to zero
    label_smoothing: float = 0.0
    seed: int = 0
    crop_padding: int = 4
    hflip: bool = True
    train_limit: int | None = None  # train on a fixed random subset of this many images
    eval_limit: int | None = None  # evaluate on N test images spread over the split (all by default)
    recipe: str = "default"  # the named recipe this configuration came from ("default" or "fast")
    # --- the fast recipe's techniques (kdviz.recipes.fast_config turns them all on; each can be off)
    schedule: str = "cosine"  # "cosine" (warm-up, cosine to 0), "triangle" (0.2 → 1 → 0.07), "linear" (1 → 0)
    bias_lr_scale: float = 1.0  # learning-rate multiplier of 1-D parameters (norm biases), see make_optimizer
    lookahead: bool = False  # every 5 steps pull the weights to their moving average (airbench's look-ahead)
    whiten: bool = False  # set a whitening stem from training patches, freeze its filters
    whiten_bias_epochs: int = 3  # ... and train the stem's bias for this many epochs only
    pad_mode: str = "zeros"  # the crop's padding: "zeros" or "reflect"
    flip_mode: str = "random"  # "random" or "alternate" (each image flipped every other epoch)
    precision: str = "float32"  # or "bfloat16": autocast, on CPUs with native bfloat16 instructions
    tta: bool = False  # also measure test-time-augmented accuracy after the last epoch (reported apart)
    #: the fine-tuning recipe: the learning-rate multiplier of everything but the classifier head
    #: (a pretrained backbone moves slowly, the new head learns at the full rate); 1: one rate for all
    backbone_lr_scale: float = 1.0

    @classmethod
    def from_dict(cls, obj: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in known})

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class EpochRecord:
    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    lr: float
    seconds: float
    images_per_second: float


@dataclass
class TrainEvent:
    """What the progress callback receives: after every step, and once more after every epoch."""

    kind: str  # "step", "epoch" or "done"
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float = float("nan")
    record: EpochRecord | None = None
    history: list[EpochRecord] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        done = (self.epoch - 1) * self.steps + self.step if self.kind == "step" else self.epoch * self.steps
        return min(1.0, done / max(1, self.epochs * self.steps))


@dataclass
class TrainResult:
    history: list[EpochRecord]
    stopped: bool  # True when should_stop() ended it before the last epoch
    resumed_from: int  # epochs already done when this call started


class Objective(Protocol):
    """The loss of one batch; plain cross-entropy here, distillation losses elsewhere."""

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def cross_entropy(label_smoothing: float = 0.0) -> Objective:
    def objective(model, x, y, idx):
        logits = model(x)
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing), logits

    return objective


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Two parameter groups, each with its own learning-rate multiplier ``lr_scale``.

    The default recipe: weights with decay, 1-D parameters (biases, norm scales) without, the usual
    practice. With ``bias_lr_scale > 1`` (the fast recipe, after airbench) the second group is the
    normalisation layers' parameters alone, at a learning rate that many times higher and a decay
    that many times lower (so a step shrinks them as much as the weights); every other parameter,
    biases included, is decayed. With ``optimizer="muon"`` a third group holds the filters of
    convolutions followed by a norm layer, under Muon at ``muon_lr`` (see
    :class:`~kdviz.training.optimizers.FilterMuon`).
    """
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {cfg.optimizer!r}")
    scale = cfg.bias_lr_scale
    filters = normalised_filters(model) if cfg.optimizer == "muon" else []
    if scale == 1:
        special = [p for p in model.parameters() if p.ndim <= 1]
    else:
        special = [p for m in model.modules() if isinstance(m, NORMS) for p in m.parameters(recurse=False)]
    ids = {id(p) for p in special + filters}
    decay = [p for p in model.parameters() if id(p) not in ids]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
        {
            "params": special,
            "weight_decay": 0.0 if scale == 1 else cfg.weight_decay / scale,
            "lr_scale": scale,
        },
    ]
    if filters:
        groups.append({"params": filters, "muon": True, "lr_scale": cfg.muon_lr / cfg.lr})
    if cfg.backbone_lr_scale != 1:
        groups = _split_head(model, groups, cfg.backbone_lr_scale)
    if cfg.optimizer == "muon":
        return FilterMuon(groups, lr=cfg.lr, momentum=cfg.momentum, muon_momentum=cfg.muon_momentum)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _split_head(model: nn.Module, groups: list[dict], backbone_scale: float) -> list[dict]:
    """Each group in two: the classifier head's parameters at their rate, the backbone's at
    ``backbone_scale`` times it (the fine-tuning recipe). Always four groups, so a resume matches."""
    found = classifier_head(model)
    if found is None:
        raise ValueError(f"{type(model).__name__} has no classifier head to train apart from its backbone")
    head = {id(p) for p in found[1].parameters()}
    split = []
    for group in groups:
        for in_head in (False, True):
            params = [p for p in group["params"] if (id(p) in head) == in_head]
            scale = group["lr_scale"] * (1.0 if in_head else backbone_scale)
            split.append({**group, "params": params, "lr_scale": scale})
    return split


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, schedule: str = "cosine") -> float:
    """The learning rate at ``step``, a function of the step alone (so a resume needs no state).

    ``cosine``: linear warm-up to ``base_lr``, then cosine decay to zero. ``triangle`` (airbench):
    from 0.2·lr up to lr over the first 23 % of the steps, then linearly down to 0.07·lr. ``linear``
    (airbench's Muon record): from lr straight down to zero.
    """
    if schedule == "linear":
        return base_lr * (1.0 - step / max(1, total_steps))
    if schedule == "triangle":
        peak = int(total_steps * 0.23)
        if step < peak:
            return base_lr * (0.2 + 0.8 * step / max(1, peak))
        return base_lr * (1.0 - 0.93 * (step - peak) / max(1, total_steps - peak))
    if schedule != "cosine":
        raise ValueError(f"schedule must be 'cosine', 'triangle' or 'linear', not {schedule!r}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def augment_for(cfg: TrainConfig) -> Augment:
    """The augmentation a configuration asks for (training and distillation build it the same way)."""
    return Augment(cfg.crop_padding, cfg.hflip, cfg.pad_mode, cfg.flip_mode, cfg.seed)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def train_indices(n: int, cfg: TrainConfig) -> np.ndarray:
    if cfg.train_limit is None or cfg.train_limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(cfg.seed).permutation(n)[: cfg.train_limit])


class Lookahead:
    """airbench's look-ahead: every ``every`` steps the weights move to their moving average.

    The average's weight of the past grows as (step / total)³ up to 0.95⁵, so early training runs
    free and the end is smoothed; the last step copies the average into the model. The average
    covers every floating-point tensor of the state (batch-norm statistics too) and is saved with
    the resume state, so a resumed run continues it exactly.
    """

    every = 5

    def __init__(self, model: nn.Module) -> None:
        self.average = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int, total_steps: int) -> None:
        """Call after optimizer step ``step`` (1-based).

        A run of ``every`` steps or fewer never updated the average: copying it into the model at the
        end would undo the whole run (a one-epoch run on a small subset, say), so it is left alone.
        """
        if total_steps <= self.every:
            return
        if step >= total_steps:
            decay = 1.0
        elif step % self.every == 0:
            decay = 0.95**5 * (step / total_steps) ** 3
        else:
            return
        state = model.state_dict()
        for k, avg in self.average.items():
            avg.lerp_(state[k], 1.0 - decay)
            state[k].copy_(avg)


def whitening_images(data: Dataset, indices: np.ndarray, n: int = 5000) -> torch.Tensor:
    """``n`` training images of the run spread over it, normalised: what a whitening stem is fitted to.

    Spread, not the first ``n``: an image folder is sorted by class, and its first 5,000 would be
    airplanes and automobiles only.
    """
    pick = indices[spread_indices(len(indices), n)]
    return normalize(to_float(data.train.images[pick]), data.mean, data.std)


def check_whitening(model: nn.Module, cfg: TrainConfig) -> None:
    if cfg.whiten and not hasattr(model, "init_whitening"):
        raise ValueError(f"{type(model).__name__} has no whitening stem: train it with whiten off")


BatchSource = Callable[[int, torch.Generator], Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]


def train(
    model: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    *,
    run_dir: str | Path | None = None,
    card: ModelCard | None = None,
    objective: Objective | None = None,
    batches: BatchSource | None = None,
    callback: Callable[[TrainEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str = "cpu",
    resume: bool = True,
    write: bool = True,
    lock_description: str | None = None,
) -> TrainResult:
    """Train ``model`` on ``data`` with ``cfg``; save to ``run_dir`` every epoch; resume from it.

    ``objective`` defaults to cross-entropy; ``batches(epoch, generator)`` defaults to shuffled,
    augmented batches of the training split (distillation passes its own for IG overlays).
    ``write=False`` resumes from ``run_dir`` but never writes to it (DDP ranks other than 0).
    A writer holds ``run_dir``'s :class:`~kdviz.core.lock.WriterLock` (``lock_description`` says what
    it does, default its command line) and raises :class:`~kdviz.core.lock.LockHeld` if another has it.
    """
    torch.manual_seed(cfg.seed)
    check_precision(cfg.precision)
    check_whitening(model, cfg)
    channels_last(model.to(device))  # 1.2-1.5x faster steps on a CPU; values and saved files unchanged
    objective = objective or cross_entropy(cfg.label_smoothing)
    optimizer = make_optimizer(model, cfg)
    indices = train_indices(len(data.train), cfg)
    steps = num_batches(len(indices), cfg.batch_size)
    total_steps, warmup_steps = cfg.epochs * steps, int(round(cfg.warmup_epochs * steps))
    augment = augment_for(cfg)
    autocast = torch.autocast(
        device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=cfg.precision == "bfloat16"
    )

    if batches is None:

        def batches(epoch: int, gen: torch.Generator):
            return iterate_batches(
                data.train,
                cfg.batch_size,
                mean=data.mean,
                std=data.std,
                shuffle=True,
                augment=augment,
                generator=gen,
                device=device,
                indices=indices,
                epoch=epoch,
            )

    run_dir = Path(run_dir) if run_dir is not None else None
    # one writer per run folder: a second one is refused here, before it changes anything
    with WriterLock(run_dir, lock_description) if run_dir is not None and write else nullcontext():
        history: list[EpochRecord] = []
        if run_dir is not None and write:
            atomic.remove_leftovers(run_dir)  # a run killed mid-write leaves its temporary file behind
        resuming = resume and run_dir is not None and (run_dir / RESUME).is_file()
        if cfg.whiten and not resuming:  # a resume restores the fitted stem with the other weights
            model.init_whitening(whitening_images(data, indices).to(device))  # type: ignore[operator]
        lookahead = Lookahead(model) if cfg.lookahead else None
        if resuming and run_dir is not None:
            history = load_resume_state(run_dir / RESUME, model, optimizer, lookahead)
        start_epoch = len(history)
        stopped = False

        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            gen = epoch_generator(cfg.seed, epoch)
            torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # dropout draws from the global generator
            model.train()
            if cfg.whiten:
                model.set_whitening_trainable(weight=False, bias=epoch <= cfg.whiten_bias_epochs)  # type: ignore[operator]
            t0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
            for step, (x, y, idx) in enumerate(batches(epoch, gen), start=1):
                global_step = (epoch - 1) * steps + step
                lr = lr_at(global_step - 1, total_steps, warmup_steps, cfg.lr, cfg.schedule)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)
                with autocast:
                    loss, logits = objective(model, x, y, idx)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if lookahead is not None:
                    lookahead.update(model, global_step, total_steps)

                seen += len(y)
                loss_sum += loss.item() * len(y)
                correct += (logits.argmax(1) == y).sum().item()
                if callback:
                    callback(TrainEvent("step", epoch, cfg.epochs, step, steps, loss.item(), history=history))
                if should_stop and should_stop():
                    stopped = True
                    break
            if stopped:
                break  # the unfinished epoch is dropped; the last finished one stays on disk
            seconds = time.perf_counter() - t0
            test = predict(
                model, data.test, mean=data.mean, std=data.std, limit=cfg.eval_limit, device=device
            )
            test_loss = float(F.cross_entropy(torch.from_numpy(test.logits), torch.from_numpy(test.labels)))
            record = EpochRecord(
                epoch,
                loss_sum / max(seen, 1),
                correct / max(seen, 1),
                test_loss,
                test.accuracy,
                lr,
                seconds,
                seen / max(seconds, 1e-9),
            )
            history.append(record)
            extra: dict = {}
            if cfg.tta and epoch == cfg.epochs:
                extra["test_accuracy_tta"] = predict(
                    model,
                    data.test,
                    mean=data.mean,
                    std=data.std,
                    limit=cfg.eval_limit,
                    device=device,
                    tta=True,
                ).accuracy
            if run_dir is not None and write:
                save_epoch(run_dir, model, optimizer, history, cfg, card, lookahead, extra)
            if callback:
                callback(
                    TrainEvent("epoch", epoch, cfg.epochs, steps, steps, record.train_loss, record, history)
                )

        if callback:
            last = history[-1].epoch if history else 0
            callback(TrainEvent("done", last, cfg.epochs, steps, steps, history=history))
        return TrainResult(history, stopped, start_epoch)


# ---------------------------------------------------------------------------- saving and resuming


def save_epoch(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    history: list[EpochRecord],
    cfg: TrainConfig,
    card: ModelCard | None,
    lookahead: Lookahead | None = None,
    extra: dict | None = None,
) -> None:
    """One atomic file holds everything a resume needs; the checkpoint and history follow it."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if lookahead is not None:
        tensors.update(
            {f"lookahead.{k}": v.detach().cpu().contiguous() for k, v in lookahead.average.items()}
        )
    opt_state = optimizer.state_dict()
    scalars: dict[str, dict] = {}
    for pid, state in opt_state["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    groups = [{k: v for k, v in g.items()} for g in opt_state["param_groups"]]
    meta = {
        "history": json.dumps([asdict(r) for r in history]),
        "param_groups": json.dumps(groups),
        "optim_scalars": json.dumps(scalars),
        "config": json.dumps(cfg.as_dict()),
    }
    with atomic.atomic_path(run_dir / RESUME) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    if card is not None:
        last = history[-1]
        card.train_config = cfg.as_dict()
        card.metrics = {
            "test_accuracy": last.test_acc,
            "train_accuracy": last.train_acc,
            "epochs_done": last.epoch,
            "epochs": cfg.epochs,
            "complete": last.epoch >= cfg.epochs,
            "train_seconds": sum(r.seconds for r in history),
            "precision": cfg.precision,
            "machine": machine.describe(),
            **(extra or {}),
        }
        save_checkpoint(run_dir, model, card)
    atomic.write_json(run_dir / HISTORY, [asdict(r) for r in history])


def load_resume_state(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, lookahead: Lookahead | None = None
) -> list[EpochRecord]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata() or {}
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if lookahead is not None:
        for k, avg in lookahead.average.items():
            avg.copy_(tensors[f"lookahead.{k}"])
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, extra in json.loads(meta.get("optim_scalars", "{}")).items():
        state.setdefault(int(pid), {}).update(extra)
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    return [EpochRecord(**r) for r in json.loads(meta["history"])]


def read_history(run_dir: str | Path) -> list[EpochRecord]:
    path = Path(run_dir) / HISTORY
    if not path.is_file():
        return []
    return [EpochRecord(**r) for r in json.loads(path.read_text())]
