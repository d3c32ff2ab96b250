"""ChartMimic's low-level metrics (text, layout, chart type, colour F1), the parent half.

The generated and the ground-truth script run in the sandbox under the tracer (chart_trace_child.py,
on the programs chart_programs.py builds); the comparison is here, as the benchmark's evaluators
compute it:
  text    multiset match of the drawn strings (text_evaluator, use_position=False)
  layout  multiset match of the axes' gridspec geometry (layout_evaluator)
  type    sum over chart types of min(generated calls, reference calls) (chart_type_evaluator)
  colour  per chart type, the best one-to-one pairing of generated and reference colours, each pair
          worth max(0, 1 - CIEDE2000 / 100) as colormath 3.0.0 computes it (cie.py; names: 1 when equal);
          precision over the generated colours, recall over the reference's (color_evaluator,
          color_utils). More than 10 colours on one side are first thinned: a colour within
          similarity 0.7 of a kept one is dropped, in sorted order (the benchmark: set order).
F1 = 2PR / (P + R); an empty side gives 0. The low-level score is the mean of the four F1s.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from .. import sandbox
from . import cie
from .chart_programs import TICKS_OFF, combined_plan, text_program, with_ticks_hook

CHILD_SCRIPT = Path(__file__).with_name("chart_trace_child.py")
METRICS = ("text", "layout", "type", "color")
EVALUATORS = {"text": "texts", "type": "types", "color": "colors", "layout": "layout"}  # mode -> its part


def _run(program: str, mode: str, *, graph: bool, timeout: float, mem_mb: int) -> dict:
    job = json.dumps({"mode": mode, "graph": graph, "ticks_off": TICKS_OFF}).encode()
    r = sandbox.run_python(CHILD_SCRIPT.read_text(encoding="utf-8"), timeout=timeout, mem_mb=mem_mb,
                           files={"program.py": program.encode(), "job.json": job}, outputs=["trace.json"])
    if not r.ok:  # killed (time, memory) or no trace written: the sandbox's message
        return {"types": {}, "colors": [], "layout": [], "texts": [], "error": r.message, "caught": None,
                "diverged": None, "libraries": None, "killed": True}
    return json.loads(r.outputs["trace.json"])


def trace(program: str, *, graph: bool = False, timeout: float, mem_mb: int) -> dict:
    """The four evaluators' records of one program (chart_programs builds a model's; a ground
    truth runs as it is). One sandboxed run when that is exact, else one per evaluator, each with
    what that evaluator's run would see. `graph`: a `graph_*` sample (its layout counts axes only)."""
    together, at = combined_plan(program)
    if together:
        out = _run(with_ticks_hook(program, at), "all", graph=graph, timeout=timeout, mem_mb=mem_mb)
        if not out.get("diverged"):
            out["runs"] = 1
            return out
    parts = {}
    for mode in EVALUATORS:
        parts[mode] = _run(text_program(program) if mode == "text" else program, mode, graph=graph, timeout=timeout,
                           mem_mb=mem_mb)
        if parts[mode].get("killed"):  # the same program would be killed again: no evaluator gets a trace
            return {**parts[mode], "runs": len(parts)}
    out = {key: parts[mode][key] for mode, key in EVALUATORS.items()}
    out["error"] = next((p["error"] for p in parts.values() if p["error"]), None)
    out["caught"] = next((p["caught"] for p in parts.values() if p["caught"]), None)
    out["libraries"] = next((p["libraries"] for p in parts.values() if p["libraries"]), None)
    out["runs"] = len(parts)
    return out


def f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def multiset_f1(gen: list, ref: list) -> float:
    """text_evaluator / layout_evaluator: each reference item matches one equal generated item."""
    if not gen or not ref:
        return 0.0
    key = lambda x: json.dumps(x, sort_keys=True)
    hits = sum((Counter(map(key, gen)) & Counter(map(key, ref))).values())
    return f1(hits / len(gen), hits / len(ref))


def type_f1(gen: dict[str, int], ref: dict[str, int]) -> float:
    if not gen or not ref:
        return 0.0
    hits = sum(min(n, ref.get(t, 0)) for t, n in gen.items())
    return f1(hits / sum(gen.values()), hits / sum(ref.values()))


# ---------------------------------------------------------------- colours
def color_similarity(c1: str, c2: str) -> float:
    """color_utils.calculate_similarity_single: "#RRGGBB[AA]" colours by colormath's CIEDE2000
    (cie.py; the alpha digits are ignored), names by equality."""
    if c1.startswith("#") and c2.startswith("#"):
        return cie.color_similarity(*(tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in (c1, c2)))
    if not c1.startswith("#") and not c2.startswith("#"):
        return float(c1 == c2)
    return 0.0


def thin(colors: list[str]) -> list[str]:
    """color_utils.filter_color (applied above 10 colours): drop a colour within 0.7 of a kept one
    (the colour only: a type's prefix plays no part). `colors` come sorted; the benchmark walks a
    set, so where two colours are within 0.7 its kept list depends on the run's string hashes."""
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
    groups = lambda xs: {t: [c.split("--", 1)[1] for c in xs if c.split("--", 1)[0] == t]
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


__all__ = ["METRICS", "color_f1", "color_similarity", "low_level", "multiset_f1", "thin", "trace", "type_f1"]
