"""Uploads (issue 6): every bad file gets a clear UploadError; odd but valid images are normalised."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from viscodex.errors import ViscodexError
from viscodex.app.uploads import UploadError, load_image


def png(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def png_header_only(w: int, h: int) -> bytes:
    """A PNG that declares w x h pixels but carries almost no data (the shape of a bomb)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_plain_rgb_passes_unchanged(tmp_path):
    im = Image.new("RGB", (120, 80), (10, 200, 30))
    p = tmp_path / "a.png"
    im.save(p)
    n = load_image(p)
    assert n.image.mode == "RGB" and n.image.size == (120, 80) and n.notes == []
    assert n.image.getpixel((5, 5)) == (10, 200, 30)
    assert n.summary().startswith("PNG 120x80 RGB")


@pytest.mark.parametrize("data,needle", [
    (b"hello, I am a text file\n", "not an image file"),
    (b"", "empty"),
    (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "not an image file"),
])
def test_non_images_are_refused(tmp_path, data, needle):
    p = tmp_path / "upload.png"
    p.write_bytes(data)
    with pytest.raises(UploadError, match=needle) as e:
        load_image(p)
    assert "upload.png" in str(e.value)
    assert isinstance(e.value, ViscodexError)


def test_truncated_image_is_refused():
    data = png(Image.effect_noise((200, 200), 50).convert("RGB"))
    with pytest.raises(UploadError, match="corrupt or truncated"):
        load_image(data[: len(data) // 2])


def test_decompression_bomb_header_is_refused_without_decoding():
    with pytest.raises(UploadError, match="decompression bomb"):
        load_image(png_header_only(50_000, 50_000))  # 2.5 gigapixels declared, a few bytes sent


def test_too_many_pixels_is_refused_before_decoding():
    with pytest.raises(UploadError, match=r"8000x6000 = 48 megapixels; the limit is 40"):
        load_image(png_header_only(8000, 6000))


def test_missing_and_none():
    with pytest.raises(UploadError, match="no image was given"):
        load_image(None)
    with pytest.raises(UploadError, match="not found"):
        load_image("/nonexistent/x.png")


def test_file_size_limit(tmp_path):
    p = tmp_path / "big.png"
    p.write_bytes(png(Image.effect_noise((300, 300), 80).convert("RGB")))
    with pytest.raises(UploadError, match=r"big.png: the file is \d+\.\d\d KiB; the limit is 1000 B"):
        load_image(p, max_file_bytes=1000)


@pytest.mark.parametrize("size,needle", [((4, 4), "at least 8 px"), ((2000, 10), "aspect ratio above 100:1")])
def test_tiny_and_thin_images_are_refused(size, needle):
    with pytest.raises(UploadError, match=needle):
        load_image(png(Image.new("RGB", size)))


def test_huge_image_is_downscaled_keeping_aspect():
    n = load_image(png(Image.new("RGB", (3000, 2000), (1, 2, 3))), max_pixels=600_000)
    w, h = n.image.size
    assert w * h <= 600_000 and abs(w / h - 1.5) < 0.01
    assert "resized from 3000x2000" in n.summary()
    assert n.original_size == (3000, 2000)


def test_cmyk_is_converted():
    im = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure magenta+yellow ink = red
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95)
    n = load_image(buf.getvalue())
    r, g, b = n.image.getpixel((16, 16))
    assert n.image.mode == "RGB" and r > 200 and g < 60 and b < 60
    assert "CMYK converted to RGB" in n.notes


def test_transparency_is_composited_on_white():
    im = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    im.paste((255, 0, 0, 255), (0, 0, 16, 32))
    n = load_image(png(im))
    assert n.image.getpixel((20, 5)) == (255, 255, 255)  # transparent -> white, not black
    assert n.image.getpixel((5, 5)) == (255, 0, 0)
    assert "transparency composited on white" in n.notes


def test_palette_with_transparency_and_grey_alpha():
    p = Image.new("P", (16, 16), 0)
    p.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    p.paste(1, (0, 0, 8, 16))
    n = load_image(png(p, transparency=0))
    assert n.image.getpixel((12, 4)) == (255, 255, 255) and n.image.getpixel((2, 2)) == (0, 0, 255)
    la = Image.new("LA", (16, 16), (100, 255))
    assert load_image(png(la)).image.getpixel((3, 3)) == (100, 100, 100)


def test_16_bit_is_scaled_not_clipped():
    a = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (16, 1))
    n = load_image(png(Image.fromarray(a)))
    row = [n.image.getpixel((x, 3))[0] for x in (0, 32, 63)]
    assert row[0] == 0 and 100 < row[1] < 160 and row[2] == 255  # clipping would give 255 almost everywhere


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    n = load_image(buf.getvalue())
    r, g, b = n.image.getpixel((5, 5))
    assert r > 200 and b < 50
    assert any("animated (2 frames)" in x for x in n.notes)


def test_exif_rotation_is_applied():
    im = Image.new("RGB", (60, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes())
    n = load_image(buf.getvalue())
    assert n.image.size == (20, 60)
    assert "rotated per its EXIF orientation" in n.notes
