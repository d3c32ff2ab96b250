"""`viscodex train`: supervised fine-tuning of a merged model with the vision side frozen.

VisCodex's second stage: the merged Qwen2.5-VL model is fine-tuned on MCD, updating only the
language backbone (vision encoder and projector, `visual.*`, are frozen; embeddings optionally).
Paper defaults: 2 epochs, AdamW, lr 1e-5, global batch 128 (through gradient accumulation), 8K
tokens. The loop is transformers' Trainer (accelerate underneath, so `accelerate launch` with the
FSDP or DeepSpeed configs in configs/ scales it out); viscodex supplies the data checks, the
prompt/label building (sft_data.py), the freezing and the recipe record.

Layout: checkpoints go to `--checkpoint-dir` (default `<out>-checkpoints`, kept for `--resume`);
the final model is written to a temporary folder and renamed to `--out` only when complete.

Scale-out pieces live in their own modules: the in-batch dummy image and packing (training/collate.py),
the sharded, resumable data check (training/index.py), LoRA (training/lora.py), the validation split,
optimizer and projector options (train_options.py). `torchrun ... --fsdp` needs no accelerate
config, and runs FSDP2 on CPU too (`_fsdp_on_cpu`).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .._util.lazy import lazy_module
from .._version import __version__
from ..engine import arch
from ..engine.arch import param_role
from ..errors import ViscodexError
from ..engine.recipe import RECIPE_FILE, Recipe
from .flags import arg

log = logging.getLogger(__name__)
torch = lazy_module("torch")  # on first use: the CLI imports this module for TrainConfig alone
TRAIN_DTYPES = ("float32", "bfloat16")


@dataclass
class TrainConfig:
    """Everything a run needs; paper hyperparameters are the defaults."""

    model: str  # merged model folder or Hub id
    data: str  # .json/.jsonl, folder, or Hub dataset id
    out: str
    images: str | None = None
    epochs: float = 2.0
    learning_rate: float = 1e-5
    global_batch: int = 128
    batch_size: int = 1  # per device
    max_len: int = 8192
    max_steps: int | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    truncation: str = "truncate"
    freeze_embeddings: bool = False
    lr_scheduler: str = "cosine"  # not stated in the paper; the common choice for this recipe
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 42
    bf16: bool | None = None  # None: on when the GPU supports it, off on CPU
    dtype: str = "float32"  # weights + optimizer state while training (float32 = fp32 master weights)
    gradient_checkpointing: bool = True
    save_steps: int = 500
    save_total_limit: int | None = 2
    logging_steps: int = 10
    resume: str | None = None  # "auto" (latest checkpoint) or a checkpoint folder
    checkpoint_dir: str | None = None
    max_records: int | None = None
    workers: int = 0
    attn_implementation: str | None = None
    force: bool = False
    progress: bool = True
    report_to: str = "none"
    # Padding-free packing: a micro-batch's records concatenated into one row, each with its own
    # positions and no attention across records (training/collate.py). Same records per step, no padding.
    packing: bool = False
    # FSDP2 full sharding of the decoder layers and vision blocks without an accelerate config
    # (`torchrun ... -m viscodex train --fsdp`); with `accelerate launch --config_file configs/fsdp.yaml`
    # the config's settings apply instead.
    fsdp: bool = False
    # Data check: stop after it (`--prepare-only`), processes per rank (default: cores / local ranks),
    # records per cached part (the unit of resuming)
    prepare_only: bool = False
    prepare_procs: int | None = None
    prepare_chunk: int = 4096
    # LoRA (peft) on the language backbone's linear layers; None = full fine-tuning. --qlora loads
    # the model in 4-bit NF4 (bitsandbytes, CUDA). --merge-lora writes a full checkpoint.
    lora_r: int | None = None
    lora_alpha: int | None = None  # default 2 * r
    lora_dropout: float = 0.0
    qlora: bool = False
    merge_lora: bool = False
    # Validation: a fraction of the checked records ("0.01") or a separate data file; eval loss every
    # eval_steps (default save_steps) and at the end, into the training record.
    eval_split: str | None = None
    eval_steps: int | None = None
    optim: str = "adamw_torch"  # any transformers optimizer name (adamw_torch_fused, adamw_8bit, ...)
    # Unfreeze the projector (visual.merger) with its own learning rate (default --lr); the encoder stays frozen.
    train_projector: bool = False
    projector_lr: float | None = None
    extra_args: dict[str, Any] = field(default_factory=dict)  # passed to TrainingArguments as is

    def validate(self) -> TrainConfig:
        from .data import TRUNCATION

        def need(ok: bool, field: str, what: str) -> None:
            if not ok:
                raise ViscodexError(f"{arg(field)} {getattr(self, field)!r}: {what}")

        for name in ("global_batch", "batch_size", "max_len", "save_steps", "logging_steps", "prepare_chunk"):
            need(int(getattr(self, name)) >= 1, name, "must be at least 1")
        for name in ("lora_r", "eval_steps", "prepare_procs", "max_steps"):  # None: not set
            need(getattr(self, name) is None or getattr(self, name) >= 1, name, "must be at least 1")
        if (self.merge_lora or self.qlora) and self.lora_r is None:
            raise ViscodexError(f"{arg('merge_lora' if self.merge_lora else 'qlora')} needs {arg('lora_r')} "
                                f"(the adapter rank)")
        from .options import check_optim, parse_eval_split

        parse_eval_split(self.eval_split)
        check_optim(self.optim)
        if self.train_projector and self.lora_r:
            raise ViscodexError(f"{arg('train_projector')} with {arg('lora_r')} is not supported: the adapter output "
                                f"would not hold the projector; train the projector with full fine-tuning")
        need(self.projector_lr is None or (self.train_projector and self.projector_lr > 0), "projector_lr",
             f"needs {arg('train_projector')} and must be positive")
        need(self.epochs > 0, "epochs", "must be positive")
        need(self.learning_rate > 0, "learning_rate", "must be positive")
        need(self.truncation in TRUNCATION, "truncation", f"must be one of {', '.join(TRUNCATION)}")
        need(self.dtype in TRAIN_DTYPES, "dtype", f"must be one of {', '.join(TRAIN_DTYPES)}")
        if self.packing:
            from .collate import check_packing

            check_packing(self.attn_implementation)
        need(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        from transformers import SchedulerType

        try:
            SchedulerType(self.lr_scheduler)
        except ValueError:
            raise ViscodexError(f"unknown {arg('lr_scheduler')} {self.lr_scheduler!r}; choose from "
                                f"{', '.join(s.value for s in SchedulerType)}") from None
        return self


@dataclass
class TrainResult:
    out: Path
    global_step: int
    final_loss: float | None
    training: dict  # the section written into viscodex_recipe.yaml
    seconds: float
    trainer: Any = field(default=None, repr=False)  # the transformers Trainer (optimizer state, loaders)


# ---------------------------------------------------------------- freezing
def freeze_for_sft(model, freeze_embeddings: bool = False) -> dict:
    """Freeze the vision encoder + projector (and optionally the embeddings / output head)."""
    frozen_roles = {"vision"} | ({"embedding"} if freeze_embeddings else set())
    n_train = n_frozen = 0
    unknown = []
    for name, p in model.named_parameters():
        role = param_role(name)
        if role is None:
            unknown.append(name)
        p.requires_grad_(role not in frozen_roles)
        if p.requires_grad:
            n_train += p.numel()
        else:
            n_frozen += p.numel()
    if unknown:
        log.warning("%d parameter(s) with no known role stay trainable, e.g. %s", len(unknown), unknown[0])
    vision = [n for n, p in model.named_parameters() if param_role(n) == "vision"]
    if not vision:
        raise ViscodexError(f"the model has no vision parameters ({arch.VISION_PREFIX}*): is it a Qwen2.5-VL model?")
    modules = [f"{arch.VISION_MODULE} (vision encoder and projector)"] + (["embeddings (embed_tokens, lm_head)"] if freeze_embeddings else [])
    return {"modules": modules, "trainable_params": n_train, "frozen_params": n_frozen}


def vision_without_grad(model, keep_projector: bool = False) -> None:
    """Run the frozen vision tower under no_grad. With activation checkpointing, transformers
    hooks every sub-model's input embeddings (the tower's patch_embed too) to require grad, so the
    tower would otherwise be recorded, recomputed and back-propagated through for nothing.
    `keep_projector`: only the encoder, so a trainable projector still gets gradients."""
    inner = model
    while not hasattr(inner, arch.VISION_MODULE) and hasattr(inner, "model"):
        inner = inner.model
    visual = getattr(inner, arch.VISION_MODULE, None)
    if visual is None:
        raise ViscodexError(f"cannot find the vision tower (`{arch.VISION_MODULE}`) of this model")
    if keep_projector:
        from .options import encoder_without_grad

        encoder_without_grad(visual)
        return
    visual.forward = torch.no_grad()(visual.forward)


# ---------------------------------------------------------------- trainer
def _make_trainer_class():
    from transformers import Trainer, TrainerCallback

    from .._util.atomic import raise_if_terminated

    class LossLog(TrainerCallback):
        """Keeps the logged losses and makes sure the last step is logged."""

        def __init__(self):
            self.losses: list[tuple[int, float]] = []
            self.eval_losses: list[tuple[int, float]] = []

        def on_step_end(self, args, state, control, **kw):
            raise_if_terminated()  # a SIGTERM whose first raise a __del__ swallowed still stops the run
            if state.max_steps and state.global_step >= state.max_steps:
                control.should_log = True
            return control

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.losses.append((state.global_step, float(logs["loss"])))
            if logs and "eval_loss" in logs:
                self.eval_losses.append((state.global_step, float(logs["eval_loss"])))

    class VisionFrozenTrainer(Trainer):
        """Trainer that resumes plain checkpoints strictly. (Order-safe collectives under FSDP /
        ZeRO-3 come from the collator: every batch holds an image, see training/collate.py.)"""

        projector_lr: float | None = None

        def create_optimizer(self, model=None):
            super().create_optimizer(model)
            if self.projector_lr is not None:
                from .options import split_projector_groups

                split_projector_groups(self.optimizer, self.model, self.projector_lr)
            return self.optimizer

        def create_accelerator_and_postprocess(self):
            super().create_accelerator_and_postprocess()
            _fsdp_on_cpu(self)

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            # transformers' plain (non-FSDP/DeepSpeed) resume loads the saved state dict with
            # load_state_dict(strict=False), but Qwen2.5-VL saves the Hub's key names
            # (visual.*, model.layers.*) while the module uses model.visual.*,
            # model.language_model.*: nothing would match and training would silently restart
            # from the input weights. Load with the names mapped, strictly.
            if self.is_fsdp_enabled or self.is_deepspeed_enabled or hasattr(self.model, "peft_config"):
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            load_renamed_checkpoint(model if model is not None else self.model, Path(resume_from_checkpoint))

    return VisionFrozenTrainer, LossLog


def token_mean_loss(outputs, labels, num_items_in_batch=None) -> torch.Tensor:
    """Causal-LM cross-entropy summed over label tokens and divided by the label tokens of the whole
    optimizer step (every micro-batch, every rank; the Trainer counts them). Qwen2.5-VL declares
    `accepts_loss_kwargs = False`, so the Trainer would otherwise average per micro-batch means:
    a 23-token and a 35-token record would weigh the same, and 1 process x batch 2, 2 processes x
    batch 1, padded and packed batches would all train differently."""
    from transformers.loss.loss_utils import ForCausalLMLoss

    logits = outputs["logits"]
    return ForCausalLMLoss(logits, labels, logits.shape[-1], num_items_in_batch=num_items_in_batch)


def _fsdp_on_cpu(trainer) -> None:
    """accelerate turns an FSDP request into FSDP only on accelerators: on CPU processes (gloo)
    it silently falls back to DDP. torch's FSDP2 itself runs on CPU, so `--fsdp` there switches
    the accelerator state to FSDP with the same plugin a GPU run gets; this is what lets the
    sharded path (wrapping, gathers, full-state-dict save) be exercised without GPUs."""
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = trainer.accelerator.state
    if trainer.args.fsdp_plugin_args is None or trainer.is_fsdp_enabled or state.distributed_type != DistributedType.MULTI_CPU:
        return
    state.fsdp_plugin = FullyShardedDataParallelPlugin(**trainer.args.fsdp_plugin_args)
    state.distributed_type = DistributedType.FSDP
    trainer.is_fsdp_enabled = True
    # torch's full-state-dict gather leaves CPU tensors sharded (DTensor) or as lazy collective
    # results that safetensors cannot read; gather them here (on every rank, in the same order).
    gather = trainer.accelerator.get_state_dict

    def materialised(model, unwrap=True):
        from torch.distributed.tensor import DTensor

        sd = gather(model, unwrap)
        out = {}
        for k, v in (sd or {}).items():
            v = v.full_tensor() if isinstance(v, DTensor) else v
            out[k] = torch.empty_like(v, memory_format=torch.contiguous_format).copy_(v)
        return out if sd else sd

    trainer.accelerator.get_state_dict = materialised


def load_renamed_checkpoint(model, folder: Path) -> None:
    """Load safetensors shards saved in the Hub's key layout into the in-memory module, strictly."""
    from safetensors.torch import load_file

    own = model.state_dict()
    by_canonical = {}
    for k in own:
        by_canonical[arch.canonical_name(k)] = k
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ViscodexError(f"{folder}: no model weights (*.safetensors) in this checkpoint")
    seen = set()
    for f in files:
        sd = {by_canonical.get(k, k): v for k, v in load_file(str(f)).items()}
        unknown = sorted(set(sd) - set(own))
        if unknown:
            raise ViscodexError(f"{f}: tensors the model does not have, e.g. {unknown[0]}")
        model.load_state_dict(sd, strict=False)
        seen |= set(sd)
    missing = set(own) - seen
    if model.config.get_text_config().tie_word_embeddings:
        missing.discard(arch.LM_HEAD_KEY)
    if missing:
        raise ViscodexError(f"{folder}: checkpoint lacks {len(missing)} tensor(s), e.g. {min(missing)}")


# ---------------------------------------------------------------- helpers
def auto_bf16() -> bool:
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def grad_accumulation(global_batch: int, batch_size: int, world: int) -> int:
    per_step = batch_size * world
    acc = max(1, round(global_batch / per_step))
    if acc * per_step != global_batch:
        log.warning("global batch %d is not a multiple of %d (batch size %d x %d process(es)); using %d",
                    global_batch, per_step, batch_size, world, acc * per_step)
    return acc


def _index_key(cfg: TrainConfig, encoder, n_records: int, source) -> str:
    p = Path(cfg.data).expanduser()
    files = sorted(p.glob("*.json*")) if p.is_dir() else [p] if p.is_file() else []
    stamp = [(f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in files]
    blob = json.dumps({"data": cfg.data, "images": cfg.images, "rev": source.revision, "n": n_records, "files": stamp,
                       "max_len": cfg.max_len, "min_px": encoder.min_pixels, "max_px": encoder.max_pixels,
                       "truncation": cfg.truncation, "max_records": cfg.max_records, "model": cfg.model,
                       "vocab": len(encoder.tokenizer), "viscodex": __version__}, sort_keys=True)
    import hashlib

    return hashlib.sha256(blob.encode()).hexdigest()


def load_index(cfg: TrainConfig, source, encoder, work: Path, rank: int = 0, world: int = 1):
    """Check the records once (sharded over ranks and processes, resumable); the result is cached
    in the checkpoint folder under a key of everything that decides it (training/index.py)."""
    from .index import INDEX_DIR, default_procs, prepare_index

    n = len(source.records) if cfg.max_records is None else min(cfg.max_records, len(source.records))
    key = _index_key(cfg, encoder, len(source.records), source)
    procs = cfg.prepare_procs or default_procs(int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    return prepare_index(source, encoder, work / INDEX_DIR / key[:20], n, rank=rank, world=world, procs=procs,
                         chunk=cfg.prepare_chunk, progress=cfg.progress and rank == 0)


def _input_dtype(src) -> torch.dtype:
    for name, t in src.tensors.items():
        if arch.is_vision_key(name):
            return t.torch_dtype
    return next(iter(src.tensors.values())).torch_dtype


def _load_recipe(src) -> Recipe | None:
    p = src.path / RECIPE_FILE
    if not p.exists() and src.repo_id:
        try:
            from huggingface_hub import hf_hub_download

            p = Path(hf_hub_download(src.repo_id, RECIPE_FILE, revision=src.revision))
        except Exception:  # no recipe in that repo: a plain VLM is fine to train
            return None
    return Recipe.load(p) if p.exists() else None


def _cast_checkpoint(folder: Path, dtype: torch.dtype) -> None:
    """Rewrite saved shards in `dtype` (the input model's), one shard in memory at a time."""
    from safetensors.torch import load_file, save_file

    from ..engine.safetensors_io import DTYPES

    name = {v: k for k, v in DTYPES.items()}[dtype]
    total = 0
    for f in sorted(folder.glob("*.safetensors")):
        sd = load_file(f)
        if all(t.dtype == dtype or not t.is_floating_point() for t in sd.values()):
            total += sum(t.numel() * t.element_size() for t in sd.values())
            continue
        sd = {k: (t.to(dtype) if t.is_floating_point() else t) for k, t in sd.items()}
        total += sum(t.numel() * t.element_size() for t in sd.values())
        save_file(sd, str(f), metadata={"format": "pt"})
    idx = folder / "model.safetensors.index.json"
    if idx.exists():
        d = json.loads(idx.read_text())
        d.setdefault("metadata", {})["total_size"] = total
        idx.write_text(json.dumps(d, indent=2) + "\n")
    cfgp = folder / "config.json"
    c = json.loads(cfgp.read_text())
    tname = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}.get(name, str(dtype).split(".")[-1])
    c["dtype"] = tname
    for sub in ("text_config", "vision_config"):
        if isinstance(c.get(sub), dict) and "dtype" in c[sub]:
            c[sub]["dtype"] = tname
    cfgp.write_text(json.dumps(c, indent=2, sort_keys=True) + "\n")


def _file_hashes(folder: Path) -> dict[str, str]:
    from ..engine.sources import sha256_file

    return {f.name: sha256_file(f) for f in sorted(folder.glob("*.safetensors"))}


def _versions() -> dict[str, str]:
    import accelerate
    import transformers

    return {"viscodex": __version__, "torch": str(torch.__version__), "transformers": transformers.__version__,
            "accelerate": accelerate.__version__}


# ---------------------------------------------------------------- the run
def run_train(cfg: TrainConfig) -> TrainResult:
    """Fine-tune `cfg.model` on `cfg.data` and write the model, processor and recipe to `cfg.out`.

    The output is an OutputFolder (viscodex/_util/atomic.py), like merge's: rank 0 holds the lock
    on `--out` for the whole run, removes what killed runs left, turns SIGTERM / SIGHUP into a
    clean exit and renames the finished temp folder into place; the other ranks only save into the
    temp folder they name alike (`job_tag`)."""
    import contextlib

    from .._util.atomic import OutputFolder, job_tag

    t0 = time.perf_counter()
    cfg.validate()
    folder = OutputFolder(cfg.out, force=cfg.force, sources=[cfg.model, cfg.data, cfg.images, cfg.checkpoint_dir],
                          tag=job_tag())
    writes = not cfg.prepare_only and int(os.environ.get("RANK", "0")) == 0
    with folder if writes else contextlib.nullcontext(folder.tmp) as tmp:
        res = _train_into(cfg, folder.out, tmp, t0)
    _leave_together()
    if res.training:
        log.debug("wrote %s (%d steps, final loss %s)", res.out, res.global_step, res.final_loss)
    return res


def _leave_together() -> None:
    """Every rank waits here until rank 0 has merged the adapter and renamed the output: a rank that
    exits first tears its gloo/NCCL threads down under the others (seen: SIGABRT "terminate called
    without an active exception" on rank 1 while rank 0 merged a LoRA adapter, and torchrun then
    killed rank 0)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _train_into(cfg: TrainConfig, out: Path, tmp: Path, t0: float) -> TrainResult:
    """The run, the model saved into `tmp` (rank 0 writes; every rank takes part in the save)."""
    from transformers import (
        AutoModelForImageTextToText,
        AutoProcessor,
        TrainingArguments,
    )

    from ..engine.sources import display_name, open_source
    from .collate import make_collator, packing_note
    from .data import DataError, DataIndex, Encoder, SFTDataset, open_data
    from .options import split_index

    work = Path(cfg.checkpoint_dir).expanduser().absolute() if cfg.checkpoint_dir else out.parent / f"{out.name}-checkpoints"
    if cfg.resume and cfg.resume != "auto" and not Path(cfg.resume).expanduser().is_dir():
        raise ViscodexError(f"{arg('resume')} {cfg.resume!r}: no such checkpoint folder")
    bf16 = auto_bf16() if cfg.bf16 is None else cfg.bf16
    if cfg.packing and packing_note(cfg.attn_implementation):
        log.warning(packing_note(cfg.attn_implementation))
    if bf16 and not torch.cuda.is_available():
        log.warning("--bf16 on CPU: autocast in bfloat16 on the CPU is slow")

    src = open_source(cfg.model, "vlm")
    if not src.is_vlm:
        raise ViscodexError(f"{src.name}: model_type {src.model_type!r} is not a vision-language model "
                            f"({', '.join(arch.VLM_MODEL_TYPES)}); train the merged model, not an LLM")
    in_dtype = _input_dtype(src)
    processor = AutoProcessor.from_pretrained(src.path)
    encoder = Encoder(processor, max_len=cfg.max_len, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels,
                      truncation=cfg.truncation)

    resume_ckpt = _resume_path(cfg, work)
    args = TrainingArguments(
        output_dir=str(work),
        per_device_train_batch_size=cfg.batch_size,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        optim=cfg.optim,
        **({"eval_strategy": "steps", "eval_steps": cfg.eval_steps or cfg.save_steps, "prediction_loss_only": True,
            "per_device_eval_batch_size": cfg.batch_size} if cfg.eval_split else {}),
        bf16=bf16,
        activation_checkpointing=cfg.gradient_checkpointing,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        data_seed=cfg.seed,
        dataloader_num_workers=cfg.workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        remove_unused_columns=False,
        label_names=["labels"],
        report_to=cfg.report_to,
        disable_tqdm=not cfg.progress,
        # packed rows have no padding (and no attention mask to count it by)
        include_num_input_tokens_seen="all" if cfg.packing else "non_padding",
        use_cache=False,
        # without GPUs, torchrun's processes would otherwise each run a separate 1-process job
        use_cpu=not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1,
        **_fsdp_args(cfg),
        **cfg.extra_args,
    )
    world, rank = args.world_size, args.process_index  # as accelerate set them up
    acc = grad_accumulation(cfg.global_batch, cfg.batch_size, world)
    args.gradient_accumulation_steps = acc

    # No barrier here: every rank reads the records and checks its share of them (load_index)
    source = open_data(cfg.data, cfg.images)
    index = load_index(cfg, source, encoder, work, rank=rank, world=world)
    rep = index.report()
    skipped = ", ".join(f"{k} {v}" for k, v in rep["skipped"].items()) or "none"
    log.info("data %s: %d record(s), %d used, skipped: %s; %d truncated to %d tokens",
             source.name, rep["records"], rep["used"], skipped, rep["truncated"], cfg.max_len)
    for reason, ex in index.examples.items():
        log.info("  first %s: %s", reason, ex)
    if not index.valid:
        raise DataError(f"no usable records in {source.name} (skipped: {skipped})")
    if cfg.prepare_only:
        return TrainResult(out, 0, None, {"data": {"name": source.name, **rep}}, time.perf_counter() - t0)
    eval_data, eval_name = _eval_data(cfg, source, encoder, work, rank, world)
    if isinstance(eval_data, DataIndex):  # a held-out part of --data
        index, eval_data = split_index(index, float(cfg.eval_split), cfg.seed)
        eval_data = SFTDataset(source, eval_data, encoder)
    dataset = SFTDataset(source, index, encoder)
    if eval_data is not None:
        log.info("validation: %d record(s) from %s", len(eval_data), eval_name)

    kw = {"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {}
    if cfg.qlora:
        from .lora import quantization_config

        kw["quantization_config"] = quantization_config()
    model = AutoModelForImageTextToText.from_pretrained(src.path, dtype=getattr(torch, cfg.dtype), **kw)
    frozen = freeze_for_sft(model, cfg.freeze_embeddings)
    if cfg.train_projector:
        from .options import unfreeze_projector

        n = unfreeze_projector(model)
        frozen["modules"][0] = f"{arch.VISION_MODULE} encoder (the projector {arch.PROJECTOR_MODULE} trains)"
        frozen = {**frozen, "trainable_params": frozen["trainable_params"] + n, "frozen_params": frozen["frozen_params"] - n}
    vision_without_grad(model, keep_projector=cfg.train_projector)
    if cfg.lora_r:
        from transformers import set_seed

        from .lora import add_lora

        set_seed(cfg.seed)  # the adapters' random init (the Trainer seeds only after this)
        model, frozen = add_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
    log.info("trainable %.1fM parameters, frozen %.1fM (%s)", frozen["trainable_params"] / 1e6,
             frozen["frozen_params"] / 1e6, "; ".join(frozen["modules"]))

    Trainer, LossLog = _make_trainer_class()
    losses = LossLog()
    trainer = Trainer(model=model, args=args, train_dataset=dataset, eval_dataset=eval_data,
                      data_collator=make_collator(processor, encoder.pad_id, packing=cfg.packing),
                      compute_loss_func=token_mean_loss,
                      callbacks=[losses])
    trainer.projector_lr = cfg.projector_lr
    result = trainer.train(resume_from_checkpoint=resume_ckpt)
    eval_final = float(trainer.evaluate()["eval_loss"]) if eval_data is not None else None
    state = trainer.state

    model.config.use_cache = True
    if hasattr(model.config, "text_config"):
        model.config.text_config.use_cache = True
    # inside tmp, so that it goes with tmp whatever happens
    adapter = tmp / ".viscodex-lora-adapter" if cfg.lora_r and cfg.merge_lora else None
    # every rank takes part (FSDP / ZeRO-3 gather); rank 0 writes. A peft model saves its adapter.
    trainer.save_model(str(adapter or tmp))
    training = None
    if trainer.is_world_process_zero():
        if adapter is not None:
            from .lora import merge_adapter

            merge_adapter(src.path, adapter, tmp)
            shutil.rmtree(adapter)
        if not (cfg.lora_r and not cfg.merge_lora) and _saved_dtypes(tmp) != {in_dtype}:
            _cast_checkpoint(tmp, in_dtype)
        (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle; the recipe holds the settings
        AutoProcessor.from_pretrained(src.path).save_pretrained(tmp)  # as shipped, untouched
        for f in ("generation_config.json",):
            if (src.path / f).exists() and not (tmp / f).exists():
                shutil.copyfile(src.path / f, tmp / f)
        final = losses.losses[-1][1] if losses.losses else None
        tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        training = {
            "model": display_name(cfg.model),
            "data": {"name": source.name, "revision": source.revision, "format": source.kind, **rep,
                     "skipped_while_loading": dict(dataset.runtime_skipped)},
            "frozen": frozen,
            # full: a complete checkpoint; lora-adapter: peft adapter files over `model`
            "output_kind": "lora-adapter" if cfg.lora_r and not cfg.merge_lora else "full",
            "steps": int(state.global_step),
            "epochs": round(float(state.epoch or 0.0), 4),
            "hparams": {
                "optimizer": cfg.optim, "learning_rate": cfg.learning_rate,
                "projector_lr": (cfg.projector_lr or cfg.learning_rate) if cfg.train_projector else None, "epochs": cfg.epochs,
                "max_steps": cfg.max_steps, "global_batch": cfg.batch_size * world * acc,
                "per_device_batch": cfg.batch_size, "grad_accumulation": acc, "processes": world,
                "max_len": cfg.max_len, "truncation": cfg.truncation, "lr_scheduler": cfg.lr_scheduler,
                "warmup_ratio": cfg.warmup_ratio, "weight_decay": cfg.weight_decay,
                "max_grad_norm": cfg.max_grad_norm, "seed": cfg.seed, "bf16": bf16, "dtype": cfg.dtype,
                "gradient_checkpointing": cfg.gradient_checkpointing,
                "min_pixels": encoder.min_pixels, "max_pixels": encoder.max_pixels,
                "packing": cfg.packing,
            },
            # NO, MULTI_CPU / MULTI_GPU (DDP), FSDP or DEEPSPEED: how the model was wrapped
            "distributed": "FSDP" if trainer.is_fsdp_enabled else "DEEPSPEED" if trainer.is_deepspeed_enabled
            else str(trainer.accelerator.distributed_type.value),
            "final_loss": round(final, 6) if final is not None else None,
            "mean_loss": round(float(result.training_loss), 6),
            "eval": None if eval_data is None else {
                "data": eval_name, "records": len(eval_data), "final_loss": round(eval_final, 6),
                "loss_history": [[st, round(v, 6)] for st, v in losses.eval_losses[-50:]]},
            "loss_history": [[s, round(v, 6)] for s, v in losses.losses[-50:]],
            "tokens_seen": tokens,
            "train_seconds": round(float(result.metrics.get("train_runtime", 0.0)), 2),
            "resumed_from": Path(resume_ckpt).name if isinstance(resume_ckpt, str) else None,
            "output_dtype": str(in_dtype).replace("torch.", ""),
            "versions": _versions(),
        }
        _write_recipe(src, tmp, training)
    seconds = time.perf_counter() - t0
    return TrainResult(out, int(state.global_step), training["final_loss"] if training else None,
                       training or {}, seconds, trainer)


def _eval_data(cfg: TrainConfig, source, encoder, work: Path, rank: int, world: int):
    """(what to validate on, its name): None, a DataIndex marker for a split of --data (split
    after the check), or the dataset of a separate --eval-split file (checked and cached likewise)."""
    from dataclasses import replace

    from .data import DataIndex, SFTDataset, open_data
    from .options import parse_eval_split

    ev = parse_eval_split(cfg.eval_split)
    if ev is None:
        return None, None
    if isinstance(ev, float):
        return DataIndex(), f"{ev:g} of {source.name}"
    ev_source = open_data(str(ev), cfg.images)
    ev_index = load_index(replace(cfg, data=str(ev), max_records=None), ev_source, encoder, work, rank, world)
    if not ev_index.valid:
        raise ViscodexError(f"{arg('eval_split')} {str(ev)!r}: no usable records")
    return SFTDataset(ev_source, ev_index, encoder), ev_source.name


def _fsdp_args(cfg: TrainConfig) -> dict:
    """TrainingArguments for `--fsdp`: what configs/fsdp.yaml sets, for runs without that file."""
    if not cfg.fsdp:
        return {}
    return {"fsdp": "full_shard", "fsdp_config": {
        "version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "transformer_layer_cls_to_wrap": ["Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"],
        "reshard_after_forward": True, "state_dict_type": "FULL_STATE_DICT"}}


def _saved_dtypes(folder: Path) -> set[torch.dtype]:
    from ..engine.safetensors_io import read_header

    out = set()
    for f in sorted(folder.glob("*.safetensors")):
        out |= {t.torch_dtype for t in read_header(f)[0].values()}
    return out


def _resume_path(cfg: TrainConfig, work: Path):
    if not cfg.resume:
        return None
    if cfg.resume == "auto":
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(str(work)) if work.is_dir() else None
        if last is None:
            raise ViscodexError(f"{arg('resume')} 'auto': no checkpoint-* folder in {work}")
        return last
    return str(Path(cfg.resume).expanduser().absolute())


def _write_recipe(src, folder: Path, training: dict) -> None:
    """The input's recipe with a `training` section and `output` describing the new weights."""
    recipe = _load_recipe(src)
    files = _file_hashes(folder)
    output = {"dtype": training["output_dtype"], "total_bytes": sum((folder / f).stat().st_size for f in files),
              "files": files}
    if recipe is None:
        log.warning("%s has no %s; writing one with the training section only", src.name, RECIPE_FILE)
        (folder / RECIPE_FILE).write_text(yaml.safe_dump({"training": training, "output": output}, sort_keys=False))
        return
    recipe.records = {**recipe.records, "training": training, "output": output}
    (folder / RECIPE_FILE).write_text(recipe.dump())


__all__ = ["TrainConfig", "TrainResult", "freeze_for_sft", "param_role", "run_train", "token_mean_loss",
           "vision_without_grad"]
