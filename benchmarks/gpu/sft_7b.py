"""SFT step throughput at real shape (issue 20): a random-weight Qwen2.5-VL in the 7B config, one GPU,
bf16, activation checkpointing, viscodex's training path (its Encoder, collator, freezing and
VisionFrozenTrainer on transformers' Trainer), a few optimizer steps on long multimodal records.

Records: each has one 448x448 image (256 image tokens) and a code answer; lengths are drawn
uniformly in [--min-len, --seq-len] tokens (image->code data such as MCD has a wide length spread,
which is what packing is for). Modes (`--modes`, each `NAME` or `NAME:ATTENTION`):
  padded  - --batch records per step, right-padded to the longest (`viscodex train`'s collator)
  packed  - as many records as fill --batch x --seq-len tokens, in one row with no padding and no
            attention across records (`viscodex train --packing`); with sdpa the block-diagonal mask
            is exact but dense (transformers has no flex_attention for Qwen2.5-VL; flash-attention
            skips the empty blocks where installed: --modes packed:flash_attention_2)
Reported per mode, over the steps after --warm: real (non-padding) tokens/s, model TFLOP/s and MFU
against the device's dense bf16 peak, peak CUDA memory, loss.

Model FLOPs per step (the usual accounting: no recomputation, no padding):
  text: 6 * N_matmul * T  +  6 * L * d * sum(T_i^2)   (causal attention: half of 12 L d T_i^2)
  vision (frozen, forward only under no_grad): 2 * N_vision * patches
N_matmul = backbone + lm_head parameters (the embedding lookup is not a matmul).

    python benchmarks/gpu/sft_7b.py --shape 7b --steps 6 --json out.json   # on the GPU
    python benchmarks/gpu/sft_7b.py --shape tiny --device cpu --steps 3    # smoke test (tests run it)
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import models  # noqa: E402

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}  # dense, datasheets
CODE_LINE = "    ax.bar(labels, values, color=colors[i % len(colors)], width=0.8)  # series {i}\n"


def peak_tflops(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def make_records(proc, n: int, min_len: int, max_len: int, image_px: int, seed: int):
    """Encoded training items with assistant-only labels, lengths uniform in [min_len, max_len]."""
    from PIL import Image

    from viscodex.training.data import Encoder, Sample

    enc = Encoder(proc, max_len=max_len, truncation="truncate")
    rng = random.Random(seed)
    img = Image.new("RGB", (image_px, image_px), (200, 80, 40))
    probe = enc.encode(Sample(messages=_messages(1), images=[img]))
    per_line = max(1, (len(enc.tokenizer(CODE_LINE.format(i=7))["input_ids"])))
    base = len(probe["input_ids"]) - per_line
    items = []
    for _ in range(n):
        target = rng.randint(min_len, max_len)
        lines = max(1, (target - base) // per_line)
        items.append(enc.encode(Sample(messages=_messages(lines), images=[img])))
    return items, enc


def _messages(lines: int) -> list[dict]:
    answer = "```python\nimport matplotlib.pyplot as plt\n" + "".join(CODE_LINE.format(i=i) for i in range(lines)) + "```"
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Write matplotlib code for this chart."}]},
            {"role": "assistant", "content": answer}]


def model_flops(counts: dict[str, int], layers: int, hidden: int, lengths: list[int], patches: int) -> float:
    n_matmul = counts["backbone"] + counts["embedding"] // 2  # lm_head only (untied 7B: half the embedding role)
    t = sum(lengths)
    return 6 * n_matmul * t + 6 * layers * hidden * sum(x * x for x in lengths) + 2 * counts["vision"] * patches


def profile_step(trainer, batch_items, collator, out_rows: int = 14) -> str:
    """One forward+backward of a batch under torch.profiler: the kernels where the step's time goes."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    model = trainer.model
    batch = {k: (v.to(model.device) if torch.is_tensor(v) else v) for k, v in collator(batch_items).items()}
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        torch.cuda.synchronize()
    model.zero_grad(set_to_none=True)
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=out_rows, max_name_column_width=60)


def run_mode(mode: str, args, proc, items, enc, device: str) -> dict:
    import torch
    from transformers import TrainerCallback, TrainingArguments

    from viscodex.training.collate import make_collator
    from viscodex.training.trainer import _make_trainer_class, freeze_for_sft, token_mean_loss, vision_without_grad

    mode, _, attn = mode.partition(":")
    attn = attn or args.attn
    collator = make_collator(proc, enc.pad_id, packing=mode == "packed")  # what run_train uses
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = models.build_model(args.shape, args.layers, proc, device, attn=attn)
    counts = models.param_counts(model)
    freeze_for_sft(model)
    vision_without_grad(model)
    text = model.config.text_config

    class Timer(TrainerCallback):
        def __init__(self):
            self.marks: list[float] = []

        def on_step_end(self, a, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self.marks.append(time.perf_counter())

    seen: list[dict] = []

    def spy(batch_items):
        batch = collator(batch_items)
        mask = batch.get("attention_mask")
        real = int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())
        lengths = [len(it["input_ids"]) for it in batch_items]
        patches = sum(int(it["image_grid_thw"].prod()) for it in batch_items if "image_grid_thw" in it)
        seen.append({"real": real, "lengths": lengths, "patches": patches, "shape": list(batch["input_ids"].shape)})
        return batch

    per_step = args.batch if mode == "padded" else None
    if mode == "packed":  # as many records per step as fill --batch rows of --seq-len (greedy, in order)
        per_step = max(1, int(args.batch * args.seq_len / (sum(len(i["input_ids"]) for i in items) / len(items))))
    targs = TrainingArguments(
        output_dir=str(Path(args.work) / f"ckpt-{mode}"), per_device_train_batch_size=per_step,
        max_steps=args.steps, learning_rate=1e-5, lr_scheduler_type="constant", optim=args.optim, bf16=cuda,
        activation_checkpointing=True, logging_steps=1, save_strategy="no", report_to="none",
        remove_unused_columns=False, label_names=["labels"], disable_tqdm=True, use_cache=False,
        dataloader_num_workers=0, seed=0)
    Trainer, LossLog = _make_trainer_class()
    timer, losses = Timer(), LossLog()
    trainer = Trainer(model=model, args=targs, train_dataset=items, data_collator=spy, callbacks=[timer, losses],
                      compute_loss_func=token_mean_loss)
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    if args.profile and cuda:
        print(f"--- profile of one {mode} ({attn}) step", flush=True)
        print(profile_step(trainer, items[:per_step], collator), flush=True)
    warm = min(args.warm, len(timer.marks) - 1)
    t_start = timer.marks[warm - 1] if warm > 0 else t0
    timed = seen[warm: len(timer.marks)]
    secs = timer.marks[-1] - t_start
    real = sum(s["real"] for s in timed)
    flops = sum(model_flops(counts, text.num_hidden_layers, text.hidden_size, s["lengths"], s["patches"]) for s in timed)
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = peak_tflops(name)
    res = {
        "mode": mode, "attn": attn, "device": name, "shape": args.shape, "layers": text.num_hidden_layers,
        "params": counts, "optim": args.optim, "records_per_step": per_step,
        "timed_steps": len(timed), "seconds": round(secs, 3), "wall_s": round(wall, 1),
        "real_tokens": real, "tokens_per_s": round(real / secs, 1),
        "padding_fraction": round(1 - real / max(1, sum(s["shape"][0] * s["shape"][1] for s in timed)), 3),
        "model_tflops_per_s": round(flops / secs / 1e12, 1),
        "mfu": round(flops / secs / 1e12 / peak, 4) if peak else None,
        "peak_tflops_assumed": peak,
        "peak_cuda_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if cuda else None,
        "losses": [round(v, 4) for _, v in losses.losses],
        "batch_shapes": [s["shape"] for s in timed],
    }
    del trainer, model
    if cuda:
        torch.cuda.empty_cache()
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="7b", choices=sorted(models.SHAPES))
    ap.add_argument("--layers", type=int, default=None, help="backbone depth (default: the real one)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seq-len", type=int, default=8192)
    ap.add_argument("--min-len", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=2, help="records per step (padded) = rows per step (packed)")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warm", type=int, default=2, help="first steps left out of the timing")
    ap.add_argument("--records", type=int, default=64)
    ap.add_argument("--image-px", type=int, default=448)
    ap.add_argument("--modes", default="padded,packed")
    ap.add_argument("--optim", default="adamw_torch_fused")
    ap.add_argument("--attn", default="sdpa")
    ap.add_argument("--work", default="/tmp/vx-sft7b")
    ap.add_argument("--profile", action="store_true", help="after the timed steps, profile one more (CUDA only)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    proc = models.processor(args.image_px)
    items, enc = make_records(proc, args.records, args.min_len, args.seq_len, args.image_px, seed=0)
    lens = sorted(len(i["input_ids"]) for i in items)
    print(f"{len(items)} records, tokens min {lens[0]} median {lens[len(lens) // 2]} max {lens[-1]}", flush=True)
    results = []
    for mode in args.modes.split(","):
        try:
            r = run_mode(mode, args, proc, items, enc, args.device)
        except Exception as e:  # one mode failing (an attention kernel, memory) must not lose the others
            import traceback

            traceback.print_exc()
            r = {"mode": mode, "error": f"{type(e).__name__}: {str(e)[:500]}"}
        results.append(r)
        print(json.dumps(r), flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    ok = [r for r in results if "tokens_per_s" in r]
    if ok:
        print(f"\nSFT step, {ok[0]['shape']} shape ({ok[0]['layers']} layers), {ok[0]['device']}, bf16, "
              f"activation checkpointing, {args.optim}")
        print(f"{'mode':8s} {'attention':15s} {'tokens/s':>9s} {'TFLOP/s':>8s} {'MFU':>6s} {'pad %':>6s} {'peak GB':>8s}  batch shapes")
        for r in ok:
            mfu = f"{r['mfu'] * 100:.1f}%" if r["mfu"] is not None else "-"
            print(f"{r['mode']:8s} {r['attn']:15s} {r['tokens_per_s']:>9.0f} {r['model_tflops_per_s']:>8.1f} {mfu:>6s} "
                  f"{r['padding_fraction'] * 100:>5.1f}% {r['peak_cuda_gb'] or 0:>8.1f}  {r['batch_shapes'][:2]}")


if __name__ == "__main__":
    main()
