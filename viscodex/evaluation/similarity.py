"""Visual similarity of a rendered image to a reference, in [0, 1], with numpy and PIL only.

Charts and web pages are mostly background, so a plain pixel or SSIM score rates an empty canvas
highly. Every component here therefore looks at the *ink*: pixels that differ from the image's own
background colour (its most common colour).

  layout     weighted Jaccard of the two ink maps, area-averaged on a 32x32 grid (where things are)
  color      intersection of the ink pixels' colour histograms, 4 levels per channel (which colours)
  structure  mean SSIM of 8x8 blocks of the grey images at 128x128, over blocks holding ink (shapes, text)
  aspect     min/max of the two width/height ratios (a squashed chart is a different chart)

  visual = aspect * (layout + color + structure) / 3

Identical images score 1; an empty canvas scores 0 against any image with ink.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

SIZE = 128  # side the images are resized to for `structure`
GRID = 32  # side of the layout grid
BLOCK = 8  # SSIM block side
INK_THRESHOLD = 24  # max channel difference from the background that still counts as background
LEVELS = 4  # histogram levels per channel


def to_rgb(img) -> Image.Image:
    """PIL image from PIL / PNG bytes / path, flattened onto white."""
    if isinstance(img, (bytes, bytearray)):
        img = Image.open(io.BytesIO(img))
    elif not isinstance(img, Image.Image):
        img = Image.open(img)
    img.load()
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img)
    return img.convert("RGB")


def background(a: np.ndarray) -> np.ndarray:
    """The most common colour of an HxWx3 uint8 array."""
    flat = a.reshape(-1, 3).astype(np.int64)
    codes = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
    vals, counts = np.unique(codes, return_counts=True)
    c = int(vals[counts.argmax()])
    return np.array([(c >> 16) & 255, (c >> 8) & 255, c & 255], dtype=np.int64)


def ink_mask(a: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int64) - background(a)).max(axis=-1) > INK_THRESHOLD


def _layout(ma: np.ndarray, mb: np.ndarray) -> float:
    ga = np.asarray(Image.fromarray((ma * 255).astype(np.uint8)).resize((GRID, GRID), Image.BOX), dtype=np.float64)
    gb = np.asarray(Image.fromarray((mb * 255).astype(np.uint8)).resize((GRID, GRID), Image.BOX), dtype=np.float64)
    hi = np.maximum(ga, gb).sum()
    return 1.0 if hi == 0 else float(np.minimum(ga, gb).sum() / hi)


def _color(a: np.ndarray, ma: np.ndarray, b: np.ndarray, mb: np.ndarray) -> float:
    def hist(x, m):
        q = (x[m].astype(np.int64) * LEVELS) // 256
        h = np.bincount(q[:, 0] * LEVELS * LEVELS + q[:, 1] * LEVELS + q[:, 2], minlength=LEVELS ** 3).astype(np.float64)
        return h / h.sum() if h.sum() else h

    if not ma.any() and not mb.any():
        return 1.0
    if not ma.any() or not mb.any():
        return 0.0
    return float(np.minimum(hist(a, ma), hist(b, mb)).sum())


def _structure(a_img: Image.Image, b_img: Image.Image, ma: np.ndarray, mb: np.ndarray) -> float:
    ga = np.asarray(a_img.convert("L").resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float64)
    gb = np.asarray(b_img.convert("L").resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float64)
    n = SIZE // BLOCK
    blocks = lambda g: g.reshape(n, BLOCK, n, BLOCK).transpose(0, 2, 1, 3).reshape(n, n, -1)  # noqa: E731
    xa, xb = blocks(ga), blocks(gb)
    mu_a, mu_b = xa.mean(-1), xb.mean(-1)
    va, vb = xa.var(-1), xb.var(-1)
    cov = ((xa - mu_a[..., None]) * (xb - mu_b[..., None])).mean(-1)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2))
    ink = lambda m: np.asarray(Image.fromarray((m * 255).astype(np.uint8)).resize((n, n), Image.BOX)) > 0  # noqa: E731
    where = ink(ma) | ink(mb)
    if not where.any():
        return 1.0
    return float(np.clip(ssim[where], 0.0, 1.0).mean())


def image_similarity(candidate, reference) -> dict[str, float]:
    """Components and `visual` (see module docstring) of `candidate` against `reference`."""
    ci, ri = to_rgb(candidate), to_rgb(reference)
    ra, ca = ri.width / ri.height, ci.width / ci.height
    aspect = min(ra, ca) / max(ra, ca)
    # compare at the reference's size (capped) so masks line up
    w, h = ri.size
    scale = min(1.0, 512 / max(w, h))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    a = np.asarray(ci.resize(size, Image.BILINEAR))
    b = np.asarray(ri.resize(size, Image.BILINEAR))
    ma, mb = ink_mask(a), ink_mask(b)
    layout = _layout(ma, mb)
    color = _color(a, ma, b, mb)
    # ink on one side only: nothing of the reference was drawn (or only noise): no floor from SSIM's constants
    structure = _structure(Image.fromarray(a), Image.fromarray(b), ma, mb) if ma.any() == mb.any() else 0.0
    visual = aspect * (layout + color + structure) / 3
    return {"visual": round(visual, 6), "layout": round(layout, 6), "color": round(color, 6),
            "structure": round(structure, 6), "aspect": round(aspect, 6)}


__all__ = ["image_similarity", "to_rgb", "ink_mask"]
