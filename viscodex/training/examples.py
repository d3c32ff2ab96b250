"""Training on in-memory examples, at the toy world's scale: encoders for chat turns, raw text and
task samples, a collator, and `fit` (transformers' Trainer on CPU). `viscodex demo` trains its tiny
trio and fine-tunes its variants with these; `trainer.run_train` is the same on records from disk,
at full scale (GPUs, checkpoints, data index).

A task is anything with `messages(sample)` (a chat) and `uses_image`; a sample has `target` (the
answer) and `image`.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from .._util.quiet import quiet_transformers
from .data import IGNORE_INDEX

log = logging.getLogger(__name__)


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def encode_chat(tok, prompt: str, answer: str) -> dict:
    """A text-only chat turn; the loss covers the answer and its <|im_end|>."""
    p = _ids(tok, tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                          add_generation_prompt=True))
    a = _ids(tok, answer + "<|im_end|>\n")
    return {"input_ids": p + a, "labels": [IGNORE_INDEX] * len(p) + a}


def encode_raw(tok, text: str) -> dict:
    """A raw document (pre-training): loss on every token."""
    ids = _ids(tok, text + "<|endoftext|>")
    return {"input_ids": ids, "labels": list(ids)}


def encode_task(processor, task, sample) -> dict:
    """A task sample as the model sees it: chat template, processor-expanded image tokens."""
    tok = processor.tokenizer if hasattr(processor, "tokenizer") else processor
    prompt = tok.apply_chat_template(task.messages(sample), tokenize=False, add_generation_prompt=True)
    if task.uses_image:
        b = processor(text=[prompt], images=[sample.image], return_tensors="pt")
        p = b["input_ids"][0].tolist()
        extra = {"pixel_values": b["pixel_values"], "image_grid_thw": b["image_grid_thw"]}
    else:
        p, extra = _ids(tok, prompt), {}
    a = _ids(tok, sample.target + "<|im_end|>\n")
    return {"input_ids": p + a, "labels": [IGNORE_INDEX] * len(p) + a, **extra}


class ExampleCollator:
    """Right-pads a batch; concatenates image patches; marks image tokens for Qwen2.5-VL's M-RoPE
    (`image_token_id`; None for a text-only model, which takes no token types)."""

    def __init__(self, pad_id: int, image_token_id: int | None = None):
        self.pad_id, self.image_token_id = pad_id, image_token_id

    def __call__(self, feats: list[dict]) -> dict[str, torch.Tensor]:
        n = max(len(f["input_ids"]) for f in feats)
        ids = torch.full((len(feats), n), self.pad_id, dtype=torch.long)
        labels = torch.full((len(feats), n), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(feats), n), dtype=torch.long)
        for i, f in enumerate(feats):
            k = len(f["input_ids"])
            ids[i, :k] = torch.tensor(f["input_ids"])
            labels[i, :k] = torch.tensor(f["labels"])
            mask[i, :k] = 1
        batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
        if any("pixel_values" in f for f in feats):
            batch["pixel_values"] = torch.cat([f["pixel_values"] for f in feats if "pixel_values" in f])
            batch["image_grid_thw"] = torch.cat([f["image_grid_thw"] for f in feats if "image_grid_thw" in f])
        if self.image_token_id is not None:
            batch["mm_token_type_ids"] = (ids == self.image_token_id).long()
        return batch


class EtaProgress(TrainerCallback):
    """Logs progress with an ETA every ~10 % of the steps (and at least every
    `every_s` seconds), so a long CPU run is never silent."""

    def __init__(self, name: str, every_s: float = 20.0):
        self.name, self.every_s = name, every_s
        self.t0 = self.last = 0.0
        self.loss: float | None = None

    def on_train_begin(self, args, state, control, **kw):
        self.t0 = self.last = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            self.loss = logs["loss"]

    def on_step_end(self, args, state, control, **kw):
        step, total = state.global_step, max(1, state.max_steps)
        now = time.perf_counter()
        tenth = max(1, total // 10)
        if step < total and (step % tenth == 0 or now - self.last >= self.every_s):
            self.last = now
            spent = now - self.t0
            loss = f"  loss {self.loss:.3f}" if self.loss is not None else ""
            log.info("  %-8s %5d/%d steps (%3.0f%%)%s  %.0f s, ETA %.0f s", self.name, step, total,
                     100 * step / total, loss, spent, spent / step * (total - step))


def fit(name: str, model, data: list[dict], collator, *, lr: float, batch_size: int, seed: int, workdir: Path,
        steps: int | None = None, epochs: float | None = None, param_groups: list[dict] | None = None) -> dict:
    """Train with transformers' Trainer on CPU (AdamW, cosine schedule, short warm-up), logging
    progress with an ETA; returns steps, seconds and the first and last logged loss."""
    from transformers import PrinterCallback, Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(workdir), per_device_train_batch_size=batch_size, learning_rate=lr,
        max_steps=steps if steps else -1, num_train_epochs=epochs or 1.0, lr_scheduler_type="cosine",
        warmup_steps=0.05, weight_decay=0.0, logging_steps=10, save_strategy="no", report_to="none",
        use_cpu=True, seed=seed, data_seed=seed, disable_tqdm=True, dataloader_num_workers=0,
        remove_unused_columns=False, log_level="error", dataloader_pin_memory=False, train_sampling_strategy="group_by_length",
    )
    opt = torch.optim.AdamW(param_groups, lr=lr, weight_decay=0.0) if param_groups else None
    t0 = time.perf_counter()
    with quiet_transformers():
        trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collator,
                          optimizers=(opt, None), callbacks=[EtaProgress(name)])
        trainer.remove_callback(PrinterCallback)
        res = trainer.train()
    model.eval()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    dt = time.perf_counter() - t0
    if losses:
        log.info("  %-8s %4d steps  loss %.3f -> %.3f  (%.0fs)", name, res.global_step, losses[0], losses[-1], dt)
    return {"steps": int(res.global_step), "seconds": round(time.perf_counter() - t0, 1),
            "first_loss": round(losses[0], 4) if losses else None,
            "final_loss": round(losses[-1], 4) if losses else None}
