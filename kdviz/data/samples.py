"""Sample photographs to try the models on without having one: the real photos inside scikit-image.

They ship in the ``skimage.data`` package itself, so they load on a machine with no network (only
files that scikit-image keeps in its wheel are offered; the ones it would download are not). Each
comes back as a uint8 RGB array (H, W, 3), ready for :func:`kdviz.data.images.from_array`, which crops
and resizes it for a model exactly as an upload is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sample:
    name: str
    title: str
    note: str  # what is in it, and which CIFAR-10 class (if any) it resembles
    load: Callable[[], np.ndarray]


def _skimage(attr: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, attr)()

    return load


def _motorcycle() -> np.ndarray:
    import skimage.data

    left, _, _ = skimage.data.stereo_motorcycle()
    return left


def _horse() -> np.ndarray:
    import skimage.data

    return np.where(skimage.data.horse(), 255, 0).astype(np.uint8)  # a black silhouette on white


SAMPLES: dict[str, Sample] = {
    s.name: s
    for s in (
        Sample("cat", "Chelsea the cat", "a tabby cat (CIFAR-10: cat)", _skimage("chelsea")),
        Sample(
            "astronaut",
            "Astronaut",
            "Eileen Collins, NASA portrait (no CIFAR-10 class)",
            _skimage("astronaut"),
        ),
        Sample(
            "rocket",
            "Rocket",
            "a rocket on its launch pad (CIFAR-10 has no rocket; airplane is closest)",
            _skimage("rocket"),
        ),
        Sample("coffee", "Coffee", "a cup of coffee on a saucer (no CIFAR-10 class)", _skimage("coffee")),
        Sample(
            "motorcycle",
            "Motorcycle",
            "a motorcycle in a studio (CIFAR-10: automobile is closest)",
            _motorcycle,
        ),
        Sample("horse", "Horse silhouette", "a horse drawn as a black silhouette (CIFAR-10: horse)", _horse),
        Sample("cameraman", "Cameraman", "a man with a camera on a tripod, in grey", _skimage("camera")),
        Sample("coins", "Coins", "old Greek coins on a dark cloth, in grey", _skimage("coins")),
    )
}


def sample_names() -> list[str]:
    return list(SAMPLES)


def load_sample(name: str) -> np.ndarray:
    """The photo called ``name`` as uint8 RGB (H, W, 3); grey photos get three equal channels."""
    if name not in SAMPLES:
        raise ValueError(f"unknown sample photo {name!r}; choose one of {', '.join(SAMPLES)}")
    from PIL import Image

    image = np.asarray(SAMPLES[name].load(), dtype=np.uint8)
    return np.asarray(Image.fromarray(image).convert("RGB"), dtype=np.uint8)
