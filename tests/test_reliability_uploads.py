"""The issue's whole corpus of bad and odd images, pushed through the Attributions page's upload box.

Each file is made here. Every one gives either both model panels with their maps (and the page
says what was done to the image), or exactly one error box with the reason; the app keeps running:
all of them go through one AppTest session, and the good file after each bad one is shown.
(kdviz.data.images itself is tested on the same kinds of file in tests/test_images.py.)
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from kdviz.attribution import METHODS
from kdviz.data import images

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"

pytestmark = pytest.mark.slow


# ----------------------------------------------------------------------------------- the corpus


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    )


def real_bilevel_png(width: int, height: int) -> bytes:
    """A genuine 1-bit PNG of ``width``×``height`` (all black): every row is there, zlib makes it small.

    Built row by row, so the test never holds the decoded picture in memory either.
    """
    row = b"\x00" + bytes((width + 7) // 8)  # filter type 0, then the packed bits
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def declared_size_png(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header declares ``width``×``height``: a decompression bomb's calling card."""
    data = bytearray(encode(Image.new("RGB", (8, 8), (200, 30, 30)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def sixteen_bit_png() -> bytes:
    arr = np.zeros((48, 48), np.uint16)
    arr[:, :24] = 65535
    arr[:, 24:] = 20000
    return encode(Image.fromarray(arr), "PNG")


def palette_with_transparency() -> bytes:
    im = Image.new("P", (40, 40), 0)
    im.putpalette([0, 0, 0, 20, 20, 220] + [0] * (254 * 3))
    im.paste(1, (0, 0, 20, 40))
    return encode(im, "PNG", transparency=0)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 40), c) for c in ((20, 200, 20), (220, 20, 20), (20, 20, 220))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 60 wide × 30 high; shown rotated: 30 wide × 60 high
    return encode(Image.fromarray(noise(30, 60, 3)), "JPEG", quality=90, exif=exif.tobytes())


def truncated_jpeg() -> bytes:
    data = encode(Image.fromarray(noise(64, 64, 1)), "JPEG", quality=90)
    return data[: len(data) // 2]


SVG = (
    b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
    b'<circle r="20"/></svg>'
)


@dataclass
class Case:
    name: str  # the uploaded file's name
    data: bytes
    refused: list[str] = field(default_factory=list)  # words of the one error box; empty: it must work
    note: str | None = None  # words of "What the models see" for a file that works
    caption: str | None = None  # the original's caption for a file that works ("W×H FORMAT")


def corpus() -> list[Case]:
    """Bad and good files interleaved: each good one after a bad one proves the app kept running."""
    return [
        Case("empty.png", b"", refused=["empty.png is empty"]),
        Case(
            "cmyk.jpg",
            encode(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG", quality=95),
            note="CMYK converted to RGB",
            caption="40×40 JPEG",
        ),
        Case(
            "noise.png",
            np.random.default_rng(0).bytes(5000),
            refused=["noise.png is not an image kdviz can read"],
        ),
        Case(
            "deep.png", sixteen_bit_png(), note="I;16 (high bit depth) scaled to 8 bits", caption="48×48 PNG"
        ),
        Case("half.jpg", truncated_jpeg(), refused=["half.jpg is damaged or truncated"]),
        Case(
            "palette.png",
            palette_with_transparency(),
            note="transparent pixels shown on white",
            caption="40×40 PNG",
        ),
        Case(
            "notes.png", b"shopping list\nmilk\neggs\n", refused=["notes.png is not an image kdviz can read"]
        ),
        Case("moving.gif", animated_gif(), note="first frame of 3", caption="40×40 GIF"),
        Case("drawing.png", SVG, refused=["drawing.png is an SVG drawing", "raster image"]),
        Case(
            "phone.jpg",
            exif_rotated_jpeg(),
            note="rotated as its EXIF orientation says",
            caption="30×60 JPEG",
        ),
        Case(
            "bomb.png",
            declared_size_png(100_000, 100_000),
            refused=["bomb.png declares too many pixels", "refused unopened"],
        ),
        Case(
            "dot.png",
            encode(Image.new("RGB", (1, 1), (20, 200, 20)), "PNG"),
            note="resized from 1×1 to 32×32",
            caption="1×1 PNG",
        ),
        Case("huge.png", real_bilevel_png(20_000, 20_000), refused=["huge.png", "too many pixels"]),
        Case(
            "wide.png",
            encode(Image.fromarray(noise(60, 100)), "PNG"),
            note="cropped to its central 60×60 square",
            caption="100×60 PNG",
        ),
        Case(
            "mid.png",
            declared_size_png(8_000, 8_000),
            refused=["mid.png is 8000×8000 pixels", f"limit is {images.MAX_PIXELS:,} pixels"],
        ),
        Case(
            "heavy.png",
            b"\x89PNG\r\n\x1a\n" + bytes(images.MAX_BYTES),
            refused=["heavy.png is 20.0 MB", "limit is 20 MB"],
        ),
        Case(
            "last.png",
            encode(Image.fromarray(noise(32, 32, 9)), "PNG"),
            note="the image as it is",
            caption="32×32 PNG",
        ),
    ]


def _decoded_length(png: bytes) -> int:
    """Bytes of pixel rows the PNG's image data expands to, counted without keeping them."""
    pos, unpacker, total = 8, zlib.decompressobj(), 0
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos : pos + 8])
        if kind == b"IDAT":
            data = png[pos + 8 : pos + 8 + length]
            while data:
                total += len(unpacker.decompress(data, 1 << 20))
                data = unpacker.unconsumed_tail
        pos += 12 + length
    return total + len(unpacker.flush())


def test_the_corpus_is_what_it_claims(monkeypatch):
    """The generated files really are the odd images they are named after (so the page test means
    something)."""
    files = {c.name: c.data for c in corpus()}
    with monkeypatch.context() as patch:
        patch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # only to read the header here
        huge = Image.open(io.BytesIO(files["huge.png"]))
        assert huge.size == (20_000, 20_000) and huge.mode == "1"
    assert _decoded_length(files["huge.png"]) == 20_000 * (1 + 20_000 // 8)  # every row is really there
    assert len(files["huge.png"]) < 200_000  # 400 M pixels, compressed
    with pytest.raises(Image.DecompressionBombError):  # 10 G pixels declared: Pillow itself will not open it
        Image.open(io.BytesIO(files["bomb.png"]))
    assert Image.open(io.BytesIO(files["deep.png"])).mode == "I;16"
    assert Image.open(io.BytesIO(files["cmyk.jpg"])).mode == "CMYK"
    palette = Image.open(io.BytesIO(files["palette.png"]))
    assert palette.mode == "P" and "transparency" in palette.info
    assert Image.open(io.BytesIO(files["moving.gif"])).n_frames == 3
    assert Image.open(io.BytesIO(files["phone.jpg"])).getexif()[0x0112] == 6
    assert Image.open(io.BytesIO(files["dot.png"])).size == (1, 1)
    assert len(files["heavy.png"]) > images.MAX_BYTES
    with pytest.raises(OSError):
        Image.open(io.BytesIO(files["half.jpg"])).load()


# ----------------------------------------------------------------------------------- the page


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDVIZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("kdviz.attribution.cache._DEFAULT_CACHE", None)


def panels(at: AppTest) -> dict:
    return {
        col.subheader[0].value: col
        for col in at.columns
        if len(col.subheader) and col.subheader[0].value in ("Teacher", "Student")
    }


def what_the_models_see(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith("**What the models see:**")]


def image_captions(at) -> list[str]:
    return [c for img in at.get("image") for c in img.captions]


def test_every_file_of_the_corpus_through_the_attributions_upload(fresh_cache):
    at = AppTest.from_file(str(APP), default_timeout=240).run()
    at.switch_page("pages/attributions.py").run()
    assert not at.exception and not at.error
    at.slider(key="attr_steps").set_value(4)  # small IG: the test is about the files, not the maps
    at.radio(key="attr_source").set_value("upload").run()
    assert any("Upload an image" in i.value for i in at.info)

    shown = []
    for case in corpus():
        at.file_uploader(key="attr_upload").set_value(
            (case.name, case.data, "application/octet-stream")
        ).run()
        assert not at.exception, (case.name, [e.value for e in at.exception])
        errors = [e.value for e in at.error]
        if case.refused:
            assert len(errors) == 1, (case.name, errors)
            assert errors[0].startswith("Cannot use this file: "), errors[0]
            for words in case.refused:
                assert words in errors[0], (case.name, words, errors[0])
            assert "\n" not in errors[0] and "Traceback" not in errors[0]
            assert not panels(at) and not what_the_models_see(at), (
                f"{case.name}: maps shown for a refused file"
            )
            continue
        assert not errors, (case.name, errors)
        notes = what_the_models_see(at)
        assert len(notes) == 1 and case.note in notes[0], (case.name, notes)
        assert f"{case.name}: {case.caption}" in image_captions(at), (case.name, image_captions(at))
        assert "model input, 32×32" in image_captions(at)
        found = panels(at)
        assert set(found) == {"Teacher", "Student"}, case.name
        for col in found.values():
            assert [c for img in col.get("image") for c in img.captions] == [
                "input",
                METHODS["ig"],
                "overlay",
            ]
            text = next(m.value for m in col.markdown if "map for class" in m.value)
            assert re.match(r"\*\*\d\*\*", text), text  # a digit predicted, its map drawn
        shown.append(case.name)
    assert shown == [c.name for c in corpus() if not c.refused]
