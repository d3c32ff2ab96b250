"""Training from in-memory examples: how `viscodex demo` pre-trains and fine-tunes its tiny trio
(the base and the coder are LLMs, which `trainer.run_train`, a VLM fine-tune from records on
disk, does not train; the demo's SFT of its VLM variants is run_train's). Chat turns and task
samples are encoded by the SFT pipeline's own `data.Encoder` and batched by its `SFTCollator`;
only raw pre-training text (loss on every token) has an encoder here. `fit` is transformers'
Trainer on CPU with a progress line and an ETA.

A task is anything with `messages(sample, answer=True)` (a chat) and `uses_image`; a sample has
`target` (the answer) and `image`.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from .._util.quiet import quiet_transformers
from .data import Sample


log = logging.getLogger(__name__)


def chat_sample(prompt: str, answer: str) -> Sample:
    """A text-only chat turn, for data.Encoder (the loss covers the answer and its end token)."""
    return Sample([{"role": "user", "content": [{"type": "text", "text": prompt}]},
                   {"role": "assistant", "content": [{"type": "text", "text": answer}]}], [])


def task_sample(task, sample) -> Sample:
    """A toy task's sample as the model sees it at evaluation (the task's own messages), for data.Encoder."""
    return Sample(task.messages(sample, answer=True), [sample.image] if task.uses_image else [], task.name)


def encode_raw(tok, text: str) -> dict[str, torch.Tensor]:
    """A raw document (pre-training): loss on every token; in the form data.Encoder gives."""
    ids = torch.tensor(tok(text + "<|endoftext|>", add_special_tokens=False)["input_ids"], dtype=torch.long)
    return {"input_ids": ids, "labels": ids.clone(), "mm_token_type_ids": torch.zeros(len(ids), dtype=torch.int32)}


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
