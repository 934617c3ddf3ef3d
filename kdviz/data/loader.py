"""From uint8 arrays to normalised float batches, with the training augmentations.

Work is done on whole batches of tensors (no per-image Python), which on a 2-core machine is several
times faster than a DataLoader over PIL images; a batch's images are read from the split (in memory,
or memory-mapped from the decoded cache) only when the batch is made. Each batch carries
the data-set indices of its images, so per-image artefacts are looked up by index, never by order.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .base import ImageSplit


@dataclass(frozen=True)
class Augment:
    """Training augmentations: a random crop (translation) after padding, and a horizontal flip.

    ``pad_mode="reflect"`` pads by mirroring the border instead of with zeros (airbench's translate).
    ``flip_mode="alternate"`` draws each image's flip once from ``seed`` and inverts it every other
    epoch: over any two epochs every image is seen both ways, which random flips only promise on
    average (airbench's alternating flip).
    """

    crop_padding: int = 4  # 0 turns the crop off
    hflip: bool = True
    pad_mode: str = "zeros"  # "zeros" or "reflect"
    flip_mode: str = "random"  # "random" or "alternate"
    seed: int = 0  # the alternating flip's draw

    def __post_init__(self) -> None:
        if self.pad_mode not in ("zeros", "reflect"):
            raise ValueError(f"pad_mode must be 'zeros' or 'reflect', not {self.pad_mode!r}")
        if self.flip_mode not in ("random", "alternate"):
            raise ValueError(f"flip_mode must be 'random' or 'alternate', not {self.flip_mode!r}")

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.hflip

    def epoch_flips(self, idx: torch.Tensor, n: int, epoch: int) -> torch.Tensor | None:
        """The alternating flips of images ``idx`` (of ``n``) in ``epoch`` (1-based); None when random."""
        if not self.hflip or self.flip_mode != "alternate":
            return None
        return _base_flips(self.seed, n)[idx] ^ (epoch % 2 == 0)


@functools.lru_cache(maxsize=8)
def _base_flips(seed: int, n: int) -> torch.Tensor:
    return torch.rand(n, generator=torch.Generator().manual_seed(seed)) < 0.5


def to_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 NHWC (array or tensor) to float NCHW in [0, 1]."""
    if isinstance(images, torch.Tensor):
        t = images
    else:
        arr = np.asarray(images)
        t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())  # PIL and mmap arrays are read-only
    return t.permute(0, 3, 1, 2).float().div_(255.0)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x * s + m


def random_crop_flip(
    images: torch.Tensor,
    augment: Augment,
    generator: torch.Generator | None = None,
    extras: Sequence[torch.Tensor] = (),
    flips: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Crop and flip a batch (N, C, H, W); ``extras`` (maps of the same H, W) get the same transform.

    One offset and one flip are drawn per image and applied to the image and to each of its extras,
    so an attribution map stays aligned with its image (a flaw of the paper's code, not repeated).
    ``flips`` (a boolean per image) replaces the random flip draw (the alternating flip).
    """
    n, _, h, w = images.shape
    pad = augment.crop_padding
    tensors = [images, *extras]
    if pad > 0:
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).to(images.device)  # (N, H) into the padded image
        cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).to(images.device)
        out = []
        for t in tensors:
            mode = "reflect" if augment.pad_mode == "reflect" else "constant"
            padded = torch.nn.functional.pad(t, (pad, pad, pad, pad), mode=mode)
            idx_r = rows.view(n, 1, h, 1).expand(n, t.shape[1], h, w + 2 * pad)
            t = padded.gather(2, idx_r)
            idx_c = cols.view(n, 1, 1, w).expand(n, t.shape[1], h, w)
            out.append(t.gather(3, idx_c))
        tensors = out
    if augment.hflip:
        if flips is None:
            flips = torch.rand(n, generator=generator) < 0.5
        flip = flips.to(images.device).view(n, 1, 1, 1)
        tensors = [torch.where(flip, t.flip(3), t) for t in tensors]
    return tensors[0], list(tensors[1:])


def iterate_batches(
    split: ImageSplit,
    batch_size: int,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    shuffle: bool = False,
    augment: Augment | None = None,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
    indices: np.ndarray | None = None,
    drop_last: bool = False,
    epoch: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y, idx)``: normalised images, labels and their indices in ``split``.

    ``indices`` restricts to a subset (a shard under DDP, a slice for a quick run); ``shuffle``
    permutes it with ``generator`` so a seeded epoch is reproducible; ``epoch`` drives the
    alternating flip.
    """
    order = torch.as_tensor(
        np.arange(len(split)) if indices is None else np.asarray(indices), dtype=torch.long
    )
    if shuffle:
        order = order[torch.randperm(len(order), generator=generator)]
    labels = torch.from_numpy(np.asarray(split.labels))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        if drop_last and len(idx) < batch_size:
            break
        x = to_float(batch_images(split, idx)).to(device)
        if augment is not None and augment.active:
            x, _ = random_crop_flip(x, augment, generator, flips=augment.epoch_flips(idx, len(split), epoch))
        yield normalize(x, mean, std), labels[idx].to(device), idx


def batch_images(split: ImageSplit, idx: torch.Tensor | np.ndarray) -> np.ndarray:
    """The uint8 images ``idx`` of ``split``, read on their own: from a memory-mapped split only
    these rows are paged in (a 224-px data set is never read whole)."""
    rows = idx.numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx)
    return np.asarray(split.images[rows])


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)
