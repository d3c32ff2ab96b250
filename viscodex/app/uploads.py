"""Uploaded images: validate and normalise them before a model sees them.

Anything a browser or API client can send arrives here as a path or bytes. Every way it can be
wrong (not an image, corrupt, a decompression bomb, too small, too thin, too many pixels, CMYK,
transparency, palettes, 16-bit, animation, EXIF rotation) ends as an RGB image plus notes about
what was changed, or as an `UploadError` whose message says what is wrong.
"""
from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .._util.sizes import human_size
from ..errors import UploadError

MAX_FILE_BYTES = 25 * 1024 * 1024  # larger uploads are rejected before decoding
MAX_DECODE_PIXELS = 40_000_000  # decoded size limit (a 40 MP screenshot is already extreme)
MIN_SIDE = 8  # px; smaller images carry no readable content
MAX_ASPECT = 100  # Qwen2.5-VL's resize refuses aspect ratios above 200
DEFAULT_MAX_PIXELS = 1024 * 28 * 28  # Qwen2.5-VL's usual upper bound per image
ORIENTATION_TAG = 0x0112


@dataclass
class NormalisedImage:
    image: Image.Image  # RGB, at most max_pixels
    original_size: tuple[int, int]
    original_mode: str
    format: str | None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        w, h = self.original_size
        head = f"{self.format or 'image'} {w}x{h} {self.original_mode}"
        return head + ("; " + "; ".join(self.notes) if self.notes else "")


def load_image(source: str | os.PathLike | bytes | Image.Image | None, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               max_file_bytes: int = MAX_FILE_BYTES, max_decode_pixels: int = MAX_DECODE_PIXELS) -> NormalisedImage:
    """Open `source` (path, bytes or PIL image) and return it as a validated RGB image of at most
    `max_pixels` pixels. Raises UploadError with a clear message for anything unusable."""
    if source is None:
        raise UploadError("no image was given: upload a screenshot, chart or diagram")
    if isinstance(source, Image.Image):
        return _normalise(source, None, max_pixels, max_decode_pixels)
    if isinstance(source, (bytes, bytearray)):
        data, name = bytes(source), "the upload"
    else:
        p = Path(source)
        name = p.name
        if not p.is_file():
            raise UploadError(f"{name}: the uploaded file was not found")
        size = p.stat().st_size
        if size > max_file_bytes:
            raise UploadError(f"{name}: the file is {human_size(size)}; the limit is {human_size(max_file_bytes)}")
        data = p.read_bytes()
    if not data:
        raise UploadError(f"{name}: the file is empty")
    if len(data) > max_file_bytes:
        raise UploadError(f"{name}: the file is {human_size(len(data))}; the limit is {human_size(max_file_bytes)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(f"{name}: the image declares too many pixels (a decompression bomb?); "
                          f"the limit is {max_decode_pixels / 1e6:.0f} megapixels") from None
    except UnidentifiedImageError:
        raise UploadError(f"{name}: not an image file this app can read (use PNG, JPEG, WebP, GIF or BMP)") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for malformed headers
        raise UploadError(f"{name}: the image header is corrupt ({type(e).__name__}: {e})") from None
    return _normalise(im, name, max_pixels, max_decode_pixels)


def _normalise(im: Image.Image, name: str | None, max_pixels: int, max_decode_pixels: int) -> NormalisedImage:
    label = name or "the image"
    w, h = im.size
    fmt, mode = im.format, im.mode
    if w * h > max_decode_pixels:
        raise UploadError(f"{label}: the image is {w}x{h} = {w * h / 1e6:.0f} megapixels; "
                          f"the limit is {max_decode_pixels / 1e6:.0f} megapixels")
    if min(w, h) < MIN_SIDE:
        raise UploadError(f"{label}: the image is {w}x{h} px; it must be at least {MIN_SIDE} px on each side")
    if max(w, h) / min(w, h) > MAX_ASPECT:
        raise UploadError(f"{label}: the image is {w}x{h} px; an aspect ratio above {MAX_ASPECT}:1 cannot be encoded "
                          "(crop it first)")
    notes: list[str] = []
    frames = getattr(im, "n_frames", 1)
    try:
        if frames > 1:
            im.seek(0)
            notes.append(f"animated ({frames} frames): using the first frame")
        im.load()
    except Exception as e:  # noqa: BLE001 - truncated/corrupt data surfaces as OSError, SyntaxError, ValueError...
        raise UploadError(f"{label}: the image data is corrupt or truncated ({type(e).__name__}: {e})") from None
    try:
        orientation = im.getexif().get(ORIENTATION_TAG, 1)
        rotated = ImageOps.exif_transpose(im) if orientation != 1 else im
        if orientation != 1:
            notes.append("rotated per its EXIF orientation")
    except Exception:  # noqa: BLE001 - a broken EXIF block should not stop a usable image
        rotated = im
        notes.append("EXIF orientation ignored (unreadable)")
    im = _to_rgb(rotated, notes)
    if im.width * im.height > max_pixels:
        s = math.sqrt(max_pixels / (im.width * im.height))
        nw, nh = max(1, int(im.width * s)), max(1, int(im.height * s))
        notes.append(f"resized from {im.width}x{im.height} to {nw}x{nh} (max {max_pixels} pixels)")
        im = im.resize((nw, nh), Image.Resampling.LANCZOS)
    return NormalisedImage(im, (w, h), mode, fmt, notes)


def _to_rgb(im: Image.Image, notes: list[str]) -> Image.Image:
    """RGB with transparency composited on white and high-bit-depth images scaled, not clipped."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        import numpy as np

        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        notes.append(f"{mode} ({'float' if mode == 'F' else '16/32-bit'}) scaled to 8-bit")
        return Image.fromarray(a.astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        notes.append("palette image converted to RGB")
        if im.mode == "RGB":
            return im
    if mode in ("LA", "PA", "La", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        bg = Image.new("RGB", im.size, (255, 255, 255))
        bg.paste(im, mask=im.getchannel("A"))
        notes.append("transparency composited on white")
        return bg
    if mode == "CMYK":
        notes.append("CMYK converted to RGB")
    elif mode not in ("P",):
        notes.append(f"{mode} converted to RGB")
    return im.convert("RGB")

