"""Image folders at any size, built at test time from what is on this machine (never committed).

- :func:`shapes_folder`: the generated coloured shapes (:mod:`kdviz.data.synthetic`), always there;
- :func:`cifar_folder`: CIFAR-10 images from ``../shared/data`` upscaled (skips when it is absent);
- :func:`photos_folder`: crops of scikit-image's photos, one class a photo.

Each writes ``root/train/<class>/*.png`` and ``root/test/<class>/*.png`` and returns ``root``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from conftest import CIFAR10, require_shared
from kdviz.data.base import ImageSplit
from kdviz.data.folder import decode_image
from kdviz.data.synthetic import SHAPES, shape_images, write_image_folder

PHOTOS = ("cat", "astronaut", "rocket", "coffee")


def shapes_folder(root: Path, size: int, train_per_class: int = 3, test_per_class: int = 1) -> Path:
    """10 classes of shapes at ``size`` px: a small folder that always builds (CI stays fast)."""
    train = shape_images(train_per_class, size, seed=10)
    test = shape_images(test_per_class, size, seed=11)
    return write_image_folder(root, train, test, SHAPES)


def cifar_folder(root: Path, size: int, per_class: int = 2) -> Path:
    """The first ``per_class`` CIFAR-10 images of each class and split, upscaled to ``size`` px."""
    source = require_shared(CIFAR10)
    classes = sorted(p.name for p in (source / "train").iterdir() if p.is_dir())
    splits = {}
    for split in ("train", "test"):
        images, labels = [], []
        for label, name in enumerate(classes):
            for f in sorted((source / split / name).iterdir())[:per_class]:
                images.append(decode_image(f, size))
                labels.append(label)
        splits[split] = ImageSplit(np.stack(images), np.asarray(labels, dtype=np.int64))
    return write_image_folder(root, splits["train"], splits["test"], classes)


def photos_folder(root: Path, size: int, crops: int = 4) -> Path:
    """scikit-image's photos as classes: ``crops`` shifted square crops of each, the last for testing."""
    from kdviz.data import load_sample
    from kdviz.data.folder import resize_image

    train, test = [], []
    for label, name in enumerate(PHOTOS):
        photo = load_sample(name)
        side = min(photo.shape[:2]) * 3 // 4
        for k in range(crops):
            dy = (photo.shape[0] - side) * k // max(1, crops - 1)
            dx = (photo.shape[1] - side) * (crops - 1 - k) // max(1, crops - 1)
            crop = resize_image(photo[dy : dy + side, dx : dx + side], size)
            (test if k == crops - 1 else train).append((crop, label))

    def split(items) -> ImageSplit:
        return ImageSplit(np.stack([i for i, _ in items]), np.asarray([y for _, y in items], dtype=np.int64))

    return write_image_folder(root, split(train), split(test), PHOTOS)
