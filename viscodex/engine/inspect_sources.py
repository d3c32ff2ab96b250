"""`viscodex inspect`: what each source is, and whether a (vlm, coder, base) trio can be merged."""
from __future__ import annotations

import json
from collections import Counter

from . import arch
from .._util.sizes import human_size
from ..errors import CompatibilityError, SourceError
from .plan import build_plan
from .recipe import Recipe
from .sources import Source, open_source


def describe(src: Source) -> dict:
    tc = src.text_config
    dtypes = Counter(t.dtype for t in src.tensors.values())
    roles = Counter((arch.role_of(k).role if arch.role_of(k) else "unknown") for k in src.tensors)
    return {
        "source": src.name,
        "revision": src.revision,
        "architecture": (src.config.get("architectures") or ["?"])[0],
        "model_type": src.model_type,
        "kind": "vlm" if src.is_vlm else ("llm" if src.model_type in arch.LLM_MODEL_TYPES else "unsupported"),
        "layout": src.layout,
        "backbone": {f: tc.get(f) for f in ("num_hidden_layers", "hidden_size", "intermediate_size",
                                              "num_attention_heads", "num_key_value_heads", "vocab_size")},
        "tied_embeddings": src.tied,
        "dtype": dict(dtypes),
        "tensors": len(src.tensors),
        "tensors_by_role": dict(roles),
        "bytes": src.total_bytes(),
        "files": len(src.weight_files()),
    }


def inspect_sources(specs: list[str], as_json: bool = False) -> str:
    if not specs:
        raise SourceError("give at least one source")
    srcs = [open_source(s, "source", weights=False) for s in specs]
    info = [describe(s) for s in srcs]
    compat = None
    if len(srcs) in (2, 3):
        roles = dict(zip(("vlm", "coder", "base"), srcs))
        try:
            recipe = Recipe(vlm=specs[0], coder=specs[1], base=specs[2] if len(specs) > 2 else None)
            plan = build_plan(recipe, roles)
            compat = {"compatible": True, "tensors": len(plan.items), "notes": plan.notes,
                      "merged_tensors": sum(1 for i in plan.items if i.policy == "merge"),
                      "copied_from_vlm": sum(1 for i in plan.items if i.policy == "vlm")}
        except CompatibilityError as e:
            compat = {"compatible": False, "problems": e.problems}
    if as_json:
        return json.dumps({"sources": info, "trio": compat}, indent=2)
    lines = []
    for d in info:
        b = d["backbone"]
        lines.append(f"{d['source']}" + (f"@{d['revision'][:12]}" if d["revision"] else ""))
        lines.append(f"  architecture  {d['architecture']} ({d['model_type']}, {d['kind']})")
        lines.append(f"  backbone      {b['num_hidden_layers']} layers, hidden {b['hidden_size']}, mlp {b['intermediate_size']}, "
                     f"heads {b['num_attention_heads']}/{b['num_key_value_heads']} kv, vocab {b['vocab_size']}"
                     + (", tied embeddings" if d["tied_embeddings"] else ""))
        lines.append(f"  key layout    {d['layout']}")
        lines.append(f"  dtype         {', '.join(f'{k} x{v}' for k, v in d['dtype'].items())}")
        lines.append(f"  size          {human_size(d['bytes'])} in {d['files']} file(s), {d['tensors']} tensors "
                     f"({', '.join(f'{k} {v}' for k, v in d['tensors_by_role'].items())})")
    if compat is not None:
        if compat["compatible"]:
            lines.append(f"trio: compatible - {compat['merged_tensors']} tensors merged, {compat['copied_from_vlm']} copied from the vlm")
            lines += [f"  note: {n}" for n in compat["notes"]]
        else:
            lines.append("trio: NOT compatible")
            lines += [f"  - {p}" for p in compat["problems"]]
    return "\n".join(lines)
