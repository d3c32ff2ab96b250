"""Design2Code's low-level visual metrics (metrics/visual_score.py + ocr_free_utils.py in
NoviScl/Design2Code at 4c213a3), reimplemented: Block-Match, Text, Position and Color, and the
blocks its CLIP score masks.

Text blocks are found without OCR, as the benchmark finds them: the page is rewritten so that every
element's background is transparent and every text element gets its own colour from a fixed pool
(d2c_html.recolor); it is rendered twice (pool shifted by 50 the second time); pixels whose colour
moved by 50 (±8 per channel) are text; a text node's block is the bounding box of the pixels of its
element's colour (±4, with the benchmark's uint8 wrap-around: a channel below 4 or above 251 finds
nothing) among those, and its colour the mean colour of those pixels in the page's normal rendering
(truncated to integers). Blocks with the same box are merged. Generated and reference blocks are
paired by the Hungarian method on text similarity (difflib), adjacent blocks merged while that
raises the matched similarity, pairs below 0.5 dropped; then
  Block-Match = matched blocks' area / all blocks' area; Text = mean text similarity of the pairs;
  Position = mean of 1 - the larger of the x and y shifts of the pair's centres (page-relative);
  Color = mean CIEDE2000 similarity of the pairs' text colours (cie.py: colormath's numbers).
Screenshots: 1280x720 viewport, the full page (no height cut), as metrics/screenshot_single.py
takes them; a page that cannot be rendered becomes a white 1280x960 image, as there.
"""
from __future__ import annotations

import difflib
import io
from collections import Counter
from typing import Callable

import numpy as np

from .cie import color_similarity
from .d2c_html import recolor, texts_with_color

MATCH_MIN = 0.5
SHIFT = 50  # the second pool's offset
Render = Callable[[str], bytes]  # HTML -> PNG (1280x720 viewport, full page)


# ---------------------------------------------------------------- blocks from renderings
def shoot(render: Render, doc: str) -> np.ndarray:
    """A screenshot as an HxWx3 int16 array; screenshot_single's white 1280x960 when rendering fails."""
    from PIL import Image
    from playwright.sync_api import Error as PageError

    try:
        png = render(doc)
    except PageError:  # the page failed (time-out, crash): the benchmark's blank page, scored like any other
        return np.full((960, 1280, 3), 255, dtype=np.int16)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def _hex_rgb(color: str) -> np.ndarray | None:
    try:
        return np.array([int(color.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4)], dtype=np.int16)
    except ValueError:  # e.g. "#fff": the benchmark skips it
        return None


def page_blocks(doc: str, render: Render) -> tuple[list[dict], np.ndarray]:
    """get_blocks_ocr_free on a page as given: its blocks [{'text', 'bbox': (x, y, w, h)
    page-relative, 'color': (r, g, b)}] (not yet merged by box) and its normal rendering."""
    plain = shoot(render, doc)
    marked = recolor(doc, 0)
    a, b = shoot(render, marked), shoot(render, recolor(doc, SHIFT))
    if a.shape != b.shape:
        return [], plain
    moved = (np.abs((a + SHIFT) % 256 - b) <= 8).all(axis=-1)
    if not moved.any():
        return [], plain
    h, w = moved.shape
    ys_all, xs_all = np.nonzero(moved)  # only these pixels can belong to a block
    marks = a[ys_all, xs_all]
    out = []
    for text, color in texts_with_color(marked):
        target = _hex_rgb(color)
        if target is None:
            continue
        lo, hi = (target - 4) % 256, (target + 4) % 256  # cv2.inRange on uint8 bounds that wrapped
        hit = ((marks >= lo) & (marks <= hi)).all(axis=-1)
        ys, xs = ys_all[hit], xs_all[hit]
        if not len(ys):
            continue
        if ys.max() >= plain.shape[0] or xs.max() >= plain.shape[1]:
            return [], plain  # the benchmark's average_color fails and it drops every block
        mean = tuple(int(v) for v in plain[ys, xs].mean(axis=0))
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
        out.append({"text": text.lower(), "bbox": (x0 / w, y0 / h, (x1 - x0 + 1) / w, (y1 - y0 + 1) / h), "color": mean})
    return out, plain


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


def block_scores(pred: list[dict], ref: list[dict]) -> tuple[dict[str, float], list[dict]]:
    """Block-Match, Text, Position, Color of two pages' blocks (the reference's already merged by
    box), and the generated page's blocks as the benchmark masks them for CLIP: after its merges,
    which the benchmark applies to that list in place. No block on either side or no pair: 0 each."""
    zero = {"block_match": 0.0, "text": 0.0, "position": 0.0, "color": 0.0}
    if not pred or not ref:
        return zero, pred
    A, B, pairs = possible_merge(merge_same_box(pred), [dict(b) for b in ref])
    kept = [(i, j, s) for i, j in pairs if (s := _sim(A[i]["text"], B[j]["text"])) >= MATCH_MIN]
    if not kept:
        return zero, A
    area = lambda blk: blk["bbox"][2] * blk["bbox"][3]  # noqa: E731
    used_a, used_b = {i for i, _, _ in kept}, {j for _, j, _ in kept}
    unmatched = sum(area(b) for k, b in enumerate(A) if k not in used_a) + sum(area(b) for k, b in enumerate(B) if k not in used_b)
    matched = [area(A[i]) + area(B[j]) for i, j, _ in kept]

    def centre(blk):
        x, y, w, h = blk["bbox"]
        return x + w / 2, y + h / 2

    pos = [1 - max(abs(centre(A[i])[0] - centre(B[j])[0]), abs(centre(A[i])[1] - centre(B[j])[1])) for i, j, _ in kept]
    col = [color_similarity(A[i]["color"], B[j]["color"]) for i, j, _ in kept]
    return {"block_match": float(sum(matched) / (sum(matched) + unmatched)),
            "text": float(np.mean([s for _, _, s in kept])), "position": float(np.mean(pos)),
            "color": float(np.mean(col))}, A


__all__ = ["page_blocks", "block_scores", "merge_same_box", "possible_merge", "shoot"]
