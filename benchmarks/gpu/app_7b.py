"""The comparison app's model side at real shape (issue 20): three 7B-shape Qwen2.5-VL variants loaded
the way the app loads them (viscodex's load_variants: one shared vision tower), then per variant the
time to first token and decode tokens/s of the app's streaming path (VariantSet.stream: one shared
vision pass, three generations at once) against a bare `model.generate` of each variant alone, the
peak CUDA memory against the ZeroGPU slice the app would request, and the app's own GPU-time estimate
against the measured time.

The three variants are one random-weight checkpoint saved once and loaded three times (speed and
memory do not depend on the values; the app's vision sharing is checked, not assumed, and finds the
towers identical). Answers are random tokens, so every generation runs to --max-new-tokens.

    python benchmarks/gpu/app_7b.py --shape 7b --json out.json      # on the GPU
    python benchmarks/gpu/app_7b.py --shape tiny --device cpu       # smoke test (tests run it)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import models  # noqa: E402


def save_checkpoint(shape: str, layers: int | None, folder: Path, device: str) -> float:
    import torch

    proc = models.processor(448)
    t0 = time.perf_counter()
    model = models.build_model(shape, layers, proc, device)
    model.generation_config.eos_token_id = None  # random weights: decode to the token limit every time
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="7b", choices=sorted(models.SHAPES))
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/vx-app7b"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    import torch
    from PIL import Image

    from app_bench import bench_bare, bench_stream  # benchmarks/app_bench.py: the CPU app benchmark's paths
    from viscodex._util.zerogpu import XLARGE_THRESHOLD_GIB, gpu_duration, zerogpu_size
    from viscodex.app.sources import VARIANTS
    from viscodex.app.tasks import TASKS
    from viscodex.app.variants import load_variants

    cuda = args.device.startswith("cuda")
    folder = args.work / f"vlm-{args.shape}"
    save_s = save_checkpoint(args.shape, args.layers, folder, args.device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    vs = load_variants({n: str(folder) for n in VARIANTS}, device=args.device, dtype="bfloat16")
    load_s = time.perf_counter() - t0
    fp = vs.footprint()
    resident = torch.cuda.memory_allocated() if cuda else None
    print(fp.report(), flush=True)
    image = Image.new("RGB", (448, 448), (30, 120, 200))
    instruction = TASKS["HTML page"].instruction
    bench_bare(vs, image, instruction, 4)  # warm-up (kernels, allocator)
    bench_stream(vs, image, instruction, 4)
    runs = {"bare": [], "stream": []}
    for _ in range(args.repeats):
        runs["bare"].append(bench_bare(vs, image, instruction, args.max_new_tokens))
        runs["stream"].append(bench_stream(vs, image, instruction, args.max_new_tokens))
    peak = torch.cuda.max_memory_allocated() if cuda else None
    lam = bench_live_lambda(vs, folder)

    def med(path, n, i):
        return statistics.median(r[n][i] for r in runs[path])

    rows = []
    for n in vs.names:
        rows.append({"variant": n, **{f"{p}_{k}": round(med(p, n, i), 4) for p in runs
                                      for k, i in (("ttft_s", 0), ("tok_s", 1), ("tokens", 2))}})
    walls = {"bare": statistics.median(sum(r[n][4] for n in vs.names) for r in runs["bare"]),
             "stream": statistics.median(r[vs.names[0]][4] for r in runs["stream"])}
    slice_name = zerogpu_size(fp.total)
    est = gpu_duration(args.max_new_tokens, 448 * 448)
    res = {
        "device": torch.cuda.get_device_name() if cuda else "cpu", "shape": args.shape,
        "layers": vs.leader(0).model.config.text_config.num_hidden_layers,
        "save_checkpoint_s": round(save_s, 1), "load_variants_s": round(load_s, 1),
        "footprint_total_bytes": fp.total, "footprint_shared_bytes": fp.shared, "vision_groups": fp.groups,
        "cuda_resident_bytes": resident, "cuda_peak_bytes": peak,
        "zerogpu_slice": slice_name, "zerogpu_xlarge_threshold_bytes": int(XLARGE_THRESHOLD_GIB * 2**30),
        "max_new_tokens": args.max_new_tokens, "repeats": args.repeats, "per_variant": rows,
        "wall_bare_sequential_s": round(walls["bare"], 3), "wall_stream_s": round(walls["stream"], 3),
        "gpu_duration_estimate_s": est, **lam,
    }
    print(json.dumps(res, indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    gb = lambda b: "-" if b is None else f"{b / 2**30:.1f} GiB"  # noqa: E731
    print(f"\napp at {args.shape} shape on {res['device']}: load {load_s:.0f} s, weights {gb(fp.total)} "
          f"(vision shared: {gb(fp.shared)}), CUDA peak {gb(peak)}; ZeroGPU slice requested: {slice_name}")
    print(f"{'variant':10s} {'bare TTFT':>9s} {'stream TTFT':>11s} {'bare tok/s':>10s} {'stream tok/s':>12s}")
    for r in rows:
        print(f"{r['variant']:10s} {r['bare_ttft_s']:>9.3f} {r['stream_ttft_s']:>11.3f} {r['bare_tok_s']:>10.1f} "
              f"{r['stream_tok_s']:>12.1f}")
    print(f"all three answers: bare one after another {walls['bare']:.2f} s, app stream {walls['stream']:.2f} s "
          f"(x{walls['stream'] / walls['bare']:.2f}); the app's ZeroGPU duration estimate {est} s")
    print(f"live λ recompute (VariantSet.set_lambda): median {lam['lambda_recompute_s'] * 1e3:.1f} ms, "
          f"{gb(lam['lambda_traffic_bytes'])} read + written, extra memory {gb(lam['lambda_peak_extra_bytes'])}")


def bench_live_lambda(vs, folder: Path, repeats: int = 5) -> dict:
    """The merged column's live λ at this shape: the app's recompute (VariantSet.set_lambda) of
    every backbone tensor from the two resident backbones. The variants here are one checkpoint,
    so lerp(x, x, λ) = x and the load-time bitwise check passes; the work is the same as with
    real sources. The recipe is the one `viscodex merge` writes for task arithmetic."""
    from viscodex.app.live_lambda import live_lambda
    from viscodex.engine import arch
    from viscodex.engine.recipe import Recipe

    cfg = vs.variants["merged"].model.config
    vision_rows = sorted({getattr(cfg, f) for f in arch.VISION_TOKEN_ID_FIELDS if isinstance(getattr(cfg, f, None), int)})
    recipe = Recipe(vlm=str(folder), coder=str(folder), lam=0.7,
                    records={"policy_used": {"shared_vocab_rows": cfg.get_text_config().vocab_size,
                                             "vision_token_rows_from_vlm": vision_rows}})
    vs.live = live_lambda(vs.variants, recipe=recipe)
    if not vs.live.enabled:
        raise SystemExit(f"live λ is off: {vs.live.reason}")
    times = [vs.set_lambda(x) for x in [0.3, 0.9] * repeats]
    last = vs.live.last
    return {"lambda_recompute_s": round(statistics.median(times), 5), "lambda_recompute_all_s": [round(t, 5) for t in times],
            "lambda_tensors": len(vs.live.targets), "lambda_traffic_bytes": last.traffic_bytes,
            "lambda_peak_extra_bytes": last.peak_extra_bytes, "lambda_peak_measured": last.measured_peak}


if __name__ == "__main__":
    main()
