"""Train toy trios with given DemoConfig settings and print the numbers that decide the demo's
claims (docs/demo.md "Design notes"): base and coder coding, grounding / coding / image -> code at
each lambda of the sweep (0 = coder-swapped, 1 = base VLM) per attribute, and the verdicts of the
zero-shot claims (toy.claims) when the sweep has 0, 1 and the demo's lambda.

    PYTHONPATH=. VISCODEX_CACHE=/tmp/toycache python benchmarks/toy_trio_experiment.py \
        --seeds 0 1 --set coder_lr=3e-4 --set vlm_steps=800

Seeds run one after another in this process (1 thread); run two processes for two seeds at once.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path


def parse_set(items: list[str]) -> dict:
    out = {}
    for it in items:
        k, v = it.split("=", 1)
        out[k] = json.loads(v) if not v.replace(".", "").isalpha() else v
    return out


def main() -> None:
    from viscodex.toy import demo as d
    from viscodex.toy.claims import decide, paper_claims
    from viscodex.toy.report import lam_dir, model_names

    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--set", action="append", default=[], help="DemoConfig field=json value")
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.5, 0.7, 0.85, 1.0])
    ap.add_argument("--json", help="append one JSON line per seed to this file")
    a = ap.parse_args()
    over = parse_set(a.set)
    for seed in a.seeds:
        demo = dataclasses.replace(d.FAST, seed=seed, lambdas=tuple(a.lambdas), **over)
        t = time.perf_counter()
        paths = d.cached_trio(demo)
        t_trio = time.perf_counter() - t
        with tempfile.TemporaryDirectory(prefix="toyexp-") as work:
            _, scores = d.merge_and_sweep(paths, demo, Path(work))
            coder = d.evaluate_variant(paths["coder"], demo, cache_dir=Path(work) / "coder")
            base = d.evaluate_variant(paths["base"], demo, cache_dir=Path(work) / "base")
        rec = json.loads((paths["base"].parent / "trio.json").read_text())
        losses = {k: (rec[k]["first_loss"], rec[k]["final_loss"]) for k in ("base", "coder", "vlm")}
        row = {"seed": seed, "set": over, "trio_s": round(t_trio), "losses": losses, "lam": {}}
        print(f"== seed {seed} {over}  trio {t_trio:.0f}s  losses {losses}")
        for name, s in (("coder", coder["coding"]), ("base", base["coding"])):
            row[name] = {k: s[k] for k in ("attr_acc", "size", "color", "shape")}
            print(f"   {name} coding {s['attr_acc']:.2f} (size {s['size']:.2f} colour {s['color']:.2f} shape {s['shape']:.2f})")
        for key, s in sorted(scores.items()):
            row["lam"][key] = {t: {k: s[t][k] for k in ("attr_acc", "size", "color", "shape", "valid", "per_sample")}
                               for t in s}
            cells = "  ".join(f"{t[:6]} {s[t]['attr_acc']:.2f} [{s[t]['size']:.2f} {s[t]['color']:.2f} {s[t]['shape']:.2f} v{s[t]['valid']:.2f}]"
                              for t in ("grounding", "coding", "image_code"))
            print(f"   {key:14s} {cells}")
        # the zero-shot claims on these scores: the swapped model is lambda 0, the VLM lambda 1 (the
        # same backbones, the same answers)
        if {"merged-lam0", "merged-lam1", lam_dir(demo.lam)} <= scores.keys():
            res = {"scores": {"vlm": scores["merged-lam1"], "swapped": scores["merged-lam0"], **scores}, "sft": {"scores": {}}}
            row["claims"] = [c for c in decide(res, paper_claims(lam_dir(demo.lam)), model_names(demo.lam))
                             if c["verdict"] != "not measured"]
            for c in row["claims"]:
                lo, hi = c["interval"]
                print(f"   {c['verdict']:13s} {c['difference']:+.2f} [{lo:+.2f}, {hi:+.2f}]  {c['claim']}")
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
