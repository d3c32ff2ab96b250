"""ChartMimic's low-level metrics (text, layout, chart type, colour F1), the parent half.

Both the generated and the ground-truth script run in the sandbox under the tracer
(chart_trace_child.py); the comparison is here. As the benchmark's evaluators compute them:
  text    multiset match of the drawn strings (text_evaluator, use_position=False)
  layout  multiset match of the axes' gridspec geometry (layout_evaluator)
  type    sum over chart types of min(generated calls, reference calls) (chart_type_evaluator)
  colour  per chart type, the best one-to-one pairing of generated and reference colours, each pair
          worth max(0, 1 - CIEDE2000 / 100) (names: 1 when equal); precision over the generated
          colours, recall over the reference's (color_evaluator, color_utils). More than 10 colours
          on one side are first thinned: a colour within similarity 0.7 of a kept one is dropped.
F1 = 2PR / (P + R); an empty side gives 0. The low-level score is the mean of the four F1s.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from .. import sandbox

CHILD_SCRIPT = Path(__file__).with_name("chart_trace_child.py")
METRICS = ("text", "layout", "type", "color")


def trace(code: str, *, timeout: float, mem_mb: int) -> dict:
    """The tracer's record of one script (empty lists and an `error` when it fails)."""
    r = sandbox.run_python(CHILD_SCRIPT.read_text(encoding="utf-8"), timeout=timeout, mem_mb=mem_mb,
                           files={"program.py": code.encode()}, outputs=["trace.json"])
    if not r.ok:
        return {"types": {}, "colors": [], "layout": [], "texts": [], "error": r.message}
    return json.loads(r.outputs["trace.json"])


def f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def multiset_f1(gen: list, ref: list) -> float:
    """text_evaluator / layout_evaluator: each reference item matches one equal generated item."""
    if not gen or not ref:
        return 0.0
    key = lambda x: json.dumps(x, sort_keys=True)  # noqa: E731 - layouts are dicts
    hits = sum((Counter(map(key, gen)) & Counter(map(key, ref))).values())
    return f1(hits / len(gen), hits / len(ref))


def type_f1(gen: dict[str, int], ref: dict[str, int]) -> float:
    if not gen or not ref:
        return 0.0
    hits = sum(min(n, ref.get(t, 0)) for t, n in gen.items())
    return f1(hits / sum(gen.values()), hits / sum(ref.values()))


# ---------------------------------------------------------------- colours
def hex_to_lab(hexcolor: str) -> tuple[float, float, float]:
    """sRGB (D65) -> CIE L*a*b*."""
    rgb = [int(hexcolor[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    x = (0.4124564 * lin[0] + 0.3575761 * lin[1] + 0.1804375 * lin[2]) / 0.95047
    y = 0.2126729 * lin[0] + 0.7151522 * lin[1] + 0.0721750 * lin[2]
    z = (0.0193339 * lin[0] + 0.1191920 * lin[1] + 0.9503041 * lin[2]) / 1.08883
    f = lambda t: t ** (1 / 3) if t > 216 / 24389 else (24389 / 27 * t + 16) / 116  # noqa: E731
    fx, fy, fz = f(x), f(y), f(z)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def ciede2000(lab1, lab2) -> float:
    """The CIEDE2000 colour difference (kL = kC = kH = 1)."""
    L1, a1, b1 = lab1
    L2, a2, b2 = lab2
    cbar = (math.hypot(a1, b1) + math.hypot(a2, b2)) / 2
    g = 0.5 * (1 - math.sqrt(cbar ** 7 / (cbar ** 7 + 25 ** 7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = math.hypot(a1p, b1), math.hypot(a2p, b2)
    h1p = math.degrees(math.atan2(b1, a1p)) % 360 if c1p else 0.0
    h2p = math.degrees(math.atan2(b2, a2p)) % 360 if c2p else 0.0
    dl, dc = L2 - L1, c2p - c1p
    dh = 0.0
    if c1p * c2p:
        dh = h2p - h1p
        dh = dh - 360 if dh > 180 else dh + 360 if dh < -180 else dh
    dH = 2 * math.sqrt(c1p * c2p) * math.sin(math.radians(dh / 2))
    lbar, cbarp = (L1 + L2) / 2, (c1p + c2p) / 2
    if not c1p * c2p:
        hbar = h1p + h2p
    elif abs(h1p - h2p) <= 180:
        hbar = (h1p + h2p) / 2
    else:
        hbar = (h1p + h2p + 360) / 2 if h1p + h2p < 360 else (h1p + h2p - 360) / 2
    t = (1 - 0.17 * math.cos(math.radians(hbar - 30)) + 0.24 * math.cos(math.radians(2 * hbar))
         + 0.32 * math.cos(math.radians(3 * hbar + 6)) - 0.20 * math.cos(math.radians(4 * hbar - 63)))
    sl = 1 + 0.015 * (lbar - 50) ** 2 / math.sqrt(20 + (lbar - 50) ** 2)
    sc, sh = 1 + 0.045 * cbarp, 1 + 0.015 * cbarp * t
    rt = (-2 * math.sqrt(cbarp ** 7 / (cbarp ** 7 + 25 ** 7))
          * math.sin(math.radians(60 * math.exp(-(((hbar - 275) / 25) ** 2)))))
    return math.sqrt((dl / sl) ** 2 + (dc / sc) ** 2 + (dH / sh) ** 2 + rt * (dc / sc) * (dH / sh))


def color_similarity(c1: str, c2: str) -> float:
    """color_utils.calculate_similarity_single: hex colours by CIEDE2000, names by equality."""
    if c1.startswith("#") and c2.startswith("#"):
        return max(0.0, 1 - ciede2000(hex_to_lab(c1), hex_to_lab(c2)) / 100)
    if not c1.startswith("#") and not c2.startswith("#"):
        return float(c1 == c2)
    return 0.0


def thin(colors: list[str]) -> list[str]:
    """color_utils.filter_color (applied above 10 colours): drop a colour within 0.7 of a kept one."""
    kept: list[str] = []
    for c in colors:
        if not kept or all(color_similarity(c.split("--", 1)[1], k.split("--", 1)[1]) <= 0.7 for k in kept):
            kept.append(c)
    return kept


def _best_pairing(a: list[str], b: list[str]) -> float:
    """The largest total similarity of a one-to-one pairing (what the benchmark's search over
    permutations finds; solved here as an assignment problem)."""
    if not a or not b:
        return 0.0
    from scipy.optimize import linear_sum_assignment

    cost = [[-color_similarity(x, y) for y in b] for x in a]
    rows, cols = linear_sum_assignment(cost)
    return -sum(cost[r][c] for r, c in zip(rows, cols))


def color_f1(gen: list[str], ref: list[str]) -> float:
    gen, ref = (thin(x) if len(x) > 10 else list(x) for x in (gen, ref))
    if not gen or not ref:
        return 0.0
    groups = lambda xs: {t: [c.split("--", 1)[1] for c in xs if c.split("--", 1)[0] == t]  # noqa: E731
                         for t in {c.split("--", 1)[0] for c in xs}}
    g, r = groups(gen), groups(ref)
    total = sum(_best_pairing(g.get(t, []), r.get(t, [])) for t in set(g) | set(r))
    return f1(total / len(gen), total / len(ref))


def low_level(gen: dict, ref: dict) -> dict[str, float]:
    """The four F1s and their mean (`low_level`) from two traces."""
    out = {"text": multiset_f1(gen["texts"], ref["texts"]), "layout": multiset_f1(gen["layout"], ref["layout"]),
           "type": type_f1(gen["types"], ref["types"]), "color": color_f1(gen["colors"], ref["colors"])}
    out = {k: round(v, 6) for k, v in out.items()}
    out["low_level"] = round(sum(out[k] for k in METRICS) / len(METRICS), 6)
    return out


__all__ = ["trace", "low_level", "multiset_f1", "type_f1", "color_f1", "color_similarity", "ciede2000", "METRICS"]
