"""The built-in offline data set: scikit-learn's 1,797 handwritten digit scans.

It ships inside scikit-learn, so the dashboard works on a fresh machine with no network. The 8×8
grey scans (values 0–16) are scaled up to 32×32 RGB so that every CIFAR-shaped model runs on them.
"""

from __future__ import annotations

import numpy as np

from .base import Dataset, ImageSplit, channel_stats

SIZE = 32
TEST_FRACTION = 0.2
SPLIT_SEED = 0  # fixed: the train/test split never changes between runs or machines


def load_digits_dataset(image_size: int = SIZE) -> Dataset:
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    grey = np.clip(bunch.images * (255.0 / 16.0), 0, 255).astype(np.uint8)  # (N, 8, 8)
    up = np.stack(
        [
            np.asarray(Image.fromarray(g).resize((image_size, image_size), Image.Resampling.BILINEAR))
            for g in grey
        ]
    )
    images = np.repeat(up[..., None], 3, axis=-1)
    labels = bunch.target.astype(np.int64)
    idx = np.arange(len(labels))
    train_idx, test_idx = train_test_split(
        idx, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels
    )
    train_idx.sort()
    test_idx.sort()
    train = ImageSplit(images[train_idx], labels[train_idx])
    test = ImageSplit(images[test_idx], labels[test_idx])
    mean, std = channel_stats(train.images)
    return Dataset(
        name="digits",
        source="digits",
        train=train,
        test=test,
        class_names=tuple(str(d) for d in range(10)),
        mean=mean,
        std=std,
        description=(
            "scikit-learn handwritten digits (1,797 scans, 8×8 shown as 32×32 RGB); built in, offline"
        ),
    )
