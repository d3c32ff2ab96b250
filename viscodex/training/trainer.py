"""`viscodex train`: supervised fine-tuning of a merged model with the vision side frozen.

VisCodex's second stage: the merged Qwen2.5-VL model is fine-tuned on MCD, updating only the
language backbone (vision encoder and projector, `visual.*`, are frozen; embeddings optionally).
Paper defaults: 2 epochs, AdamW, lr 1e-5, global batch 128 (through gradient accumulation), 8K
tokens. The loop is transformers' Trainer (accelerate underneath, so `accelerate launch` with the
FSDP or DeepSpeed configs in configs/ scales it out); viscodex supplies the data checks, the
prompt/label building (sft_data.py), the freezing and the recipe record.

Layout: checkpoints go to `--checkpoint-dir` (default `<out>-checkpoints`, kept for `--resume`);
the final model is written to a temporary folder and renamed to `--out` only when complete.
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
from ..errors import ViscodexError
from ..engine.recipe import RECIPE_FILE, Recipe

log = logging.getLogger(__name__)
torch = lazy_module("torch")  # on first use: the CLI imports this module for TrainConfig alone
INDEX_CACHE = "viscodex_data_index.json"
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
    extra_args: dict[str, Any] = field(default_factory=dict)  # passed to TrainingArguments as is

    def validate(self) -> TrainConfig:
        from .data import TRUNCATION

        for name in ("global_batch", "batch_size", "max_len", "save_steps", "logging_steps"):
            if int(getattr(self, name)) < 1:
                raise ViscodexError(f"--{name.replace('_', '-')} must be at least 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ViscodexError("--max-steps must be at least 1")
        if self.epochs <= 0:
            raise ViscodexError("--epochs must be positive")
        if self.learning_rate <= 0:
            raise ViscodexError("--lr must be positive")
        if self.truncation not in TRUNCATION:
            raise ViscodexError(f"--truncation must be one of {', '.join(TRUNCATION)}")
        if self.dtype not in TRAIN_DTYPES:
            raise ViscodexError(f"--dtype must be one of {', '.join(TRAIN_DTYPES)}")
        if not 0 <= self.warmup_ratio < 1:
            raise ViscodexError("--warmup-ratio must be in [0, 1)")
        from transformers import SchedulerType

        try:
            SchedulerType(self.lr_scheduler)
        except ValueError:
            raise ViscodexError(f"unknown --lr-scheduler {self.lr_scheduler!r}; choose from "
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
def param_role(name: str) -> str | None:
    """Role (arch.ROLE_RULES) of an in-memory parameter name of a Qwen2.5-VL model."""
    layout = "language_model" if name.startswith(("model.language_model.", "model.visual.")) else "legacy"
    m = arch.role_of(arch.to_canonical(name, layout))
    return m.role if m else None


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
        raise ViscodexError("the model has no vision parameters (visual.*): is it a Qwen2.5-VL model?")
    modules = ["visual (vision encoder and projector)"] + (["embeddings (embed_tokens, lm_head)"] if freeze_embeddings else [])
    return {"modules": modules, "trainable_params": n_train, "frozen_params": n_frozen}


def vision_without_grad(model) -> None:
    """Run the frozen vision tower under no_grad. With activation checkpointing, transformers
    hooks every sub-model's input embeddings (the tower's patch_embed too) to require grad, so the
    tower would otherwise be recorded, recomputed and back-propagated through for nothing."""
    inner = model
    while not hasattr(inner, "visual") and hasattr(inner, "model"):
        inner = inner.model
    visual = getattr(inner, "visual", None)
    if visual is None:
        raise ViscodexError("cannot find the vision tower (`visual`) of this model")
    visual.forward = torch.no_grad()(visual.forward)


# ---------------------------------------------------------------- trainer
def _make_trainer_class():
    from transformers import Trainer, TrainerCallback

    class LossLog(TrainerCallback):
        """Keeps the logged losses and makes sure the last step is logged."""

        def __init__(self):
            self.losses: list[tuple[int, float]] = []

        def on_step_end(self, args, state, control, **kw):
            if state.max_steps and state.global_step >= state.max_steps:
                control.should_log = True
            return control

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.losses.append((state.global_step, float(logs["loss"])))

    class VisionFrozenTrainer(Trainer):
        """Trainer whose text-only batches still run the (frozen) vision tower once under sharded
        training, so every rank issues the same FSDP / ZeRO-3 gathers (otherwise ranks that got
        no image would hang waiting for the ones that did)."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
            if "pixel_values" not in inputs and _sharded(self):
                loss = out[0] if return_outputs else out
                loss = loss + 0.0 * _dummy_vision_forward(model)
                out = (loss, out[1]) if return_outputs else loss
            return out

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            # transformers' plain (non-FSDP/DeepSpeed) resume loads the saved state dict with
            # load_state_dict(strict=False), but Qwen2.5-VL saves the Hub's key names
            # (visual.*, model.layers.*) while the module uses model.visual.*,
            # model.language_model.*: nothing would match and training would silently restart
            # from the input weights. Load with the names mapped, strictly.
            if self.is_fsdp_enabled or self.is_deepspeed_enabled:
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            load_renamed_checkpoint(model if model is not None else self.model, Path(resume_from_checkpoint))

    return VisionFrozenTrainer, LossLog


def load_renamed_checkpoint(model, folder: Path) -> None:
    """Load safetensors shards saved in the Hub's key layout into the in-memory module, strictly."""
    from safetensors.torch import load_file

    own = model.state_dict()
    by_canonical = {}
    for k in own:
        layout = "language_model" if k.startswith(("model.language_model.", "model.visual.")) else "legacy"
        by_canonical[arch.to_canonical(k, layout)] = k
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
        missing.discard("lm_head.weight")
    if missing:
        raise ViscodexError(f"{folder}: checkpoint lacks {len(missing)} tensor(s), e.g. {min(missing)}")


def _sharded(trainer) -> bool:
    if trainer.args.world_size <= 1:
        return False
    if getattr(trainer, "is_fsdp_enabled", False):
        return True
    ds = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    return bool(ds is not None and ds.zero_stage == 3)


def _dummy_vision_forward(model) -> torch.Tensor:
    """One 28x28 px image (4 patches -> 1 token) through the vision tower."""
    inner = model
    while not hasattr(inner, "get_image_features") and hasattr(inner, "module"):
        inner = inner.module
    cfg = inner.config.vision_config
    grid = torch.tensor([[1, cfg.spatial_merge_size, cfg.spatial_merge_size]])
    n, dim = int(grid.prod()), cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size**2
    p = next(iter(inner.model.visual.parameters()))
    px = torch.zeros(n, dim, dtype=p.dtype, device=p.device)
    feats = inner.get_image_features(pixel_values=px, image_grid_thw=grid.to(p.device))
    feats = getattr(feats, "pooler_output", feats)
    if isinstance(feats, (list, tuple)):
        feats = torch.cat(list(feats))
    return feats.float().sum()


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


def load_index(cfg: TrainConfig, source, encoder, work: Path, write: bool = True):
    """Check the records once; the result is cached in the checkpoint folder (resume, other ranks)."""
    from .data import DataIndex, build_index

    key = _index_key(cfg, encoder, len(source.records), source)
    cache = work / INDEX_CACHE
    if cache.exists():
        try:
            d = json.loads(cache.read_text())
            if d.get("key") == key:
                return DataIndex.from_json(d["index"])
        except (json.JSONDecodeError, KeyError, TypeError):
            pass
    idx = build_index(source, encoder, cfg.max_records, progress=cfg.progress)
    if write:
        work.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"key": key, "index": idx.to_json()}))
        os.replace(tmp, cache)
    return idx


def _input_dtype(src) -> torch.dtype:
    for name, t in src.tensors.items():
        if name.startswith("visual."):
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
    """Fine-tune `cfg.model` on `cfg.data` and write the model, processor and recipe to `cfg.out`."""
    from transformers import (
        AutoModelForImageTextToText,
        AutoProcessor,
        TrainingArguments,
    )

    from ..engine.merge import check_out, finalize
    from .data import DataError, Encoder, SFTCollator, SFTDataset, open_data
    from ..engine.sources import display_name, open_source

    t0 = time.perf_counter()
    cfg.validate()
    out = Path(cfg.out).expanduser().absolute()
    check_out(out, cfg.force)
    work = Path(cfg.checkpoint_dir).expanduser().absolute() if cfg.checkpoint_dir else out.parent / f"{out.name}-checkpoints"
    if cfg.resume and cfg.resume != "auto" and not Path(cfg.resume).expanduser().is_dir():
        raise ViscodexError(f"--resume {cfg.resume}: no such checkpoint folder")
    bf16 = auto_bf16() if cfg.bf16 is None else cfg.bf16
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
        optim="adamw_torch",
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
        include_num_input_tokens_seen="non_padding",
        use_cache=False,
        **cfg.extra_args,
    )
    world, rank = args.world_size, args.process_index  # as accelerate set them up
    acc = grad_accumulation(cfg.global_batch, cfg.batch_size, world)
    args.gradient_accumulation_steps = acc

    with args.main_process_first(desc="data"):
        source = open_data(cfg.data, cfg.images)
        index = load_index(cfg, source, encoder, work, write=args.process_index == 0)
    rep = index.report()
    skipped = ", ".join(f"{k} {v}" for k, v in rep["skipped"].items()) or "none"
    log.info("data %s: %d record(s), %d used, skipped: %s; %d truncated to %d tokens",
             source.name, rep["records"], rep["used"], skipped, rep["truncated"], cfg.max_len)
    for reason, ex in index.examples.items():
        log.info("  first %s: %s", reason, ex)
    if not index.valid:
        raise DataError(f"no usable records in {source.name} (skipped: {skipped})")
    dataset = SFTDataset(source, index, encoder)

    kw = {"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {}
    model = AutoModelForImageTextToText.from_pretrained(src.path, dtype=getattr(torch, cfg.dtype), **kw)
    frozen = freeze_for_sft(model, cfg.freeze_embeddings)
    vision_without_grad(model)
    log.info("trainable %.1fM parameters, frozen %.1fM (%s)", frozen["trainable_params"] / 1e6,
             frozen["frozen_params"] / 1e6, "; ".join(frozen["modules"]))

    Trainer, LossLog = _make_trainer_class()
    losses = LossLog()
    trainer = Trainer(model=model, args=args, train_dataset=dataset,
                      data_collator=SFTCollator(encoder.pad_id), callbacks=[losses])
    result = trainer.train(resume_from_checkpoint=resume_ckpt)
    state = trainer.state

    tmp = out.parent / f".{out.name}.viscodex-tmp-train"  # the same name on every rank
    if trainer.is_world_process_zero():
        shutil.rmtree(tmp, ignore_errors=True)
    model.config.use_cache = True
    if hasattr(model.config, "text_config"):
        model.config.text_config.use_cache = True
    trainer.save_model(str(tmp))  # every rank takes part (FSDP / ZeRO-3 gather); rank 0 writes
    training = None
    if trainer.is_world_process_zero():
        try:
            if _saved_dtypes(tmp) != {in_dtype}:
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
                "steps": int(state.global_step),
                "epochs": round(float(state.epoch or 0.0), 4),
                "hparams": {
                    "optimizer": "adamw_torch", "learning_rate": cfg.learning_rate, "epochs": cfg.epochs,
                    "max_steps": cfg.max_steps, "global_batch": cfg.batch_size * world * acc,
                    "per_device_batch": cfg.batch_size, "grad_accumulation": acc, "processes": world,
                    "max_len": cfg.max_len, "truncation": cfg.truncation, "lr_scheduler": cfg.lr_scheduler,
                    "warmup_ratio": cfg.warmup_ratio, "weight_decay": cfg.weight_decay,
                    "max_grad_norm": cfg.max_grad_norm, "seed": cfg.seed, "bf16": bf16, "dtype": cfg.dtype,
                    "gradient_checkpointing": cfg.gradient_checkpointing,
                    "min_pixels": encoder.min_pixels, "max_pixels": encoder.max_pixels,
                },
                "final_loss": round(final, 6) if final is not None else None,
                "mean_loss": round(float(result.training_loss), 6),
                "loss_history": [[s, round(v, 6)] for s, v in losses.losses[-50:]],
                "tokens_seen": tokens,
                "train_seconds": round(float(result.metrics.get("train_runtime", 0.0)), 2),
                "resumed_from": Path(resume_ckpt).name if isinstance(resume_ckpt, str) else None,
                "output_dtype": str(in_dtype).replace("torch.", ""),
                "versions": _versions(),
            }
            _write_recipe(src, tmp, training)
            finalize(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    seconds = time.perf_counter() - t0
    if rank == 0:
        log.debug("wrote %s (%d steps, final loss %s)", out, state.global_step,
                 training["final_loss"] if training else "?")
    return TrainResult(out, int(state.global_step), training["final_loss"] if training else None,
                       training or {}, seconds, trainer)


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
            raise ViscodexError(f"--resume auto: no checkpoint-* folder in {work}")
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


__all__ = ["TrainConfig", "TrainResult", "freeze_for_sft", "param_role", "run_train", "vision_without_grad"]
