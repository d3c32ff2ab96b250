#!/usr/bin/env python
"""Merge throughput, memory and parity, measured side by side in one run.

Builds (once, cached in --scratch) a synthetic trio in the real layout and shapes of Qwen2.5-VL-3B
(vision tower included) with its base and coder LLMs: random bf16 weights, sharded like Hub
checkpoints. --layers scales the language backbone depth (36 = the real 3B). Then, with the page
cache for every input evicted before each run (posix_fadvise DONTNEED: cold reads), it times

  floor     plain sequential reads of the three inputs + a sequential write (and fsync) of the
            output's bytes, on the same disk
  viscodex  `viscodex merge` (task arithmetic, lambda 0.7), in a subprocess
  mergekit  `mergekit-yaml` task_arithmetic over the text-only equivalent (base = base LLM,
            models = the VLM's backbone extracted as a Qwen2 checkpoint with weight lam, coder 1-lam):
            mergekit cannot merge the VL model itself

and prints wall time, bytes/s, peak RSS, the ratios viscodex/floor and viscodex/mergekit, and the
max abs difference between the two outputs' backbone tensors (a parity check with mergekit).

    python benchmarks/merge_bench.py                       # default: 12 layers (~9 GB of inputs)
    python benchmarks/merge_bench.py --layers 6,24         # RSS at two model sizes
    python benchmarks/merge_bench.py --mergekit /opt/mkvenv/bin/mergekit-yaml
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from viscodex.safetensors_io import PlannedTensor, ShardWriter, plan_shards, read_header, shard_names

HIDDEN, INTER, HEADS, KV, VOCAB = 2048, 11008, 16, 2, 151936
V_HIDDEN, V_INTER, V_DEPTH, OUT_HIDDEN = 1280, 3420, 32, 2048
HEAD_DIM = HIDDEN // HEADS
SHARD = 2 * 1000**3


def llm_shapes(layers: int, prefix: str = "model.") -> list[tuple[str, tuple[int, ...]]]:
    s = [(f"{prefix}embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(layers):
        p = f"{prefix}layers.{i}."
        s += [
            (p + "input_layernorm.weight", (HIDDEN,)),
            (p + "self_attn.q_proj.weight", (HIDDEN, HIDDEN)), (p + "self_attn.q_proj.bias", (HIDDEN,)),
            (p + "self_attn.k_proj.weight", (KV * HEAD_DIM, HIDDEN)), (p + "self_attn.k_proj.bias", (KV * HEAD_DIM,)),
            (p + "self_attn.v_proj.weight", (KV * HEAD_DIM, HIDDEN)), (p + "self_attn.v_proj.bias", (KV * HEAD_DIM,)),
            (p + "self_attn.o_proj.weight", (HIDDEN, HIDDEN)),
            (p + "post_attention_layernorm.weight", (HIDDEN,)),
            (p + "mlp.gate_proj.weight", (INTER, HIDDEN)), (p + "mlp.up_proj.weight", (INTER, HIDDEN)),
            (p + "mlp.down_proj.weight", (HIDDEN, INTER)),
        ]
    s.append((f"{prefix}norm.weight", (HIDDEN,)))
    return s  # Qwen2.5-3B ties lm_head to embed_tokens


def vision_shapes() -> list[tuple[str, tuple[int, ...]]]:
    s = [("visual.patch_embed.proj.weight", (V_HIDDEN, 3, 2, 14, 14))]
    for i in range(V_DEPTH):
        p = f"visual.blocks.{i}."
        s += [
            (p + "norm1.weight", (V_HIDDEN,)), (p + "norm2.weight", (V_HIDDEN,)),
            (p + "attn.qkv.weight", (3 * V_HIDDEN, V_HIDDEN)), (p + "attn.qkv.bias", (3 * V_HIDDEN,)),
            (p + "attn.proj.weight", (V_HIDDEN, V_HIDDEN)), (p + "attn.proj.bias", (V_HIDDEN,)),
            (p + "mlp.gate_proj.weight", (V_INTER, V_HIDDEN)), (p + "mlp.gate_proj.bias", (V_INTER,)),
            (p + "mlp.up_proj.weight", (V_INTER, V_HIDDEN)), (p + "mlp.up_proj.bias", (V_INTER,)),
            (p + "mlp.down_proj.weight", (V_HIDDEN, V_INTER)), (p + "mlp.down_proj.bias", (V_HIDDEN,)),
        ]
    s += [("visual.merger.ln_q.weight", (V_HIDDEN,)),
          ("visual.merger.mlp.0.weight", (4 * V_HIDDEN, 4 * V_HIDDEN)), ("visual.merger.mlp.0.bias", (4 * V_HIDDEN,)),
          ("visual.merger.mlp.2.weight", (OUT_HIDDEN, 4 * V_HIDDEN)), ("visual.merger.mlp.2.bias", (OUT_HIDDEN,))]
    return s


def text_config(layers: int) -> dict:
    return dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=layers,
                num_attention_heads=HEADS, num_key_value_heads=KV, hidden_act="silu", max_position_embeddings=32768,
                rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True, torch_dtype="bfloat16",
                bos_token_id=151643, eos_token_id=151645)


def write_checkpoint(folder: Path, shapes, config: dict, seed: int, pool: torch.Tensor) -> None:
    """Random bf16 weights (slices of a random pool at seeded offsets), Hub-style shards + index."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    planned = [PlannedTensor(n, "BF16", s) for n, s in shapes]
    shards = plan_shards(planned, SHARD)
    names = shard_names(len(shards))
    wm = {}
    for shard, fname in zip(shards, names):
        w = ShardWriter(folder / fname, shard)
        for t in shard:
            n = t.nbytes // 2
            off = int(torch.randint(0, pool.numel() - 1, (1,), generator=g))
            if n + off <= pool.numel():
                data = pool[off:off + n]
            else:
                data = pool.roll(-off).repeat(n // pool.numel() + 1)[:n]
            w.write(t.name, data.contiguous())
            wm[t.name] = fname
        w.close()
    if len(names) > 1:
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    (folder / "config.json").write_text(json.dumps(config, indent=1))


def build_inputs(root: Path, layers: int) -> dict[str, Path]:
    root = root / f"qwen25vl3b-L{layers}"
    paths = {r: root / r for r in ("vlm", "coder", "base", "vlm_backbone")}
    if (root / "done").exists():
        return paths
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.time()
    pool = (torch.randn(64 * 1024 * 1024, generator=torch.Generator().manual_seed(0)) * 0.02).to(torch.bfloat16)
    tc = text_config(layers)
    vl_cfg = {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
              "text_config": {**tc, "model_type": "qwen2_5_vl_text", "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}},
              "vision_config": {"depth": V_DEPTH, "hidden_size": V_HIDDEN, "intermediate_size": V_INTER, "out_hidden_size": OUT_HIDDEN,
                                "model_type": "qwen2_5_vl_vision"},
              "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
              "vision_end_token_id": 151653, "tie_word_embeddings": True, "torch_dtype": "bfloat16"}
    llm_cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", **tc}
    write_checkpoint(paths["vlm"], llm_shapes(layers) + vision_shapes(), vl_cfg, 1, pool)
    write_checkpoint(paths["coder"], llm_shapes(layers), llm_cfg, 2, pool)
    write_checkpoint(paths["base"], llm_shapes(layers), llm_cfg, 3, pool)
    write_checkpoint(paths["vlm_backbone"], llm_shapes(layers), llm_cfg, 1, pool)  # same seed: same bytes as the VLM's
    (root / "done").write_text("ok")
    print(f"built synthetic trio ({layers} layers) in {time.time() - t0:.0f}s", file=sys.stderr)
    return paths


def files_of(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def evict(*folders: Path) -> None:
    """Drop these files' pages from the page cache, so the next read is cold."""
    os.sync()
    for d in folders:
        if not d.exists():
            continue
        for f in d.rglob("*"):
            if f.is_file():
                fd = os.open(f, os.O_RDONLY)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                os.close(fd)


def folder_bytes(d: Path) -> int:
    return sum(f.stat().st_size for f in files_of(d))


def io_floor(inputs: list[Path], out_bytes: int, scratch: Path, chunk: int = 16 << 20) -> float:
    buf = bytearray(chunk)
    t0 = time.perf_counter()
    for d in inputs:
        for f in files_of(d):
            with open(f, "rb", buffering=0) as fh:
                while fh.readinto(buf):
                    pass
    out = scratch / "floor.bin"
    with open(out, "wb", buffering=0) as fh:
        left = out_bytes
        mv = memoryview(buf)
        while left > 0:
            left -= fh.write(mv[: min(chunk, left)])
        os.fsync(fh.fileno())
    dt = time.perf_counter() - t0
    out.unlink()
    return dt


def in_child(*args: str) -> str:
    """Run a memory-hungry step (input generation, parity check) in a child process. Linux carries
    the pre-exec high-water RSS into a child's ru_maxrss, so this process must stay small for the
    peak RSS measured for viscodex and mergekit to be theirs."""
    return subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True).stdout.strip()


def timed(cmd: list[str], env=None) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of a child process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return dt, ru.ru_maxrss * 1024


VISION_TOKEN_IDS = [151652, 151653, 151655, 151656]


def max_abs_diff(a: Path, b: Path) -> float:
    """Largest |viscodex - mergekit| over the backbone tensors. The vision tokens' embedding rows are
    skipped: viscodex keeps them from the VLM by design, mergekit merges them."""
    from safetensors import safe_open

    where = {}
    for f in files_of(b):
        for k in read_header(f)[0]:
            where[k] = f
    worst = 0.0
    for f in files_of(a):
        with safe_open(f, "pt") as sa:
            for k in sa.keys():
                if k.startswith("visual.") or k not in where:
                    continue
                with safe_open(where[k], "pt") as sb:
                    x, y = sa.get_tensor(k).float(), sb.get_tensor(k).float()
                if k.endswith("embed_tokens.weight") or k == "lm_head.weight":
                    keep = torch.ones(x.shape[0], dtype=torch.bool)
                    keep[VISION_TOKEN_IDS] = False
                    x, y = x[keep], y[keep]
                d = (x - y).abs().max().item()
                worst = max(worst, d)
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scratch", type=Path, default=Path(os.environ.get("VISCODEX_BENCH_SCRATCH", "scratch/bench")))
    ap.add_argument("--layers", default="12", help="comma-separated backbone depths (36 = real Qwen2.5-VL-3B)")
    ap.add_argument("--lam", type=float, default=0.7)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--mergekit", default=shutil.which("mergekit-yaml") or "/opt/mkvenv/bin/mergekit-yaml")
    ap.add_argument("--no-mergekit", action="store_true")
    ap.add_argument("--extra", default="", help="extra args for viscodex merge, e.g. '--no-hash'")
    ap.add_argument("--json", type=Path, help="also write results here")
    ap.add_argument("--_build", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--_diff", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._build:
        build_inputs(Path(args._build[0]), int(args._build[1]))
        return
    if args._diff:
        print(max_abs_diff(Path(args._diff[0]), Path(args._diff[1])))
        return
    threads = str(os.cpu_count() or 1)
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    results = []
    for layers in [int(x) for x in args.layers.split(",")]:
        in_child("--_build", str(args.scratch), str(layers))
        paths = build_inputs(args.scratch, layers)  # cached by the child: only paths here
        out_v, out_m = args.scratch / "out_viscodex", args.scratch / "out_mergekit"
        for d in (out_v, out_m):
            shutil.rmtree(d, ignore_errors=True)
        in_bytes = sum(folder_bytes(paths[r]) for r in ("vlm", "coder", "base"))
        out_bytes = folder_bytes(paths["vlm"])
        row = {"layers": layers, "input_bytes": in_bytes, "output_bytes": out_bytes, "device": args.device}

        evict(*paths.values())
        row["floor_s"] = io_floor([paths["vlm"], paths["coder"], paths["base"]], out_bytes, args.scratch)

        evict(*paths.values())
        cmd = [sys.executable, "-m", "viscodex", "merge", "--vlm", str(paths["vlm"]), "--coder", str(paths["coder"]),
               "--base", str(paths["base"]), "--lam", str(args.lam), "--out", str(out_v), "--device", args.device,
               "--shard-size", "2GB", *args.extra.split()]
        row["viscodex_s"], row["viscodex_rss"] = timed(cmd, env)

        if not args.no_mergekit and Path(args.mergekit).exists():
            cfg = args.scratch / "mergekit.yml"
            cfg.write_text(
                f"merge_method: task_arithmetic\nbase_model: {paths['base']}\ndtype: bfloat16\n"
                f"parameters:\n  normalize: false\n"
                f"models:\n  - model: {paths['vlm_backbone']}\n    parameters:\n      weight: {args.lam}\n"
                f"  - model: {paths['coder']}\n    parameters:\n      weight: {1 - args.lam}\n")
            evict(*paths.values())
            mk = [args.mergekit, str(cfg), str(out_m), "--num-threads", threads, "--quiet", "--out-shard-size", "2B"]
            if args.device != "cpu":
                mk += ["--device", args.device]
            row["mergekit_s"], row["mergekit_rss"] = timed(mk, env)
            row["max_abs_diff_vs_mergekit"] = float(in_child("--_diff", str(out_v), str(out_m)))
        results.append(row)
        for d in (out_v, out_m):
            shutil.rmtree(d, ignore_errors=True)

    print(f"\nmerge benchmark: synthetic Qwen2.5-VL-3B layout, bf16, task arithmetic lam={args.lam}, "
          f"{os.cpu_count()} cores, device {args.device}, cold page cache for every run")
    hdr = f"{'layers':>6} {'inputs GB':>9} {'floor s':>8} {'viscodex s':>10} {'vis/floor':>9} {'vis MB/s':>8} {'vis RSS GB':>10}"
    hdr += f" {'mergekit s':>10} {'vis/mk':>7} {'mk RSS GB':>9} {'max|diff|':>9}"
    print(hdr)
    for r in results:
        mbps = (r["input_bytes"] + r["output_bytes"]) / r["viscodex_s"] / 1e6
        line = (f"{r['layers']:>6} {r['input_bytes'] / 1e9:>9.2f} {r['floor_s']:>8.1f} {r['viscodex_s']:>10.1f} "
                f"{r['viscodex_s'] / r['floor_s']:>9.2f} {mbps:>8.0f} {r['viscodex_rss'] / 1e9:>10.2f}")
        if "mergekit_s" in r:
            line += (f" {r['mergekit_s']:>10.1f} {r['viscodex_s'] / r['mergekit_s']:>7.2f} {r['mergekit_rss'] / 1e9:>9.2f}"
                     f" {r['max_abs_diff_vs_mergekit']:>9.2g}")
        print(line)
    print("(vis/floor: target <= 1.2; vis/mk: target <= 0.5; RSS target <= 1.5 GB at every size)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
