"""SFT throughput: `viscodex train` (padded, packed, LoRA, 2 processes) vs TRL's SFTTrainer.

Each run is its own subprocess (so peak memory is its own), on the same tiny merged model (or a
0.5B-3B-shaped one on a GPU) and the same image->code records, with the same frozen vision tower,
batch, steps and gradient checkpointing. Variants:

- viscodex: padded batches (the default);
- viscodex-packed: `--packing` (padding-free rows, per-record positions);
- viscodex-lora: LoRA r=16 on the backbone's linear layers (`--lora-r 16`);
- viscodex-2proc: 2 processes (torchrun; DDP over gloo on CPU, NCCL on 2 GPUs), half the batch each;
- trl: TRL's SFTTrainer on the same records in TRL's conversational *messages* format (its fast
  path for vision datasets) with assistant_only_loss, padded (TRL refuses padding-free and
  packing for vision datasets).

Tokens/s counts non-padding input tokens over the timed steps (the first WARM steps excluded);
tokens per CPU-second is also given, as it is less sensitive to other load on a shared CPU.
TRL gets the vision tower frozen the way a TRL user would (requires_grad False). The TRL side
needs `pip install 'viscodex[bench]'` (trl).

    python benchmarks/sft_bench.py --device cpu                      # tiny model, every variant
    python benchmarks/sft_bench.py --device cuda --shape 0.5b        # GPU: tokens/s, peak memory, MFU
    python benchmarks/sft_bench.py --device cuda --shape 3b --steps 20 --batch 2 --answer-repeat 40

Prints one JSON line per run and a summary (medians; ratios to TRL).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WARM = 2
# Text backbones (Qwen2.5 shapes) and the Qwen2.5-VL vision tower.
SHAPES = {
    "tiny": None,
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, tie_word_embeddings=True),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, tie_word_embeddings=True),
    "3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
               num_key_value_heads=2, tie_word_embeddings=True),
}
VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14, spatial_merge_size=2,
              temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31])
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}  # dense bf16


# ---------------------------------------------------------------- setup (parent process)
def build_model(work: Path, shape: str, cuda: bool = False) -> Path:
    """Tiny: the merged tiny trio. Other shapes: a random-init Qwen2.5-VL of that size, saved bf16."""
    from viscodex.engine.merge import run_merge
    from viscodex.engine.recipe import Recipe
    from viscodex.toy.models import TinyConfig, build_trio

    trio = build_trio(work / "trio", TinyConfig())
    merged = run_merge(Recipe(vlm=str(trio["vlm"]), coder=str(trio["coder"]), base=str(trio["base"])),
                       work / "merged", progress=False, force=True).out
    if shape == "tiny":
        return merged
    import torch
    from transformers import (
        AutoProcessor,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
    )

    small = json.loads((merged / "config.json").read_text())
    tc = dict(small["text_config"])
    tc.update(SHAPES[shape], vocab_size=151936)
    for k in ("layer_types", "max_window_layers", "dtype", "torch_dtype"):
        tc.pop(k, None)
    hd = tc["hidden_size"] // tc["num_attention_heads"]
    tc["rope_parameters"] = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]
                             if hd == 128 else [hd // 2 - 2 * (hd // 8), hd // 8, hd // 8]}
    vc = dict(VISION, out_hidden_size=tc["hidden_size"])
    ids = {k: small[k] for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")}
    conf = Qwen2_5_VLConfig(text_config=tc, vision_config=vc, tie_word_embeddings=tc["tie_word_embeddings"], **ids)
    torch.manual_seed(0)
    with torch.device("cuda" if cuda else "cpu"):
        model = Qwen2_5_VLForConditionalGeneration(conf).to(torch.bfloat16)
    out = work / f"model-{shape}"
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(merged).save_pretrained(out)
    (out / "viscodex_recipe.yaml").write_text((merged / "viscodex_recipe.yaml").read_text())
    return out


def build_data(work: Path, n: int, image_size: int, answer_repeat: int) -> Path:
    from viscodex.training.toy_data import write_toy_dataset

    path = write_toy_dataset(work / "data", n=n, seed=1, image_size=image_size)
    recs = json.loads(path.read_text())
    for r in recs:
        r["messages"][1]["content"] = "\n".join([r["messages"][1]["content"]] * answer_repeat)
    path.write_text(json.dumps(recs))
    return path


# ---------------------------------------------------------------- one run (child process)
def _timer_callback():
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def __init__(self):
            self.marks = []

        def on_step_end(self, args, state, control, **kw):
            import torch

            if torch.cuda.is_available():
                torch.cuda.synchronize()
            ru = resource.getrusage(resource.RUSAGE_SELF)
            self.marks.append((time.perf_counter(), int(state.num_input_tokens_seen), ru.ru_utime + ru.ru_stime))

    return Timer()


def _peak_mem() -> dict:
    import torch

    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _common_args(a, out: Path) -> dict:
    import torch

    bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return dict(output_dir=str(out), per_device_train_batch_size=a.batch, gradient_accumulation_steps=1,
                max_steps=a.steps, learning_rate=1e-5, lr_scheduler_type="constant", warmup_steps=0,
                bf16=bf16, activation_checkpointing=True, save_strategy="no", logging_steps=10**6,
                report_to="none", disable_tqdm=True, seed=0, remove_unused_columns=False,
                include_num_input_tokens_seen="non_padding", dataloader_pin_memory=torch.cuda.is_available(),
                use_cache=False)


VARIANTS = ("viscodex", "viscodex-packed", "viscodex-lora", "viscodex-2proc", "trl")


def run_viscodex(a) -> dict:
    import viscodex.training.trainer as vt
    from viscodex.training.trainer import TrainConfig

    timer = _timer_callback()
    orig = vt._make_trainer_class

    def patched():
        T, L = orig()

        class Timed(T):
            def __init__(self, *args, callbacks=None, **kw):
                super().__init__(*args, callbacks=(callbacks or []) + [timer], **kw)

        return Timed, L

    vt._make_trainer_class = patched
    work = Path(a.work)
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    cfg = TrainConfig(model=a.model, data=a.data, out=str(work / f"out-{a.which}"), global_batch=a.batch,
                      batch_size=a.batch // world, max_steps=a.steps, learning_rate=1e-5, warmup_ratio=0.0,
                      lr_scheduler="constant", save_steps=10**6, logging_steps=10**6, max_len=a.max_len,
                      progress=False, force=True, checkpoint_dir=str(work / f"ck-{a.which}"), seed=0,
                      packing=a.which == "viscodex-packed", lora_r=16 if a.which == "viscodex-lora" else None)
    res = vt.run_train(cfg)
    out = _summary(a.which, timer, res.trainer, a)
    if world > 1:  # memory and CPU time of every process
        import torch.distributed as dist

        mine = {**_peak_mem(), "cpu_s": timer.marks[-1][2] - timer.marks[WARM - 1][2]}
        alls = [None] * world
        dist.all_gather_object(alls, mine)
        out["peak_rss_mb"] = round(sum(m["peak_rss_mb"] for m in alls), 1)
        out["tokens_per_cpu_s"] = round(out["tokens"] / sum(m["cpu_s"] for m in alls), 1)
        out["processes"] = world
    return out if rank == 0 else {}


def _trl_rows(data: Path) -> list[dict]:
    """The records in TRL's conversational messages format, images decoded."""
    from PIL import Image

    rows = []
    for r in json.loads(data.read_text()):
        user, asst = r["messages"]
        q = user["content"].replace("<image>", "")
        content = ([{"type": "image"}] if r["images"] else []) + [{"type": "text", "text": q}]
        rows.append({"messages": [{"role": "user", "content": content},
                                  {"role": "assistant", "content": [{"type": "text", "text": asst["content"]}]}],
                     "images": [Image.open(data.parent / p).convert("RGB") for p in r["images"]]})
    return rows


def run_trl(a) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    from viscodex.training.trainer import freeze_for_sft

    ds = Dataset.from_list(_trl_rows(Path(a.data)))
    proc = AutoProcessor.from_pretrained(a.model)
    model = AutoModelForImageTextToText.from_pretrained(a.model, dtype=torch.float32)
    freeze_for_sft(model)
    timer = _timer_callback()
    # assistant-only loss needs a chat template TRL can patch with {% generation %} markers; it
    # cannot patch the tiny model's, and then the loss covers every token (the same compute)
    for assistant_only in (True, False):
        args = SFTConfig(**_common_args(a, Path(a.work) / "out-trl"), max_length=a.max_len,
                         assistant_only_loss=assistant_only)
        try:
            trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=proc, callbacks=[timer])
            break
        except ValueError as e:
            if "chat template" not in str(e) or not assistant_only:
                raise
    trainer.train()
    return {**_summary("trl", timer, trainer, a), "assistant_only_loss": assistant_only}


def _summary(name: str, timer, trainer, a) -> dict:
    marks = timer.marks
    (t0, k0, c0), (t1, k1, c1) = marks[WARM - 1], marks[-1]
    tps = (k1 - k0) / (t1 - t0)
    out = {"run": name, "tokens_per_s": round(tps, 1), "tokens_per_cpu_s": round((k1 - k0) / (c1 - c0), 1),
           "timed_steps": len(marks) - WARM, "tokens": k1 - k0, "seconds": round(t1 - t0, 3),
           **{k: round(v, 1) for k, v in _peak_mem().items()}}
    mfu = _mfu(trainer.model, tps, a)
    if mfu is not None:
        out["mfu"] = round(mfu, 4)
    return out


def _mfu(model, tokens_per_s: float, a) -> float | None:
    """Model FLOPs utilisation: 6 x trainable-path params (+ attention) per text token; the frozen
    vision tower counts its forward only. Recompute from checkpointing is not counted."""
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    if peak is None:
        return None
    tc = model.config.text_config
    lm = sum(p.numel() for n, p in model.named_parameters() if "visual" not in n and "embed_tokens" not in n)
    if tc.tie_word_embeddings:
        lm += tc.vocab_size * tc.hidden_size  # the tied head still does the matmul
    vis = sum(p.numel() for n, p in model.named_parameters() if "visual" in n)
    seq = a.seq_estimate
    attn = 12 * tc.num_hidden_layers * tc.hidden_size * seq  # QK^T and AV, fwd+bwd, per token
    vis_tokens_frac = a.vision_patch_frac  # vision patches per text token
    flops_per_token = 6 * lm + attn + 2 * vis * vis_tokens_frac
    return tokens_per_s * flops_per_token / (peak * 1e12)


# ---------------------------------------------------------------- driver
def child(a) -> None:
    res = run_trl(a) if a.which == "trl" else run_viscodex(a)
    if res:
        print("RESULT " + json.dumps(res), flush=True)
    import torch.distributed as dist

    if dist.is_initialized():
        # gloo's teardown at interpreter exit sometimes aborts ("terminate called without an
        # active exception") after the result is out; the measurement is done, so leave directly
        dist.barrier()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _child_cmd(which: str, a, model: Path, data: Path, work: Path, seq: float, vis_frac: float) -> list[str]:
    launcher = [sys.executable]
    if which == "viscodex-2proc":
        import socket

        with socket.socket() as sk:
            sk.bind(("127.0.0.1", 0))
            port = sk.getsockname()[1]
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port)]
    return [*launcher, __file__, "--which", which, "--model", str(model), "--data", str(data), "--work", str(work),
            "--steps", str(a.steps), "--batch", str(a.batch), "--max-len", str(a.max_len), "--seq-estimate", str(seq),
            "--vision-patch-frac", str(vis_frac)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default=None, choices=list(SHAPES), help="model shape (default: tiny on CPU, 0.5b on GPU)")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--records", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=None, help="px a side (default 56 tiny, 448 otherwise)")
    ap.add_argument("--answer-repeat", type=int, default=None, help="repeat each code answer N times (longer sequences)")
    ap.add_argument("--max-len", type=int, default=8192)
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="where the runs train (auto: cuda when available)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs of each; medians are compared")
    ap.add_argument("--work", default=None)
    ap.add_argument("--which", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--seq-estimate", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--vision-patch-frac", type=float, default=0.0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.which:
        return child(a)

    import torch

    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    bad = sorted(set(variants) - set(VARIANTS))
    if bad:
        raise SystemExit(f"--variants: unknown {', '.join(bad)}; choose from {', '.join(VARIANTS)}")
    cuda = a.device == "cuda" or (a.device == "auto" and torch.cuda.is_available())
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible")
    if "viscodex-2proc" in variants and (a.batch % 2 or (cuda and torch.cuda.device_count() < 2)):
        raise SystemExit("viscodex-2proc needs an even --batch (and 2 GPUs with --device cuda); drop it from --variants")
    shape = a.shape or ("0.5b" if cuda else "tiny")
    img = a.image_size or (56 if shape == "tiny" else 448)
    rep = a.answer_repeat or (1 if shape == "tiny" else 30)
    work = Path(a.work or tempfile.mkdtemp(prefix="sft_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    model = build_model(work, shape, cuda)
    data = build_data(work, a.records, img, rep)
    # sequence and vision-patch statistics for the MFU estimate
    from transformers import AutoProcessor

    from viscodex.training.data import Encoder, build_index, open_data

    enc = Encoder(AutoProcessor.from_pretrained(model), max_len=a.max_len)
    idx = build_index(open_data(str(data)), enc, progress=False)
    seq = sum(idx.lengths) / len(idx.lengths)
    patches = enc.image_tokens((img, img)) * enc.merge**2
    n_img = sum(1 for r in json.loads(data.read_text()) if r["images"])
    vis_frac = patches * n_img / sum(idx.lengths)
    print(f"setup {time.perf_counter() - t:.1f}s: shape {shape}, {len(idx.valid)} records, mean {seq:.0f} tokens, "
          f"{img}px images", file=sys.stderr)
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", **({} if cuda else {"CUDA_VISIBLE_DEVICES": ""}))
    if not cuda:
        env.setdefault("OMP_NUM_THREADS", "1")
    for _ in range(a.repeats):
        for which in variants:  # interleaved, so drifting machine load hits all alike
            p = subprocess.run(_child_cmd(which, a, model, data, work, seq, vis_frac), capture_output=True, text=True,
                               env=env)
            line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if p.returncode != 0 or line is None:
                print(p.stdout[-3000:], p.stderr[-5000:], file=sys.stderr)
                raise SystemExit(f"{which} run failed (exit {p.returncode})")
            runs[which].append(json.loads(line[len("RESULT "):]))
            print(json.dumps(runs[which][-1]), flush=True)
    print("SUMMARY " + json.dumps(summarize(runs, shape, "cuda" if cuda else "cpu", a, seq)))


def summarize(runs: dict[str, list[dict]], shape: str, device: str, a, seq: float) -> dict:
    """Medians per variant; ratios of tokens/s, tokens per CPU-second and peak memory to TRL."""
    import statistics

    def med(which, key):
        vals = [r[key] for r in runs[which] if key in r]
        return round(statistics.median(vals), 1) if vals else None

    keys = ("tokens_per_s", "tokens_per_cpu_s", "peak_rss_mb", "peak_gpu_mb", "mfu")
    out = {"shape": shape, "device": device, "batch": a.batch, "steps": a.steps, "repeats": a.repeats,
           "mean_tokens": round(seq), "runs": {w: {k: med(w, k) for k in keys if med(w, k) is not None} for w in runs}}
    if "trl" in runs:
        ref = out["runs"]["trl"]
        out["vs_trl"] = {w: {k: round(v / ref[k], 3) for k, v in r.items() if k in ref and ref[k]}
                         for w, r in out["runs"].items() if w != "trl"}
    return out


if __name__ == "__main__":
    main()
