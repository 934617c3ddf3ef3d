"""One shape for every data source: uint8 images, labels, class names and normalisation.

Images are held as ``uint8`` arrays in NHWC order (the order of PIL, numpy and files), in memory or
memory-mapped from the decoded cache (:mod:`kdviz.data.arraycache`; read-only then). They become
float NCHW tensors only at the edge, in :mod:`kdviz.data.loader`, a batch at a time: one convention
inside kdviz.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: ImageNet statistics: the normalisation the pretrained CIFAR ResNets in ``../shared`` were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DataError(Exception):
    """A data set that cannot be read: the message says what is missing and where it looked."""


@dataclass(frozen=True)
class ImageSplit:
    """One split: ``images`` uint8 (N, H, W, 3), ``labels`` int64 (N,), in a fixed order.

    The order is the data set's order, never shuffled: an index names one image for good, so that
    per-image artefacts (teacher logits, IG maps) are looked up by index without mix-ups.
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(
                f"images must be uint8 (N, H, W, 3), got {self.images.dtype} {self.images.shape}"
            )
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray | slice) -> ImageSplit:
        return ImageSplit(self.images[indices], self.labels[indices])


@dataclass(frozen=True)
class Dataset:
    """A data set ready to train and evaluate on.

    ``source`` is the string that rebuilds it with :func:`kdviz.data.load_dataset` (written into
    model cards); ``mean`` and ``std`` are the normalisation models trained on it expect.
    """

    name: str
    source: str
    train: ImageSplit
    test: ImageSplit
    class_names: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> ImageSplit:
        if name not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', not {name!r}")
        return self.train if name == "train" else self.test

    def summary(self) -> dict:
        """What a person wants to know at a glance (the CLI's ``data`` and the sidebar show it)."""
        return {
            "name": self.name,
            "source": self.source,
            "classes": list(self.class_names),
            "image_size": self.image_size,
            "train": len(self.train),
            "test": len(self.test),
            "mean": list(self.mean),
            "std": list(self.std),
            "description": self.description,
        }


def channel_stats(images: np.ndarray) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and std of uint8 NHWC images, in [0, 1] units (for a folder of one's own).

    Summed a few hundred images at a time, so a memory-mapped 224-px split is never copied whole.
    """
    total = np.zeros(3)
    squares = np.zeros(3)
    count = 0
    chunk = max(1, 2**22 // max(1, int(np.prod(images.shape[1:]))))  # about 4 M pixels values a step
    for start in range(0, len(images), chunk):
        x = np.asarray(images[start : start + chunk]).reshape(-1, 3).astype(np.float64) / 255.0
        total += x.sum(axis=0)
        squares += np.square(x).sum(axis=0)
        count += len(x)
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(squares / max(count, 1) - np.square(mean), 0.0))
    std = np.where(std < 1e-3, 1.0, std)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)  # type: ignore[return-value]
