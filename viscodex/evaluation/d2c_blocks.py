"""Design2Code's low-level visual metrics (metrics/visual_score.py + ocr_free_utils.py in
NoviScl/Design2Code), reimplemented: Block-Match, Text, Position and Color.

Text blocks are found without OCR, as the benchmark finds them: the page is rewritten so that every
element's background is transparent and every text element (p, h1-h6, div, span, a, b, li, table,
td, th, button, footer, header, figcaption) gets its own colour from a fixed pool; it is rendered
twice (pool shifted by 50 the second time); pixels whose colour moved by 50 are text; a text node's
block is the bounding box of the pixels of its element's colour among those, and its colour the
mean colour of those pixels in the page's normal rendering. Blocks with the same box are merged.
Generated and reference blocks are paired by the Hungarian method on text similarity (difflib),
adjacent blocks merged while that raises the matched similarity, pairs below 0.5 dropped; then
  Block-Match = matched blocks' area / all blocks' area; Text = mean text similarity of the pairs;
  Position = mean of 1 - the larger of the x and y shifts of the pair's centres (page-relative);
  Color = mean CIEDE2000 similarity of the pairs' text colours.
CLIP (the benchmark's fifth score) is not computed here. Pages render in viscodex's sandboxed
browser (design2code.HtmlRenderer: no JavaScript, no network) at 1280x720, full page, like the
benchmark's screenshot script.
"""
from __future__ import annotations

import difflib
import html
import html.parser
import io
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .chart_metrics import hex_to_lab, ciede2000

TEXT_TAGS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "div", "span", "a", "b", "li", "table", "td", "th", "button",
             "footer", "header", "figcaption"}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
RAW = {"script", "style"}
MATCH_MIN = 0.5


# ---------------------------------------------------------------- a small DOM (parse, restyle, serialise)
@dataclass
class Element:
    tag: str
    attrs: list = field(default_factory=list)
    children: list = field(default_factory=list)  # Element | str

    def style(self) -> str:
        return next((v or "" for k, v in self.attrs if k == "style"), "")

    def set_style(self, prop: str, value: str) -> None:
        """ocr_free_utils.update_style: drop declarations starting with `prop`, append `prop: value !important`."""
        kept = [s for s in self.style().split(";") if not s.strip().startswith(prop) and s.strip()]
        kept.append(f"{prop}: {value} !important")
        self.attrs = [(k, v) for k, v in self.attrs if k != "style"] + [("style", "; ".join(kept).strip())]


class _Builder(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Element("[document]")
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        el = Element(tag, list(attrs))
        self.stack[-1].children.append(el)
        if tag not in VOID:
            self.stack.append(el)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Element(tag, list(attrs)))

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)

    def handle_decl(self, decl):
        self.root.children.insert(0, Element("!" + decl))


def parse(doc: str) -> Element:
    b = _Builder()
    b.feed(doc)
    b.close()
    return b.root


def serialize(node, raw: bool = False) -> str:
    if isinstance(node, str):
        return node if raw else html.escape(node, quote=False)
    if node.tag.startswith("!"):
        return f"<{node.tag}>"
    inner = "".join(serialize(c, raw=node.tag in RAW) for c in node.children)
    if node.tag == "[document]":
        return inner
    attrs = "".join(f' {k}="{html.escape(v, quote=True)}"' if v is not None else f" {k}" for k, v in node.attrs)
    return f"<{node.tag}{attrs}>" if node.tag in VOID else f"<{node.tag}{attrs}>{inner}</{node.tag}>"


def elements(node: Element):
    for c in node.children:
        if isinstance(c, Element) and not c.tag.startswith("!"):
            yield c
            yield from elements(c)


def color_pool(offset: int) -> list[str]:
    """ocr_free_utils.ColorPool: 16 levels per channel from 10 by 16, shifted by offset; popped from the end."""
    levels = range(10, 251, 16)
    return ["#%02X%02X%02X" % ((r + offset) % 256, (g + offset) % 256, (b + offset) % 256)
            for r in levels for g in levels for b in levels]


def recolor(doc: str, offset: int) -> Element:
    root = parse(doc)
    pool = color_pool(offset)
    for el in elements(root):
        el.set_style("background-color", "rgba(255, 255, 255, 0.0)")
    for el in elements(root):
        if el.tag in TEXT_TAGS:
            el.set_style("color", pool.pop())
            el.set_style("opacity", "1.0")
    return root


def _css_color(el: Element) -> str | None:
    decl = [s for s in el.style().split(";") if "color" in s and "background-color" not in s]
    if not decl:
        return None
    value = decl[-1].split(":", 1)[1].strip().replace(" !important", "") if ":" in decl[-1] else ""
    if value.startswith("#"):
        return value
    try:
        from PIL import ImageColor

        rgb = tuple(map(int, value[4:-1].split(","))) if value.startswith("rgb") else ImageColor.getrgb(value)[:3]
        return "#%02x%02x%02x" % rgb[:3]
    except (ValueError, TypeError):
        return None


def texts_with_color(root: Element) -> list[tuple[str, str]]:
    """extract_text_with_color: every non-empty stripped text node of <body>, with the colour of its
    nearest element that sets one (black by default)."""
    body = next((e for e in elements(root) if e.tag == "body"), None)
    out: list[tuple[str, str]] = []

    def walk(node: Element, color: str):
        color = _css_color(node) or color
        for c in node.children:
            if isinstance(c, str):
                if c.strip():
                    out.append((c.strip(), color))
            elif not c.tag.startswith("!"):
                walk(c, color)

    if body is not None:
        walk(body, "#000000")
    return out


# ---------------------------------------------------------------- blocks from two renderings
def _rgb(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int64)


def as_page(doc: str) -> str:
    """visual_score.make_html: an answer without an <html> tag is wrapped as one paragraph."""
    return doc if re.search(r"<html[^>]*>", doc, re.I) else f"<html><body><p>{doc}</p></body></html>"


def blocks_of(doc: str, render) -> list[dict]:
    """get_blocks_ocr_free: [{'text', 'bbox': (x, y, w, h) page-relative, 'color': (r, g, b)}]."""
    return page_blocks(doc, render)[0]


def page_blocks(doc: str, render) -> tuple[list[dict], np.ndarray]:
    """The page's blocks and its normal rendering (HxWx3)."""
    doc = as_page(doc)
    plain, p0 = _rgb(render(doc)), recolor(doc, 0)
    a, b = _rgb(render(serialize(p0))), _rgb(render(serialize(recolor(doc, 50))))
    if a.shape != b.shape or plain.shape != a.shape:
        return [], plain
    moved = (np.abs((a + 50) % 256 - b) <= 8).all(axis=-1)
    if not moved.any():
        return [], plain
    h, w = moved.shape
    out = []
    for text, color in texts_with_color(p0):
        try:
            target = np.array([int(color.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4)])
        except ValueError:
            continue
        ys, xs = np.nonzero((np.abs(a - target) <= 4).all(axis=-1) & moved)
        if not len(ys):
            continue
        mean = tuple(int(v) for v in plain[ys, xs].mean(axis=0))
        out.append({"text": text.lower(), "bbox": (xs.min() / w, ys.min() / h, (xs.max() - xs.min() + 1) / w,
                                                   (ys.max() - ys.min() + 1) / h), "color": mean})
    return merge_same_box(out), plain


def merge_same_box(blocks: list[dict]) -> list[dict]:
    """merge_blocks_by_bbox: blocks with the same box become one (texts joined, colours averaged)."""
    merged: dict[tuple, dict] = {}
    for blk in blocks:
        key = tuple(blk["bbox"])
        if key in merged:
            m = merged[key]
            m["text"] += " " + blk["text"]
            m["color"] = tuple((x + y) / 2 for x, y in zip(m["color"], blk["color"]))
        else:
            merged[key] = dict(blk)
    return list(merged.values())


# ---------------------------------------------------------------- matching
def _sim(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()


def _cost(A: list[dict], B: list[dict], bonus: float, window: int) -> np.ndarray:
    cost = np.array([[-_sim(x["text"], y["text"]) for y in B] for x in A], dtype=np.float64).reshape(len(A), len(B))
    if window <= 0:
        return cost
    adjusted = cost.copy()
    n, m = cost.shape
    for i in range(n):  # adjust_cost_for_context: a strong pair gains from strong neighbours
        for j in range(m):
            if cost[i, j] >= -0.5:
                continue
            near = np.sort(cost[max(0, i - window):i + window + 1, max(0, j - window):j + window + 1].ravel())[::-1]
            near = np.delete(near, np.where(near == cost[i, j])[0][0])
            adjusted[i, j] += bonus * near[-window * 2:].sum()
    return adjusted


def _match(A, B, bonus, window):
    from scipy.optimize import linear_sum_assignment

    cost = _cost(A, B, bonus, window)
    rows, cols = linear_sum_assignment(cost)
    return list(zip(rows.tolist(), cols.tolist())), cost[rows, cols].tolist()


def _merge_two(x: dict, y: dict) -> dict:
    x0, y0 = min(x["bbox"][0], y["bbox"][0]), min(x["bbox"][1], y["bbox"][1])
    x1 = max(x["bbox"][0] + x["bbox"][2], y["bbox"][0] + y["bbox"][2])
    y1 = max(x["bbox"][1] + x["bbox"][3], y["bbox"][1] + y["bbox"][3])
    return {"text": x["text"] + " " + y["text"], "bbox": (x0, y0, x1 - x0, y1 - y0),
            "color": tuple((a + b) // 2 for a, b in zip(x["color"], y["color"]))}


def _gain(before: list[float], after: list[float]) -> float:
    """difference_of_means over the costs the two matchings do not share."""
    ca, cb = Counter(before), Counter(after)
    for v in set(before) & set(after):
        k = min(ca[v], cb[v])
        ca[v] -= k
        cb[v] -= k
    ua, ub = list(ca.elements()), list(cb.elements())
    ma, mb = (sum(ua) / len(ua) if ua else 0), (sum(ub) / len(ub) if ub else 0)
    if ma - mb > 0:
        return ma - mb if min(ua) > min(ub) else 0.0
    return ma - mb


def _merge_listed(blocks: list[dict], merges: list) -> list[dict]:
    gone = []
    while merges:
        i, j = merges[0][0], merges[0][1]
        blocks[i] = _merge_two(blocks[i], blocks[j])
        gone.append(j)
        merges = [m for m in merges[1:] if i not in m[:2] and j not in m[:2]]
    return [b for k, b in enumerate(blocks) if k not in set(gone)]


def _merge_side(side: list[dict], other: list[dict], current: list[float], a_side: bool) -> list[dict] | None:
    merges = []
    for i in range(len(side) - 1):
        trial = side[:i] + [_merge_two(side[i], side[i + 1])] + side[i + 2:]
        _, cost = _match(trial, other, 0.0, 1) if a_side else _match(other, trial, 0.0, 1)
        diff = _gain(current, cost)
        if diff > 0.05:
            merges.append([i, i + 1, diff])
    if not merges:
        return None
    merges.sort(key=lambda m: m[2], reverse=True)
    return _merge_listed(list(side), merges)


def possible_merge(A: list[dict], B: list[dict]) -> tuple[list[dict], list[dict], list]:
    """find_possible_merge: merge neighbouring blocks of either side while it improves the matching."""
    while True:
        _, current = _match(A, B, 0.0, 1)
        changed = False
        if len(A) >= 2:
            new = _merge_side(A, B, current, True)
            if new is not None:
                A, changed = new, True
                _, current = _match(A, B, 0.0, 1)
        if len(B) >= 2:
            new = _merge_side(B, A, current, False)
            if new is not None:
                B, changed = new, True
        if not changed:
            break
    pairs, _ = _match(A, B, 0.1, 1)
    return A, B, pairs


def block_scores(pred: list[dict], ref: list[dict]) -> dict[str, float]:
    """Block-Match, Text, Position, Color (0 each when either page has no block or nothing pairs)."""
    zero = {"block_match": 0.0, "text": 0.0, "position": 0.0, "color": 0.0}
    if not pred or not ref:
        return zero
    A, B, pairs = possible_merge(merge_same_box(pred), [dict(b) for b in ref])
    kept = [(i, j, s) for i, j in pairs if (s := _sim(A[i]["text"], B[j]["text"])) >= MATCH_MIN]
    if not kept:
        return zero
    area = lambda blk: blk["bbox"][2] * blk["bbox"][3]  # noqa: E731
    used_a, used_b = {i for i, _, _ in kept}, {j for _, j, _ in kept}
    unmatched = sum(area(b) for k, b in enumerate(A) if k not in used_a) + sum(area(b) for k, b in enumerate(B) if k not in used_b)
    matched = [area(A[i]) + area(B[j]) for i, j, _ in kept]

    def centre(blk):
        x, y, w, h = blk["bbox"]
        return x + w / 2, y + h / 2

    pos = [1 - max(abs(centre(A[i])[0] - centre(B[j])[0]), abs(centre(A[i])[1] - centre(B[j])[1])) for i, j, _ in kept]
    hexc = lambda c: "#%02X%02X%02X" % tuple(int(v) for v in c)  # noqa: E731
    col = [max(0.0, 1 - ciede2000(hex_to_lab(hexc(A[i]["color"])), hex_to_lab(hexc(B[j]["color"]))) / 100) for i, j, _ in kept]
    return {"block_match": float(sum(matched) / (sum(matched) + unmatched)),
            "text": float(np.mean([s for _, _, s in kept])), "position": float(np.mean(pos)), "color": float(np.mean(col))}


# ---------------------------------------------------------------- CLIP
def masked_square(shot: np.ndarray, blocks: list[dict]):
    """rescale_and_mask: the text boxes painted over, then the page squeezed to a square of its
    shorter side. The benchmark inpaints the boxes (OpenCV, Telea); viscodex fills each with the
    median colour of the pixels just around it."""
    from PIL import Image

    img = shot.astype(np.uint8).copy()
    h, w = img.shape[:2]
    for blk in blocks:
        x, y = int(blk["bbox"][0] * w), int(blk["bbox"][1] * h)
        x1, y1 = x + int(blk["bbox"][2] * w), y + int(blk["bbox"][3] * h)
        ring = np.concatenate([img[max(0, y - 1), x:x1], img[min(h - 1, y1), x:x1],
                               img[y:y1, max(0, x - 1)], img[y:y1, min(w - 1, x1)]]).reshape(-1, 3)
        if len(ring):
            img[y:y1, x:x1] = np.median(ring, axis=0).astype(np.uint8)
    side = min(w, h)
    return Image.fromarray(img).resize((side, side), Image.LANCZOS)


class ClipScore:
    """Cosine similarity of CLIP image embeddings (the benchmark: ViT-B/32) of two masked pages,
    with a CLIP checkpoint the user gives (a folder or Hub id loadable by transformers)."""

    def __init__(self, checkpoint: str):
        from ..errors import EvalError

        try:
            from transformers import CLIPImageProcessor, CLIPModel

            self.model = CLIPModel.from_pretrained(checkpoint).eval()
            self.processor = CLIPImageProcessor.from_pretrained(checkpoint)
        except (OSError, ValueError) as e:
            raise EvalError(f"--clip-model {checkpoint}: not a CLIP checkpoint transformers can load "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); e.g. openai/clip-vit-base-patch32") from None

    def __call__(self, shot_a: np.ndarray, blocks_a: list[dict], shot_b: np.ndarray, blocks_b: list[dict]) -> float:
        import torch

        pix = self.processor(images=[masked_square(shot_a, blocks_a), masked_square(shot_b, blocks_b)],
                             return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            out = self.model.get_image_features(pixel_values=pix)
        feats = getattr(out, "pooler_output", out)
        feats = feats / feats.norm(dim=-1, keepdim=True)
        return float((feats[0] * feats[1]).sum())


__all__ = ["ClipScore", "masked_square", "page_blocks", "as_page", "blocks_of", "block_scores", "recolor", "texts_with_color", "serialize", "parse", "merge_same_box"]
