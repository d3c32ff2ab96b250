"""Is viscodex's CUDA merge the same as its CPU merge? (issue 20: the engine's CUDA path had never run)

Builds a synthetic trio in the real Qwen2.5-VL layout and shapes (benchmarks/merge_bench.py), merges
it with `viscodex merge --device cpu` and `--device cuda` (same recipe), and compares every tensor
of the two outputs: how many differ, the largest absolute difference, and in how many bf16 ulps.
Copied tensors (vision tower, projector, vision-token rows) must be byte-identical on both.

    python benchmarks/gpu/parity.py --shape 7b --layers 2      # on the GPU machine
    python benchmarks/gpu/parity.py --shape tiny --layers 2 --devices cpu,cpu   # smoke test
"""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from merge_bench import build_inputs  # noqa: E402


def tensors(folder: Path, stack: contextlib.ExitStack) -> dict:
    """Tensor name -> the open shard holding it (each shard opened once)."""
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        h = stack.enter_context(safe_open(str(f), "pt"))
        out.update({k: h for k in h.keys()})
    return out


def compare(a: Path, b: Path) -> dict:
    with contextlib.ExitStack() as stack:
        return _compare(tensors(a, stack), tensors(b, stack))


def _compare(ta: dict, tb: dict) -> dict:
    if ta.keys() != tb.keys():
        return {"same_names": False, "only_a": sorted(set(ta) - set(tb))[:5], "only_b": sorted(set(tb) - set(ta))[:5]}
    differ, max_abs, max_ulp, elems_differ, total = [], 0.0, 0, 0, 0
    for k in sorted(ta):
        x, y = ta[k].get_tensor(k), tb[k].get_tensor(k)
        total += x.numel()
        if torch.equal(x.view(torch.uint8) if x.dtype == torch.bfloat16 else x,
                       y.view(torch.uint8) if y.dtype == torch.bfloat16 else y):
            continue
        differ.append(k)
        ne = x != y
        elems_differ += int(ne.sum())
        max_abs = max(max_abs, float((x.float() - y.float()).abs().max()))
        if x.dtype == torch.bfloat16:  # ulps: distance between the bit patterns (same sign)
            ulp = (x.view(torch.int16).int() - y.view(torch.int16).int()).abs().max()
            max_ulp = max(max_ulp, int(ulp))
    return {"same_names": True, "tensors": len(ta), "tensors_differing": len(differ), "examples": differ[:8],
            "elements": total, "elements_differing": elems_differ, "max_abs_diff": max_abs, "max_bf16_ulps": max_ulp}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="7b")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--devices", default="cpu,cuda")
    ap.add_argument("--lam", type=float, default=0.7)
    ap.add_argument("--methods", default="task_arithmetic,ties,dare",
                    help="each merged on every device (dare: the same seed must give the same drop mask)")
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/vx-parity"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    paths = build_inputs(args.scratch, args.shape, args.layers)
    results = []
    for method in args.methods.split(","):
        outs, secs = [], {}
        for i, dev in enumerate(args.devices.split(",")):
            out = args.scratch / f"out-{method}-{i}-{dev}"
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "viscodex", "merge", "--vlm", str(paths["vlm"]), "--coder",
                            str(paths["coder"]), "--base", str(paths["base"]), "--lam", str(args.lam), "--method",
                            method, "--device", dev, "--out", str(out), "--force"], check=True)
            secs[f"{i}-{dev}"] = round(time.perf_counter() - t, 1)
            outs.append(out)
        res = {"shape": args.shape, "layers": args.layers, "method": method, "lam": args.lam,
               "devices": args.devices, "seconds": secs, **compare(*outs)}
        print(json.dumps(res), flush=True)
        results.append(res)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        for o in outs:
            subprocess.run(["rm", "-rf", str(o)], check=False)


if __name__ == "__main__":
    main()
