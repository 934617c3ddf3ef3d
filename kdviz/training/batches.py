"""What a distilled student trains on: shuffled, sharded, cropped and flipped batches with the
teacher's IG maps laid on, and the subsets (a fixed training subset, a held-out validation split).

Two flaws of the authors' code are not repeated: maps are read from the IG cache by data-set index
(the batch carries the indices), and each map goes through its image's crop and flip.

Arms of one seed are paired: the shuffle, crops and flips are drawn from the epoch's generator the
same way with or without overlays, and the overlays from a generator of their own, so an IG arm sees
exactly the baseline's batches with some images overlaid (a study's teacher cache relies on it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from ..attribution.igcache import IGMapStore
from ..data.base import Dataset, ImageSplit
from ..data.loader import batch_images, iterate_batches, normalize, random_crop_flip, to_float
from .arms import DistillConfig
from .ig_overlay import overlay
from .loop import BatchSource, TrainConfig, augment_for, train_indices


def shard_order(
    indices: np.ndarray, generator: torch.Generator, rank: int = 0, world: int = 1
) -> torch.Tensor:
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
    the cache row of image ``i``) and cropped and flipped with it. Under DDP each rank's batch is
    ``batch_size / world`` so the global batch, and the number of steps per epoch, stay those of a
    single process.
    """
    augment = augment_for(cfg)
    per_rank = max(1, -(-cfg.batch_size // world))
    overlay_cfg = cfg.overlay()
    labels = torch.from_numpy(np.asarray(split.labels))

    def batches(epoch: int, gen: torch.Generator):
        order = shard_order(indices, gen, rank, world)
        draws = overlay_generator(cfg.seed, epoch, rank)
        if world > 1:  # every rank its own crops and overlays, still fixed by the seed
            gen = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=gen)) + rank)
        if store is None:
            yield from iterate_batches(
                split,
                per_rank,
                mean=mean,
                std=std,
                augment=augment,
                generator=gen,
                device=device,
                indices=order.numpy(),
                epoch=epoch,
            )
            return
        for start in range(0, len(order), per_rank):
            idx = order[start : start + per_rank]
            x = to_float(batch_images(split, idx)).to(device)
            rows = idx.numpy() if store_index is None else store_index[idx.numpy()]
            maps = store.read(rows).to(device).unsqueeze(1)
            if augment.active:
                flips = augment.epoch_flips(idx, len(split), epoch)
                x, (maps,) = random_crop_flip(x, augment, gen, extras=[maps], flips=flips)
            x, _ = overlay(x, maps[:, 0], overlay_cfg, draws)
            yield normalize(x, mean, std), labels[idx].to(device), idx

    return batches


def overlay_generator(seed: int, epoch: int, rank: int = 0) -> torch.Generator:
    """Which images of an epoch are overlaid, and how: drawn apart from the crops (so arms stay paired)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 7919 + 104_729 + rank)


def subset_dataset(data: Dataset, n: int | None, seed: int = 0) -> Dataset:
    """``data`` with its training split cut to a fixed random subset of ``n`` images (in data-set order).

    The subset's index ``i`` names one image for good, so an IG cache made on it is read by index.
    """
    if not n or n >= len(data.train):
        return data
    keep = train_indices(len(data.train), TrainConfig(train_limit=n, seed=seed))
    return replace(
        data, train=data.train.subset(keep), extra={**data.extra, "subset": n, "subset_seed": seed}
    )


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
    return replace(
        data, train=data.train.subset(keep), test=data.train.subset(val), extra={**data.extra, "holdout": n}
    ), keep
