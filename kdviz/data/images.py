"""Reading a person's own image, whatever it is, into the model's input, or a clear refusal.

Accepted: PNG, JPEG, WebP, BMP, GIF (first frame), TIFF; grey, palette, RGBA (composited on white),
CMYK, 16-bit; EXIF rotation applied. The image is cropped to its central square and resized to the
model's input size; what was done is reported in ``notes`` so the page can show it.

Limits (documented in the README): at most ``MAX_BYTES`` of file and ``MAX_PIXELS`` pixels, checked
from the header before anything is decoded, so a decompression bomb is refused without being
expanded.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import numpy as np

MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
#: The raster formats kdviz reads from a person, with the file extensions they come in. MPO (a
#: camera's multi-picture JPEG) comes as a ``.jpg``.
FORMATS: dict[str, tuple[str, ...]] = {
    "PNG": ("png",),
    "JPEG": ("jpg", "jpeg"),
    "WEBP": ("webp",),
    "BMP": ("bmp",),
    "GIF": ("gif",),
    "TIFF": ("tif", "tiff"),
    "MPO": (),
}
#: Their extensions, for an upload box's ``type=`` and for the files of an image folder.
UPLOAD_TYPES: tuple[str, ...] = tuple(ext for exts in FORMATS.values() for ext in exts)


class ImageError(ValueError):
    """An image that cannot be used; the message says why in plain words."""


@dataclass
class LoadedImage:
    original: np.ndarray  # uint8 (H, W, 3), after EXIF rotation and colour conversion
    model_input: np.ndarray  # uint8 (size, size, 3): what the model sees
    format: str
    mode: str
    notes: list[str] = field(default_factory=list)

    @property
    def original_size(self) -> tuple[int, int]:
        return int(self.original.shape[1]), int(self.original.shape[0])


def read_image(data: bytes, *, size: int = 32, name: str = "the file") -> LoadedImage:
    """Decode ``data`` and prepare it for a ``size``×``size`` model; raises :class:`ImageError`."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise ImageError(f"{name} is empty")
    if len(data) > MAX_BYTES:
        raise ImageError(f"{name} is {len(data) / 2**20:.1f} MB; the limit is {MAX_BYTES / 2**20:g} MB")
    head = data[:512].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:4096].lower()):
        raise ImageError(f"{name} is an SVG drawing; upload a raster image (PNG, JPEG, WebP, BMP, GIF)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image kdviz can read (PNG, JPEG, WebP, BMP, GIF, TIFF)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"{name} declares too many pixels (more than {MAX_PIXELS:,}); refused unopened"
        ) from None
    except Exception as exc:  # noqa: BLE001
        raise ImageError(f"{name} could not be opened ({exc})") from None
    width, height = im.size
    if width * height > MAX_PIXELS:
        raise ImageError(f"{name} is {width}×{height} pixels; the limit is {MAX_PIXELS:,} pixels")
    if width < 1 or height < 1:
        raise ImageError(f"{name} has no pixels")
    fmt, mode, notes = im.format or "?", im.mode, []
    try:
        frames = getattr(im, "n_frames", 1)
        if frames > 1:
            im.seek(0)
            notes.append(f"first frame of {frames}")
        im.load()
        rotated = ImageOps.exif_transpose(im)
        if rotated is not None and rotated.size != im.size or _orientation(im) not in (None, 1):
            notes.append("rotated as its EXIF orientation says")
        rgb = _to_rgb(rotated if rotated is not None else im, notes)
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
        raise ImageError(f"{name} is damaged or truncated ({exc})") from None
    original = np.asarray(rgb, dtype=np.uint8)
    model_input = _fit(rgb, size, notes)
    return LoadedImage(original, model_input, fmt, mode, notes)


def from_array(image: np.ndarray, *, size: int = 32, name: str = "the image") -> LoadedImage:
    """Prepare an in-memory uint8 image (a sample photo) exactly as an upload: same crop, resize and notes."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ImageError(f"{name} must be uint8 (H, W), (H, W, 3) or (H, W, 4), got {arr.dtype} {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageError(f"{name} has no pixels")
    im = Image.fromarray(arr)
    notes: list[str] = []
    rgb = _to_rgb(im, notes)
    return LoadedImage(np.asarray(rgb, dtype=np.uint8), _fit(rgb, size, notes), "array", im.mode, notes)


def _orientation(im) -> int | None:
    try:
        return im.getexif().get(0x0112)
    except Exception:  # noqa: BLE001
        return None


def _to_rgb(im, notes: list[str]):
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
        notes.append(f"{im.mode} (high bit depth) scaled to 8 bits")
        return Image.fromarray(arr).convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        notes.append("transparent pixels shown on white")
        return Image.alpha_composite(background, im.convert("RGBA")).convert("RGB")
    if im.mode != "RGB":
        notes.append(f"{im.mode} converted to RGB")
    return im.convert("RGB")


def _fit(im, size: int, notes: list[str]) -> np.ndarray:
    from PIL import Image

    w, h = im.size
    if w != h:
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        im = im.crop((left, top, left + side, top + side))
        notes.append(f"cropped to its central {side}×{side} square")
    if im.size != (size, size):
        notes.append(f"resized from {im.width}×{im.height} to {size}×{size}")
        im = im.resize(
            (size, size), Image.Resampling.LANCZOS if im.width > size else Image.Resampling.BILINEAR
        )
    return np.asarray(im, dtype=np.uint8)
