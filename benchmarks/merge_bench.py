#!/usr/bin/env python
"""Merge throughput, memory and parity, measured side by side in one run.

Builds (once, cached in --scratch) a synthetic trio in the real layout and shapes of Qwen2.5-VL-3B
or -7B (--shape; vision tower included) with its base and coder LLMs: random bf16 weights, sharded
like Hub checkpoints. --layers scales the language backbone depth (36 = the real 3B, 28 the 7B).
Then, with the page cache for every input evicted before each run (posix_fadvise DONTNEED: cold
reads), it times

  floor     plain sequential reads of the three inputs + a sequential write (and fsync) of the
            output's bytes, on the same disk
  viscodex  `viscodex merge` (task arithmetic, lambda 0.7), in a subprocess
  mergekit  `mergekit-yaml` task_arithmetic over the text-only equivalent (base = base LLM,
            models = the VLM's backbone as a Qwen2 checkpoint (an index over the VLM's own shards)
            with weight lam, coder 1-lam): mergekit cannot merge the VL model itself

and prints wall time, bytes/s, peak RSS, the ratios viscodex/floor and viscodex/mergekit, and the
max abs difference between the two outputs' backbone tensors (a parity check with mergekit). With
--device cuda it also reports each run's peak GPU memory (nvidia-smi, above the idle baseline).

    python benchmarks/merge_bench.py                       # default: 12 layers (~9 GB of inputs)
    python benchmarks/merge_bench.py --layers 6,24         # RSS at two model sizes
    python benchmarks/merge_bench.py --mergekit /opt/mkvenv/bin/mergekit-yaml
    python benchmarks/merge_bench.py --shape 7b --layers 8,16 --device cuda --discard-inputs
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from viscodex.engine.safetensors_io import PlannedTensor, ShardWriter, plan_shards, read_header, shard_names

SHARD = 2 * 1000**3


@dataclass(frozen=True)
class Shape:
    """A Qwen2.5-VL size: the language backbone and the vision tower. Values from the Hub's configs."""
    hidden: int
    inter: int
    heads: int
    kv: int
    vocab: int
    tied: bool
    real_layers: int
    mrope_section: tuple[int, int, int]
    v_hidden: int = 1280
    v_inter: int = 3420
    v_depth: int = 32

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


SHAPES = {
    "3b": Shape(2048, 11008, 16, 2, 151936, True, 36, (16, 24, 24)),    # Qwen2.5-VL-3B-Instruct
    "7b": Shape(3584, 18944, 28, 4, 152064, False, 28, (16, 24, 24)),   # Qwen2.5-VL-7B-Instruct
    # seconds, not minutes: for the test that keeps this script working (tests/test_benchmarks.py)
    "tiny": Shape(64, 128, 4, 2, 151936, False, 2, (2, 3, 3), v_hidden=32, v_inter=64, v_depth=2),
}


def llm_shapes(sh: Shape, layers: int, prefix: str = "model.") -> list[tuple[str, tuple[int, ...]]]:
    kv_dim = sh.kv * sh.head_dim
    s = [(f"{prefix}embed_tokens.weight", (sh.vocab, sh.hidden))]
    for i in range(layers):
        p = f"{prefix}layers.{i}."
        s += [
            (p + "input_layernorm.weight", (sh.hidden,)),
            (p + "self_attn.q_proj.weight", (sh.hidden, sh.hidden)), (p + "self_attn.q_proj.bias", (sh.hidden,)),
            (p + "self_attn.k_proj.weight", (kv_dim, sh.hidden)), (p + "self_attn.k_proj.bias", (kv_dim,)),
            (p + "self_attn.v_proj.weight", (kv_dim, sh.hidden)), (p + "self_attn.v_proj.bias", (kv_dim,)),
            (p + "self_attn.o_proj.weight", (sh.hidden, sh.hidden)),
            (p + "post_attention_layernorm.weight", (sh.hidden,)),
            (p + "mlp.gate_proj.weight", (sh.inter, sh.hidden)), (p + "mlp.up_proj.weight", (sh.inter, sh.hidden)),
            (p + "mlp.down_proj.weight", (sh.hidden, sh.inter)),
        ]
    s.append((f"{prefix}norm.weight", (sh.hidden,)))
    if not sh.tied:  # 3B ties lm_head to embed_tokens (absent on disk); 7B has its own
        s.append(("lm_head.weight", (sh.vocab, sh.hidden)))
    return s


def vision_shapes(sh: Shape) -> list[tuple[str, tuple[int, ...]]]:
    vh, vi = sh.v_hidden, sh.v_inter
    s = [("visual.patch_embed.proj.weight", (vh, 3, 2, 14, 14))]
    for i in range(sh.v_depth):
        p = f"visual.blocks.{i}."
        s += [
            (p + "norm1.weight", (vh,)), (p + "norm2.weight", (vh,)),
            (p + "attn.qkv.weight", (3 * vh, vh)), (p + "attn.qkv.bias", (3 * vh,)),
            (p + "attn.proj.weight", (vh, vh)), (p + "attn.proj.bias", (vh,)),
            (p + "mlp.gate_proj.weight", (vi, vh)), (p + "mlp.gate_proj.bias", (vi,)),
            (p + "mlp.up_proj.weight", (vi, vh)), (p + "mlp.up_proj.bias", (vi,)),
            (p + "mlp.down_proj.weight", (vh, vi)), (p + "mlp.down_proj.bias", (vh,)),
        ]
    s += [("visual.merger.ln_q.weight", (vh,)),
          ("visual.merger.mlp.0.weight", (4 * vh, 4 * vh)), ("visual.merger.mlp.0.bias", (4 * vh,)),
          ("visual.merger.mlp.2.weight", (sh.hidden, 4 * vh)), ("visual.merger.mlp.2.bias", (sh.hidden,))]
    return s


def text_config(sh: Shape, layers: int) -> dict:
    return dict(vocab_size=sh.vocab, hidden_size=sh.hidden, intermediate_size=sh.inter, num_hidden_layers=layers,
                num_attention_heads=sh.heads, num_key_value_heads=sh.kv, hidden_act="silu", max_position_embeddings=32768,
                rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=sh.tied, torch_dtype="bfloat16",
                bos_token_id=151643, eos_token_id=151645)


def nbytes(shapes) -> int:
    return sum(2 * math.prod(s) for _, s in shapes)


def write_checkpoint(folder: Path, shapes, config: dict, seed: int, pool: torch.Tensor) -> dict[str, str]:
    """Random bf16 weights (slices of a random pool at seeded offsets), Hub-style shards + index.
    Returns the weight map (tensor -> shard file)."""
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
    return wm


def link_backbone(vlm: Path, wm: dict[str, str], folder: Path, config: dict) -> None:
    """The VLM's backbone as a Qwen2 checkpoint for mergekit without a copy: links to the VLM's
    shards and an index that lists only the backbone tensors (mergekit reads what the index names)."""
    folder.mkdir(parents=True, exist_ok=True)
    backbone = {k: f for k, f in wm.items() if not k.startswith("visual.")}
    for f in sorted(set(backbone.values())):
        (folder / f).symlink_to(os.path.relpath(vlm / f, folder))  # relative: the scratch folder may move
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": backbone}))
    (folder / "config.json").write_text(json.dumps(config, indent=1))


def input_root(root: Path, shape: str, layers: int) -> Path:
    return root / f"qwen25vl{shape}-L{layers}"


def build_inputs(root: Path, shape: str, layers: int) -> dict[str, Path]:
    sh = SHAPES[shape]
    root = input_root(root, shape, layers)
    paths = {r: root / r for r in ("vlm", "coder", "base", "vlm_backbone")}
    if (root / "done").exists():
        return paths
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.time()
    pool = (torch.randn(64 * 1024 * 1024, generator=torch.Generator().manual_seed(0)) * 0.02).to(torch.bfloat16)
    tc = text_config(sh, layers)
    vl_cfg = {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
              "text_config": {**tc, "model_type": "qwen2_5_vl_text",
                              "rope_scaling": {"type": "mrope", "mrope_section": list(sh.mrope_section)}},
              "vision_config": {"depth": sh.v_depth, "hidden_size": sh.v_hidden, "intermediate_size": sh.v_inter,
                                "out_hidden_size": sh.hidden, "model_type": "qwen2_5_vl_vision"},
              "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
              "vision_end_token_id": 151653, "tie_word_embeddings": sh.tied, "torch_dtype": "bfloat16"}
    llm_cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", **tc}
    wm = write_checkpoint(paths["vlm"], llm_shapes(sh, layers) + vision_shapes(sh), vl_cfg, 1, pool)
    write_checkpoint(paths["coder"], llm_shapes(sh, layers), llm_cfg, 2, pool)
    write_checkpoint(paths["base"], llm_shapes(sh, layers), llm_cfg, 3, pool)
    link_backbone(paths["vlm"], wm, paths["vlm_backbone"], llm_cfg)
    (root / "done").write_text("ok")
    print(f"built synthetic trio ({shape}, {layers} layers) in {time.time() - t0:.0f}s", file=sys.stderr)
    return paths


def disk_needed(shape: str, layers: int, built: bool, mergekit: bool) -> int:
    """Bytes this size still needs on the scratch disk: inputs (unless built) and both outputs."""
    sh = SHAPES[shape]
    vlm, llm = nbytes(llm_shapes(sh, layers) + vision_shapes(sh)), nbytes(llm_shapes(sh, layers))
    return (0 if built else vlm + 2 * llm) + vlm + (llm if mergekit else 0)


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


def nvidia_smi(field: str) -> str | None:
    """One --query-gpu field of GPU 0, or None where there is no nvidia-smi (or it fails)."""
    try:
        return subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader,nounits", "-i", "0"],
                              capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def gpu_used_bytes() -> int | None:
    """Memory in use on GPU 0 (whole device: per-process figures are often missing inside containers)."""
    used = nvidia_smi("memory.used")
    return int(used.split()[0]) * 1024**2 if used and used.split()[0].isdigit() else None


class GpuPeak:
    """Peak device memory above the idle baseline while a child runs, sampled every 0.1 s. PyTorch's
    caching allocator keeps what it reserved, so sampling misses little."""

    def __init__(self) -> None:
        self.base = gpu_used_bytes()
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.1):
            used = gpu_used_bytes()
            if used is not None:
                self.peak = max(self.peak, used - self.base)

    def __enter__(self) -> "GpuPeak":
        if self.base is not None:
            self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._t.is_alive():
            self._t.join()


def timed(cmd: list[str], env=None, gpu: bool = False) -> tuple[float, int, int | None]:
    """Wall seconds, peak RSS (bytes) and, with gpu, peak GPU memory (bytes) of a child process.
    Its stderr goes to a file: a pipe nobody reads would block a chatty child (progress bars)."""
    peak = GpuPeak() if gpu else None
    with tempfile.TemporaryFile() as err, (peak or contextlib.nullcontext()):
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed:\n{err.read().decode(errors='replace')[-3000:]}")
    return dt, ru.ru_maxrss * 1024, (peak.peak if peak is not None and peak.base is not None else None)


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
    ap.add_argument("--shape", choices=sorted(SHAPES), default="3b", help="Qwen2.5-VL size whose shapes the trio has")
    real = ", ".join(f"{sh.real_layers} for {k}" for k, sh in SHAPES.items() if k != "tiny")
    ap.add_argument("--layers", default="12", help=f"comma-separated backbone depths (real: {real})")
    ap.add_argument("--lam", type=float, default=0.7)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--mergekit", default=shutil.which("mergekit-yaml") or "/opt/mkvenv/bin/mergekit-yaml")
    ap.add_argument("--no-mergekit", action="store_true")
    ap.add_argument("--discard-inputs", action="store_true",
                    help="delete each size's inputs once measured (default: cached in --scratch for the next run)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each (interleaved); medians are reported")
    ap.add_argument("--extra", default="", help="extra args for viscodex merge, e.g. '--no-hash'")
    ap.add_argument("--json", type=Path, help="also write results here")
    ap.add_argument("--_build", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--_diff", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._build:
        build_inputs(Path(args._build[0]), args._build[1], int(args._build[2]))
        return
    if args._diff:
        print(max_abs_diff(Path(args._diff[0]), Path(args._diff[1])))
        return
    use_mk = not args.no_mergekit
    if use_mk and not Path(args.mergekit).exists():
        raise SystemExit(f"mergekit-yaml not found at {args.mergekit}: pip install mergekit==0.1.5 (a separate venv is "
                         "fine) and pass --mergekit PATH/TO/mergekit-yaml, or run with --no-mergekit")
    cuda = args.device.startswith("cuda")
    threads = str(os.cpu_count() or 1)
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    args.scratch.mkdir(parents=True, exist_ok=True)
    results = []
    for layers in [int(x) for x in args.layers.split(",")]:
        built = (input_root(args.scratch, args.shape, layers) / "done").exists()
        need, free = disk_needed(args.shape, layers, built, use_mk), shutil.disk_usage(args.scratch).free
        if need > free:
            raise SystemExit(f"{args.shape} at {layers} layers needs {need / 1e9:.1f} GB more on {args.scratch} "
                             f"(inputs and both outputs), {free / 1e9:.1f} GB free: use fewer layers, "
                             "--discard-inputs, or another --scratch")
        in_child("--_build", str(args.scratch), args.shape, str(layers))
        paths = build_inputs(args.scratch, args.shape, layers)  # cached by the child: only paths here
        out_v, out_m = args.scratch / "out_viscodex", args.scratch / "out_mergekit"
        for d in (out_v, out_m):
            shutil.rmtree(d, ignore_errors=True)
        in_bytes = sum(folder_bytes(paths[r]) for r in ("vlm", "coder", "base"))
        out_bytes = folder_bytes(paths["vlm"])
        row = {"shape": args.shape, "layers": layers, "input_bytes": in_bytes, "output_bytes": out_bytes,
               "device": args.device}

        cmd = [sys.executable, "-m", "viscodex", "merge", "--vlm", str(paths["vlm"]), "--coder", str(paths["coder"]),
               "--base", str(paths["base"]), "--lam", str(args.lam), "--out", str(out_v), "--device", args.device,
               "--shard-size", "2GB", *args.extra.split()]
        if use_mk:
            cfg = args.scratch / "mergekit.yml"
            cfg.write_text(
                f"merge_method: task_arithmetic\nbase_model: {paths['base']}\ndtype: bfloat16\n"
                f"parameters:\n  normalize: false\n"
                f"models:\n  - model: {paths['vlm_backbone']}\n    parameters:\n      weight: {args.lam}\n"
                f"  - model: {paths['coder']}\n    parameters:\n      weight: {1 - args.lam}\n")
            mk = [args.mergekit, str(cfg), str(out_m), "--num-threads", threads, "--quiet", "--out-shard-size", "2B"]
            if args.device != "cpu":
                mk += ["--device", args.device]
        runs = {k: [] for k in ("floor", "viscodex", "mergekit")}
        for rep in range(args.repeats):  # interleaved, so drift in the machine's speed hits all three alike
            last = rep == args.repeats - 1
            evict(*paths.values())
            runs["floor"].append((io_floor([paths["vlm"], paths["coder"], paths["base"]], out_bytes, args.scratch), 0, None))
            evict(*paths.values())
            shutil.rmtree(out_v, ignore_errors=True)
            runs["viscodex"].append(timed(cmd, env, gpu=cuda))
            if use_mk:
                evict(*paths.values())
                shutil.rmtree(out_m, ignore_errors=True)
                runs["mergekit"].append(timed(mk, env, gpu=cuda))
                if last:
                    row["max_abs_diff_vs_mergekit"] = float(in_child("--_diff", str(out_v), str(out_m)))
            print(f"{args.shape} L{layers} run {rep + 1}/{args.repeats}: " + ", ".join(
                f"{k} {v[-1][0]:.1f}s" for k, v in runs.items() if v), file=sys.stderr, flush=True)
        for k, v in runs.items():
            if v:
                row[f"{k}_runs_s"] = [round(x[0], 2) for x in v]
                row[f"{k}_s"] = statistics.median(x[0] for x in v)
                if k != "floor":
                    row[f"{k}_rss"] = max(x[1] for x in v)
                    row[f"{k}_gpu"] = None if v[0][2] is None else max(x[2] for x in v)
        results.append(row)
        if args.json:  # after every size: a run cut short still leaves what it measured
            args.json.write_text(json.dumps(results, indent=2))
        for d in (out_v, out_m):
            shutil.rmtree(d, ignore_errors=True)
        if args.discard_inputs:
            shutil.rmtree(input_root(args.scratch, args.shape, layers))

    dev = f"{args.device} ({nvidia_smi('name') or 'unknown GPU'})" if cuda else args.device
    print(f"\nmerge benchmark: synthetic Qwen2.5-VL-{args.shape.upper()} layout, bf16, task arithmetic lam={args.lam}, "
          f"{os.cpu_count()} cores, device {dev}, cold page cache for every run")
    gpu_cols = lambda a, b: f" {a:>10} {b:>9}" if cuda else ""
    hdr = f"{'layers':>6} {'inputs GB':>9} {'floor s':>8} {'viscodex s':>10} {'vis/floor':>9} {'vis MB/s':>8} {'vis RSS GB':>10}"
    hdr += f" {'mergekit s':>10} {'vis/mk':>7} {'mk RSS GB':>9} {'max|diff|':>9}" + gpu_cols("vis GPU GB", "mk GPU GB")
    print(hdr)
    gb = lambda x: "-" if x is None else f"{x / 1e9:.2f}"
    for r in results:
        mbps = (r["input_bytes"] + r["output_bytes"]) / r["viscodex_s"] / 1e6
        line = (f"{r['layers']:>6} {r['input_bytes'] / 1e9:>9.2f} {r['floor_s']:>8.1f} {r['viscodex_s']:>10.1f} "
                f"{r['viscodex_s'] / r['floor_s']:>9.2f} {mbps:>8.0f} {r['viscodex_rss'] / 1e9:>10.2f}")
        if "mergekit_s" in r:
            line += (f" {r['mergekit_s']:>10.1f} {r['viscodex_s'] / r['mergekit_s']:>7.2f} {r['mergekit_rss'] / 1e9:>9.2f}"
                     f" {r['max_abs_diff_vs_mergekit']:>9.2g}")
        else:
            line += f" {'-':>10} {'-':>7} {'-':>9} {'-':>9}"
        line += gpu_cols(gb(r["viscodex_gpu"]), gb(r.get("mergekit_gpu")))
        print(line)
    if args.repeats > 1:
        print(f"(times: medians of {args.repeats} interleaved runs; RSS and GPU: the largest; every run in --json)")
    print("(vis/floor: target <= 1.2; vis/mk: target <= 0.5; RSS target <= 1.5 GB at every size)")


if __name__ == "__main__":
    main()
