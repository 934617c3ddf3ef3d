"""kdviz.data.images.read_image on a corpus of real-world files made here: every one is read correctly or
refused with an ImageError that says why in words.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from kdviz.data import images
from kdviz.data.images import ImageError, read_image

RED, GREEN, BLUE = (220, 20, 20), (20, 200, 20), (20, 20, 220)


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def pattern(w: int = 40, h: int = 40) -> Image.Image:
    """Left half red, right half blue: enough structure to see a flip, a crop or a colour swap."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 2] = RED
    arr[:, w // 2 :] = BLUE
    return Image.fromarray(arr)


def assert_model_input(loaded, size: int = 32) -> None:
    assert loaded.model_input.shape == (size, size, 3)
    assert loaded.model_input.dtype == np.uint8
    assert loaded.original.dtype == np.uint8 and loaded.original.ndim == 3 and loaded.original.shape[2] == 3


def close(pixel, colour, tol: int = 20) -> bool:
    return bool(np.all(np.abs(np.asarray(pixel, int) - np.asarray(colour, int)) <= tol))


# --------------------------------------------------------------------------- formats that work


@pytest.mark.parametrize(
    "fmt,kw,tol",
    [
        ("PNG", {}, 0),
        ("JPEG", {"quality": 95}, 20),
        ("WEBP", {"lossless": True}, 0),
        ("BMP", {}, 0),
        ("TIFF", {}, 0),
    ],
)
def test_common_formats(fmt, kw, tol):
    data = encode(pattern(), fmt, **kw)
    loaded = read_image(data, name=f"x.{fmt.lower()}")
    assert_model_input(loaded)
    assert loaded.format == fmt
    assert loaded.original.shape == (40, 40, 3)
    assert close(loaded.original[20, 5], RED, tol) and close(loaded.original[20, 35], BLUE, tol)
    assert close(loaded.model_input[16, 3], RED, tol) and close(loaded.model_input[16, 28], BLUE, tol)
    assert any("resized from 40×40 to 32×32" in n for n in loaded.notes)
    assert not any("crop" in n for n in loaded.notes), "a square image is not cropped"


def test_exact_size_png_is_untouched():
    arr = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    loaded = read_image(encode(Image.fromarray(arr), "PNG"))
    np.testing.assert_array_equal(loaded.model_input, arr)
    assert loaded.notes == []
    assert loaded.mode == "RGB" and loaded.original_size == (32, 32)


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (32, 32), c) for c in (GREEN, RED, BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    loaded = read_image(data)
    assert_model_input(loaded)
    assert loaded.format == "GIF"
    assert close(loaded.model_input.reshape(-1, 3).mean(0), GREEN, 3)
    assert "first frame of 3" in loaded.notes


def test_grayscale_is_spread_to_three_channels():
    arr = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (32, 1))
    loaded = read_image(encode(Image.fromarray(arr, "L"), "PNG"))
    assert loaded.mode == "L"
    assert_model_input(loaded)
    np.testing.assert_array_equal(loaded.model_input[..., 0], arr)
    np.testing.assert_array_equal(loaded.model_input[..., 0], loaded.model_input[..., 2])
    assert any("L converted to RGB" in n for n in loaded.notes)


def test_palette_with_transparency_is_composited_on_white():
    im = Image.new("P", (32, 32), 0)
    im.putpalette([0, 0, 0] + list(BLUE) + [0] * (254 * 3))
    im.paste(1, (0, 0, 16, 32))  # left half blue, right half index 0 (transparent)
    data = encode(im, "PNG", transparency=0)
    loaded = read_image(data)
    assert loaded.mode == "P"
    assert tuple(loaded.model_input[5, 25]) == (255, 255, 255), "transparent pixels are white, not black"
    assert tuple(loaded.model_input[5, 5]) == BLUE
    assert any("white" in n for n in loaded.notes)


def test_rgba_transparent_pixel_becomes_white():
    arr = np.zeros((32, 32, 4), np.uint8)
    arr[..., :3] = RED
    arr[..., 3] = 255
    arr[0, 0] = (10, 200, 30, 0)  # fully transparent, whatever its colour
    arr[0, 1] = (0, 0, 0, 128)  # half transparent black: grey
    loaded = read_image(encode(Image.fromarray(arr, "RGBA"), "PNG"))
    assert loaded.mode == "RGBA"
    assert tuple(loaded.model_input[0, 0]) == (255, 255, 255)
    assert close(loaded.model_input[0, 1], (127, 127, 127), 2)
    assert tuple(loaded.model_input[5, 5]) == RED
    assert any("white" in n for n in loaded.notes)


def test_16_bit_png_is_scaled_to_8_bits():
    arr = np.zeros((32, 32), np.uint16)
    arr[:, :16] = 65535
    arr[:, 16:] = 1000  # dark but not black; would clip to white if read as 8-bit values
    data = encode(Image.fromarray(arr), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    loaded = read_image(data)
    assert loaded.mode == "I;16"
    assert tuple(loaded.model_input[3, 3]) == (255, 255, 255)
    assert tuple(loaded.model_input[3, 30]) == (3, 3, 3)  # 1000 / 65535 * 255 = 3.9
    assert any("8 bits" in n for n in loaded.notes)


def test_cmyk_jpeg_is_converted():
    im = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # no cyan, full magenta and yellow: red
    data = encode(im, "JPEG", quality=95)
    loaded = read_image(data)
    assert loaded.mode == "CMYK"
    r, g, b = loaded.model_input.reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60
    assert any("CMYK converted to RGB" in n for n in loaded.notes)


def test_exif_rotated_jpeg_is_turned_upright():
    # Stored 60 wide, 30 high; orientation 6 means "rotate 90° clockwise to view": 30 wide, 60 high.
    arr = np.zeros((30, 60, 3), np.uint8)
    arr[:, :30] = RED
    arr[:, 30:] = BLUE
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.fromarray(arr), "JPEG", quality=95, exif=exif.tobytes())
    loaded = read_image(data)
    assert loaded.original.shape == (60, 30, 3), "width and height swapped by the rotation"
    # Rotating 90° clockwise puts the stored left (red) half on top.
    assert close(loaded.original[5, 15], RED, 25) and close(loaded.original[55, 15], BLUE, 25)
    assert any("EXIF" in n for n in loaded.notes)
    assert any("cropped to its central 30×30" in n for n in loaded.notes)
    assert_model_input(loaded)


def test_one_pixel_image():
    loaded = read_image(encode(Image.new("RGB", (1, 1), GREEN), "PNG"))
    assert_model_input(loaded)
    assert loaded.original.shape == (1, 1, 3)
    assert (loaded.model_input == np.array(GREEN, np.uint8)).all()
    assert any("resized from 1×1" in n for n in loaded.notes)


def test_large_non_square_image_is_cropped_to_its_centre_and_resized():
    arr = np.zeros((1000, 3000, 3), np.uint8)
    arr[:, :1000] = RED
    arr[:, 1000:2000] = GREEN
    arr[:, 2000:] = BLUE
    loaded = read_image(encode(Image.fromarray(arr), "PNG"), size=32)
    assert_model_input(loaded)
    assert loaded.original_size == (3000, 1000)
    assert (loaded.model_input == np.array(GREEN, np.uint8)).all(), "the central square is the green third"
    assert any("cropped to its central 1000×1000 square" in n for n in loaded.notes)
    assert any("resized from 1000×1000 to 32×32" in n for n in loaded.notes)


def test_other_model_sizes():
    loaded = read_image(encode(pattern(), "PNG"), size=64)
    assert loaded.model_input.shape == (64, 64, 3)


# --------------------------------------------------------------------------- files that are refused


def test_empty_file():
    with pytest.raises(ImageError, match="empty"):
        read_image(b"", name="blank.png")


def test_random_bytes():
    data = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    with pytest.raises(ImageError) as err:
        read_image(data, name="noise.bin")
    assert "noise.bin" in str(err.value) and "not an image" in str(err.value)


def test_text_renamed_png():
    with pytest.raises(ImageError, match="not an image kdviz can read"):
        read_image(b"hello, this is a shopping list\nmilk\neggs\n", name="list.png")


def test_truncated_jpeg():
    arr = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(arr), "JPEG", quality=90)
    with pytest.raises(ImageError) as err:
        read_image(data[: len(data) // 2], name="half.jpg")
    assert "half.jpg" in str(err.value) and ("truncated" in str(err.value) or "damaged" in str(err.value))


@pytest.mark.parametrize(
    "svg",
    [
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b'<rect width="10" height="10"/></svg>',
        b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>',
    ],
)
def test_svg_is_refused_as_a_drawing(svg):
    with pytest.raises(ImageError, match="SVG"):
        read_image(svg, name="logo.png")


def patched_png(width: int, height: int) -> bytes:
    """A small valid PNG whose IHDR claims ``width``×``height`` (CRC fixed, so it opens)."""
    data = bytearray(encode(Image.new("RGB", (8, 8), RED), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


@pytest.mark.parametrize(
    "width,height",
    [
        (100_000, 100_000),  # 10 G pixels: Pillow's DecompressionBombError
        (12_000, 10_000),  # 120 M pixels: Pillow only warns; kdviz turns the warning into a refusal
    ],
)
def test_decompression_bomb_is_refused_from_its_header(width, height):
    bomb = patched_png(width, height)
    assert Image.open(io.BytesIO(patched_png(8, 8))).size == (8, 8)  # the patching itself is sound
    assert len(bomb) < 200
    with pytest.raises(ImageError) as err:
        read_image(bomb, name="bomb.png")
    assert "bomb.png" in str(err.value) and "too many pixels" in str(err.value)


def test_header_over_kdviz_pixel_limit_but_under_pillows():
    # 8000 × 8000 = 64 M pixels: above kdviz's 40 M, below Pillow's own warning threshold.
    with pytest.raises(ImageError) as err:
        read_image(patched_png(8000, 8000), name="big.png")
    assert "8000×8000" in str(err.value) and "limit" in str(err.value)


def test_lowered_pixel_limit(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 50 * 50)
    data = encode(Image.new("RGB", (100, 100), GREEN), "PNG")
    with pytest.raises(ImageError, match="100×100 pixels; the limit is 2,500 pixels"):
        read_image(data, name="wide.png")
    assert read_image(encode(Image.new("RGB", (40, 40), GREEN), "PNG")).model_input.shape == (32, 32, 3)


def test_file_over_the_byte_limit(monkeypatch):
    too_big = b"\x89PNG\r\n\x1a\n" + bytes(images.MAX_BYTES)
    with pytest.raises(ImageError) as err:
        read_image(too_big, name="huge.png")
    assert "huge.png" in str(err.value) and "20 MB" in str(err.value) and "limit" in str(err.value)

    data = encode(pattern(), "PNG")
    monkeypatch.setattr(images, "MAX_BYTES", len(data) - 1)
    with pytest.raises(ImageError, match="limit"):
        read_image(data)
    monkeypatch.setattr(images, "MAX_BYTES", len(data))
    assert read_image(data).model_input.shape == (32, 32, 3)


def test_image_error_is_a_value_error():
    assert issubclass(ImageError, ValueError)


@pytest.mark.parametrize("fmt", [f for f, exts in images.FORMATS.items() if exts])
def test_every_offered_extension_is_a_format_that_reads(fmt):
    """The upload boxes offer exactly FORMATS' extensions; each one is what PIL writes and reads for it."""
    registered = Image.registered_extensions()
    for ext in images.FORMATS[fmt]:
        assert ext in images.UPLOAD_TYPES and registered[f".{ext}"] == fmt
    loaded = read_image(encode(pattern().convert("RGB"), fmt), size=8)
    assert loaded.format == fmt and loaded.model_input.shape == (8, 8, 3)
