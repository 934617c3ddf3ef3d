"""Generated data at any size: ten classes of coloured shapes, and writing any split as an image folder.

No large-image data set ships with kdviz and none may be downloaded at run time, yet a model of 96 or
224 px has to be tried somewhere. ``shapes`` is drawn here, at the size asked for, from a fixed seed:
a filled shape of random colour, place and scale on a noisy background of another colour, so a model
has to learn the outline, not a colour. :func:`write_image_folder` turns any images into the
``train/<class>/`` + ``test/<class>/`` folder that :func:`kdviz.data.load_dataset` reads (the tests
build their 96- and 224-px folders with it; a person can export a data set to look at its files).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core import atomic
from .base import Dataset, ImageSplit, channel_stats

SHAPES = (
    "circle",
    "square",
    "triangle",
    "diamond",
    "ring",
    "cross",
    "star",
    "hexagon",
    "horizontal bar",
    "vertical bar",
)
TRAIN_PER_CLASS, TEST_PER_CLASS = 24, 8
SEED = 0  # fixed: the same images on every machine


def _polygon(cx: float, cy: float, r: float, corners: int, turn: float = 0.0) -> list[tuple[float, float]]:
    return [
        (
            cx + r * math.cos(turn + 2 * math.pi * k / corners),
            cy + r * math.sin(turn + 2 * math.pi * k / corners),
        )
        for k in range(corners)
    ]


def draw_shape(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One uint8 (size, size, 3) image of ``kind`` (one of :data:`SHAPES`)."""
    from PIL import Image, ImageDraw

    scale = 2  # drawn at twice the size and reduced: smooth edges at any size
    big = size * scale
    background = rng.integers(0, 256, 3)
    colour = (background + rng.integers(96, 160, 3)) % 256  # far enough from the background to see
    canvas = Image.new("RGB", (big, big), tuple(int(c) for c in background))
    draw = ImageDraw.Draw(canvas)
    r = big * rng.uniform(0.22, 0.34)
    cx, cy = (big * rng.uniform(0.38, 0.62) for _ in range(2))
    fill = tuple(int(c) for c in colour)
    box = (cx - r, cy - r, cx + r, cy + r)
    thick = r * 0.35
    if kind == "circle":
        draw.ellipse(box, fill=fill)
    elif kind == "square":
        draw.rectangle((cx - r * 0.85, cy - r * 0.85, cx + r * 0.85, cy + r * 0.85), fill=fill)
    elif kind == "triangle":
        draw.polygon(_polygon(cx, cy, r, 3, -math.pi / 2), fill=fill)
    elif kind == "diamond":
        draw.polygon(_polygon(cx, cy, r, 4), fill=fill)
    elif kind == "ring":
        draw.ellipse(box, outline=fill, width=max(1, int(thick)))
    elif kind == "cross":
        draw.rectangle((cx - r, cy - thick / 2, cx + r, cy + thick / 2), fill=fill)
        draw.rectangle((cx - thick / 2, cy - r, cx + thick / 2, cy + r), fill=fill)
    elif kind == "star":
        points = [
            p
            for k in range(5)
            for p in (
                _polygon(cx, cy, r, 5, -math.pi / 2)[k],
                _polygon(cx, cy, r * 0.4, 5, -math.pi / 2 + math.pi / 5)[k],
            )
        ]
        draw.polygon(points, fill=fill)
    elif kind == "hexagon":
        draw.polygon(_polygon(cx, cy, r, 6), fill=fill)
    elif kind == "horizontal bar":
        draw.rectangle((cx - r, cy - thick / 2, cx + r, cy + thick / 2), fill=fill)
    elif kind == "vertical bar":
        draw.rectangle((cx - thick / 2, cy - r, cx + thick / 2, cy + r), fill=fill)
    else:
        raise ValueError(f"unknown shape {kind!r}; choose one of {', '.join(SHAPES)}")
    small = np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.int16)
    noise = rng.integers(-12, 13, (size, size, 3), dtype=np.int16)
    return np.clip(small + noise, 0, 255).astype(np.uint8)


def shape_images(per_class: int, size: int, seed: int = SEED) -> ImageSplit:
    """``per_class`` images of each shape, class after class, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    images = np.stack([draw_shape(kind, size, rng) for kind in SHAPES for _ in range(per_class)])
    labels = np.repeat(np.arange(len(SHAPES), dtype=np.int64), per_class)
    return ImageSplit(images, labels)


def load_shapes(
    image_size: int = 32, *, train_per_class: int = TRAIN_PER_CLASS, test_per_class: int = TEST_PER_CLASS
) -> Dataset:
    """The built-in ``shapes`` data set: 10 classes, 240 training and 80 test images, at any size."""
    train = shape_images(train_per_class, image_size, SEED)
    test = shape_images(test_per_class, image_size, SEED + 1)
    mean, std = channel_stats(train.images)
    return Dataset(
        name="shapes",
        source="shapes",
        train=train,
        test=test,
        class_names=SHAPES,
        mean=mean,
        std=std,
        description=(
            f"generated coloured shapes ({len(SHAPES)} classes, {len(train)} training and {len(test)} "
            f"test images at {image_size}×{image_size}); built in, offline"
        ),
    )


def write_image_folder(
    root: str | Path,
    train: ImageSplit,
    test: ImageSplit,
    class_names: Sequence[str],
    *,
    fmt: str = "png",
) -> Path:
    """Write ``train`` and ``test`` as ``root/{train,test}/<class>/<index>.<fmt>`` (PNG or JPEG)."""
    from PIL import Image

    root = Path(root)
    pil_format = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG"}.get(fmt.lower())
    if pil_format is None:
        raise ValueError(f"fmt must be png or jpg, not {fmt!r}")
    for split_name, split in (("train", train), ("test", test)):
        for name in class_names:
            (root / split_name / name).mkdir(parents=True, exist_ok=True)  # empty classes stay listed
        for i, (pixels, label) in enumerate(zip(split.images, split.labels, strict=True)):
            buf = io.BytesIO()
            Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buf, format=pil_format)
            atomic.write_bytes(root / split_name / class_names[int(label)] / f"{i:05d}.{fmt}", buf.getvalue())
    return root
