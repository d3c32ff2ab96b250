"""The embedded default: a tiny trio trained locally, and the paper's claim reproduced at toy scale.

`train_trio` builds, from a seed and on a few CPU cores:
  base   a tiny Qwen2ForCausalLM pre-trained on a synthetic corpus (toy_tasks.pretraining_docs);
  coder  the base fine-tuned on the coding task (description -> SVG);
  vlm    a tiny Qwen2_5_VLForConditionalGeneration whose backbone starts from the base, trained
         (vision tower, projector and backbone together) on the grounding task (image -> description).
`run_demo` then merges (the real merge engine), evaluates base VLM / coder-swapped / merged and a
lambda sweep on fresh samples of three toy tasks, fine-tunes each of the three variants briefly on
image -> code, and writes a table (JSON, Markdown) and a plot.

Every training run is transformers' Trainer with tiny settings. Models are cached under the user
cache dir, keyed by a hash of the configuration and the code version, built in a temporary folder
and renamed into place.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from . import world as tt
from .._util.cache import cache_root
from ..errors import ViscodexError
from .._util.quiet import quiet_transformers
from .models import TRIO_VERSION, TinyConfig

log = logging.getLogger(__name__)
DEMO_VERSION = 1  # bump when training data or procedure change: invalidates cached trios
VARIANT_NAMES = {"vlm": "base VLM", "swapped": "coder-swapped", "merged": "merged"}


@dataclass(frozen=True)
class DemoConfig:
    """Model size and training budget of the demo trio, plus the evaluation settings."""

    seed: int = 0
    # model
    hidden_size: int = 96
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vision_hidden_size: int = 48
    vision_depth: int = 2
    image_size: int = 56
    # training (steps of batch_size samples)
    batch_size: int = 8
    pretrain_steps: int = 3000
    pretrain_lr: float = 1e-3
    coder_steps: int = 1200
    coder_lr: float = 1e-3
    vlm_steps: int = 1500
    vlm_lr: float = 1e-3  # language backbone
    vision_lr: float = 3e-3  # vision tower + projector, trained from scratch
    replay: float = 0.25  # fraction of base-corpus chat turns mixed into the coder's and the VLM's data
    # evaluation
    eval_samples: int = 64
    lam: float = 0.7
    lambdas: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7, 0.85, 1.0)
    # short SFT of each variant on image -> code (vision tower and projector frozen)
    sft_samples: int = 300
    sft_epochs: int = 2
    sft_lr: float = 1e-3

    def tiny(self) -> TinyConfig:
        return TinyConfig(hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
                          num_hidden_layers=self.num_hidden_layers, num_attention_heads=self.num_attention_heads,
                          num_key_value_heads=self.num_key_value_heads, vision_hidden_size=self.vision_hidden_size,
                          vision_depth=self.vision_depth, image_size=self.image_size, shard_size="5GB",
                          seed=self.seed)

    def trio_key(self) -> str:
        """Hash of everything the trio depends on (not the evaluation settings)."""
        train = {k: v for k, v in asdict(self).items() if not k.startswith(("eval", "lam", "sft"))}
        return _hash(json.dumps(train, sort_keys=True), _code_version())

    def key(self) -> str:
        """Hash of the whole configuration: names a demo's output folder."""
        return _hash(json.dumps(asdict(self), sort_keys=True), _code_version())


def _hash(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _code_version() -> str:
    """Versions plus the source of the modules that define the toy data and the models."""
    import transformers

    from . import models as tiny

    src = "".join(Path(m.__file__).read_text() for m in (tiny, tt))
    return f"viscodex{__version__}|trio{TRIO_VERSION}|demo{DEMO_VERSION}|tf{transformers.__version__}|torch{torch.__version__}|{_hash(src)}"


FULL = DemoConfig()
# A few times cheaper: for the test suite's end-to-end run of `viscodex demo --no-app --fast`.
FAST = DemoConfig(hidden_size=64, intermediate_size=128, vision_hidden_size=32, pretrain_steps=1200, coder_steps=400,
                  vlm_steps=600, eval_samples=32, lambdas=(0.0, 0.7, 1.0), sft_samples=96, sft_epochs=1)


# ---------------------------------------------------------------- encoding samples for training
IGNORE = -100


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def encode_chat(tok, prompt: str, answer: str) -> dict:
    """A text-only chat turn; the loss covers the answer and its <|im_end|>."""
    p = _ids(tok, tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                          add_generation_prompt=True))
    a = _ids(tok, answer + "<|im_end|>\n")
    return {"input_ids": p + a, "labels": [IGNORE] * len(p) + a}


def encode_raw(tok, text: str) -> dict:
    """A raw document (pre-training): loss on every token."""
    ids = _ids(tok, text + "<|endoftext|>")
    return {"input_ids": ids, "labels": list(ids)}


def encode_task(processor, task: tt.Task, sample: tt.Sample) -> dict:
    """A task sample as the VL model sees it: chat template, processor-expanded image tokens."""
    tok = processor.tokenizer if hasattr(processor, "tokenizer") else processor
    prompt = tok.apply_chat_template(task.messages(sample), tokenize=False, add_generation_prompt=True)
    if task.uses_image:
        b = processor(text=[prompt], images=[sample.image], return_tensors="pt")
        p = b["input_ids"][0].tolist()
        extra = {"pixel_values": b["pixel_values"], "image_grid_thw": b["image_grid_thw"]}
    else:
        p, extra = _ids(tok, prompt), {}
    a = _ids(tok, sample.target + "<|im_end|>\n")
    return {"input_ids": p + a, "labels": [IGNORE] * len(p) + a, **extra}


class Collator:
    """Right-pads a batch; concatenates image patches; marks image tokens for Qwen2.5-VL's M-RoPE."""

    def __init__(self, pad_id: int, image_token_id: int | None = None):
        self.pad_id, self.image_token_id = pad_id, image_token_id

    def __call__(self, feats: list[dict]) -> dict[str, torch.Tensor]:
        n = max(len(f["input_ids"]) for f in feats)
        ids = torch.full((len(feats), n), self.pad_id, dtype=torch.long)
        labels = torch.full((len(feats), n), IGNORE, dtype=torch.long)
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


# ---------------------------------------------------------------- training (transformers Trainer)
def fit(name: str, model, data: list[dict], collator, *, lr: float, batch_size: int, seed: int, workdir: Path,
        steps: int | None = None, epochs: float | None = None, param_groups: list[dict] | None = None) -> dict:
    """Train with transformers' Trainer on CPU (AdamW, cosine schedule, short warm-up)."""
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
                          optimizers=(opt, None))
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


def _pad_id(tok) -> int:
    return tok.convert_tokens_to_ids("<|endoftext|>")


def _replay(tok, demo: DemoConfig, seed: str, n_task: int) -> list[dict]:
    """Chat turns from the base's corpus mixed into a fine-tune (as real fine-tunes mix general
    instruction data), so the answer's form follows the prompt rather than the fine-tune."""
    n = int(n_task * demo.replay / (1 - demo.replay))
    return [encode_chat(tok, *d) for d in tt.pretraining_docs(f"replay-{seed}", n * 2) if isinstance(d, tuple)][:n]


def train_trio(out: str | os.PathLike, cfg: TinyConfig | None = None, demo: DemoConfig | None = None) -> dict[str, Path]:
    """Train base, coder and VLM (see module docstring) and write them under `out`.

    `cfg` gives the architecture (and seed) when `demo` is not given; training settings then come
    from the FULL demo configuration. Deterministic for a given configuration and thread count.
    """
    from .models import build_processor, build_tokenizer, new_base, new_vlm_from, save

    if demo is None:
        cfg = cfg or TinyConfig()
        demo = dataclasses.replace(FULL, seed=cfg.seed, hidden_size=cfg.hidden_size,
                                   intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_hidden_layers,
                                   num_attention_heads=cfg.num_attention_heads,
                                   num_key_value_heads=cfg.num_key_value_heads,
                                   vision_hidden_size=cfg.vision_hidden_size, vision_depth=cfg.vision_depth,
                                   image_size=cfg.image_size)
    cfg = demo.tiny() if cfg is None else cfg
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seed, bs = demo.seed, demo.batch_size
    scenes = tt.all_scenes()
    record: dict[str, Any] = {"config": asdict(demo), "key": demo.trio_key(), "threads": torch.get_num_threads()}
    t_all = time.perf_counter()
    with quiet_transformers(), tempfile.TemporaryDirectory(prefix="viscodex-train-") as work:
        work = Path(work)
        tok = build_tokenizer(cfg)
        proc = build_processor(tok, cfg)
        pad = _pad_id(tok)

        # 1. base: pre-training on raw and chat text
        base = new_base(cfg, tok).train()
        docs = tt.pretraining_docs(seed, demo.pretrain_steps * bs)
        data = [encode_chat(tok, *d) if isinstance(d, tuple) else encode_raw(tok, d) for d in docs]
        record["base"] = fit("base", base, data, Collator(pad), lr=demo.pretrain_lr, batch_size=bs, seed=seed,
                             steps=demo.pretrain_steps, workdir=work / "base")

        # 2. coder: the base fine-tuned on description -> SVG
        coder = new_base(cfg, tok)
        coder.load_state_dict(base.state_dict())
        coder.train()
        samples = tt.make_samples(tt.CODING, scenes, demo.coder_steps * bs, f"coder-{seed}")
        data = [encode_task(tok, tt.CODING, s) for s in samples] + _replay(tok, demo, f"coder-{seed}", len(samples))
        record["coder"] = fit("coder", coder, data, Collator(pad), lr=demo.coder_lr, batch_size=bs, seed=seed + 1,
                              steps=demo.coder_steps, workdir=work / "coder")

        # 3. vlm: base backbone + fresh vision tower, trained together on image -> description
        vlm = new_vlm_from(base, cfg, tok).train()
        samples = tt.make_samples(tt.GROUNDING, scenes, min(demo.vlm_steps * bs, 2048), f"vlm-{seed}",
                                  image_size=cfg.image_size)
        data = [encode_task(proc, tt.GROUNDING, s) for s in samples] + _replay(tok, demo, f"vlm-{seed}", len(samples))
        vis = [p for n, p in vlm.named_parameters() if "visual" in n]
        lm = [p for n, p in vlm.named_parameters() if "visual" not in n]
        groups = [{"params": vis, "lr": demo.vision_lr}, {"params": lm, "lr": demo.vlm_lr}]
        record["vlm"] = fit("vlm", vlm, data, Collator(pad, vlm.config.image_token_id), lr=demo.vlm_lr, batch_size=bs,
                            seed=seed + 2, steps=demo.vlm_steps, workdir=work / "vlm", param_groups=groups)

        paths = {"base": out / "base", "coder": out / "coder", "vlm": out / "vlm"}
        for p in paths.values():
            if p.exists():
                shutil.rmtree(p)
        save(base, tok, paths["base"], cfg)
        save(coder, tok, paths["coder"], cfg)
        save(vlm, tok, paths["vlm"], cfg, processor=proc)
    record["seconds"] = round(time.perf_counter() - t_all, 1)
    (out / "trio.json").write_text(json.dumps(record, indent=2) + "\n")
    return paths


def cached_trio(demo: DemoConfig = FULL, cache: Path | None = None, rebuild: bool = False) -> dict[str, Path]:
    """The trained trio for `demo`, built once under <cache>/trio-<key> (temp folder, then rename)."""
    root = Path(cache) if cache else cache_root()
    final = root / f"trio-{demo.trio_key()}"
    names = ("base", "coder", "vlm")
    if final.exists() and (final / "trio.json").exists() and not rebuild:
        return {n: final / n for n in names}
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        log.info("building the tiny trio (seed %d) in %s ...", demo.seed, final)
        train_trio(tmp, demo=demo)
        if final.exists() and rebuild:
            shutil.rmtree(final)
        if not final.exists():  # else another process finished the same build first: keep its copy
            os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {n: final / n for n in names}


# ---------------------------------------------------------------- evaluation
def load_model(path: Path):
    """(model, processor-or-tokenizer, is_vlm) for a folder written by save_pretrained."""
    from transformers import (
        AutoModelForCausalLM,
        AutoProcessor,
        AutoTokenizer,
        Qwen2_5_VLForConditionalGeneration,
    )

    cfg = json.loads((Path(path) / "config.json").read_text())
    with quiet_transformers():
        if cfg.get("model_type") in ("qwen2_5_vl", "qwen2_vl"):
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=torch.float32)
            return model.eval(), AutoProcessor.from_pretrained(path), True
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        return model.eval(), AutoTokenizer.from_pretrained(path), False


@torch.no_grad()
def generate(model, processor, task: tt.Task, samples: list[tt.Sample], batch_size: int = 32) -> list[str]:
    """Greedy answers to `samples` (left-padded batches)."""
    tok = processor.tokenizer if hasattr(processor, "tokenizer") else processor
    tok.padding_side = "left"
    outs = []
    for i in range(0, len(samples), batch_size):
        chunk = samples[i:i + batch_size]
        prompts = [tok.apply_chat_template(task.messages(s), tokenize=False, add_generation_prompt=True)
                   for s in chunk]
        if task.uses_image:
            b = processor(text=prompts, images=[s.image for s in chunk], return_tensors="pt", padding=True,
                          padding_side="left")
        else:
            b = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with quiet_transformers():
            gen = model.generate(**b, max_new_tokens=task.max_new_tokens, do_sample=False,
                                 pad_token_id=_pad_id(tok), eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"))
        outs += tok.batch_decode(gen[:, b["input_ids"].shape[1]:], skip_special_tokens=True)
    return outs


def evaluate(model, processor, is_vlm: bool, sets: dict[str, list[tt.Sample]]) -> dict[str, dict]:
    """Scores per task (image tasks only for VLMs); keeps a few outputs as examples."""
    res = {}
    for name, samples in sets.items():
        task = tt.TASKS[name]
        if task.uses_image and not is_vlm:
            continue
        outs = generate(model, processor, task, samples)
        scores = [task.score(o, s) for o, s in zip(outs, samples)]
        res[name] = {k: round(v, 4) for k, v in tt.summarize(scores).items()}
        res[name]["examples"] = [{"scene": s.scene.description(), "output": o} for o, s in list(zip(outs, samples))[:3]]
    return res


def eval_sets(demo: DemoConfig) -> dict[str, list[tt.Sample]]:
    return {name: tt.make_samples(task, tt.all_scenes(), demo.eval_samples, f"eval-{demo.seed}",
                                  image_size=demo.image_size) for name, task in tt.TASKS.items()}


def sft_image_code(src: Path, dst: Path, demo: DemoConfig) -> dict:
    """Short SFT of a VL model on image -> code (train combinations), vision tower + projector frozen."""
    model, proc, _ = load_model(src)
    for n, p in model.named_parameters():
        p.requires_grad_("visual" not in n)
    samples = tt.make_samples(tt.IMAGE_CODE, tt.all_scenes(), demo.sft_samples, f"sft-{demo.seed}",
                              image_size=demo.image_size)
    data = [encode_task(proc, tt.IMAGE_CODE, s) for s in samples]
    model.train()
    with tempfile.TemporaryDirectory(prefix="viscodex-sft-") as work:
        info = fit("sft", model, data, Collator(_pad_id(proc.tokenizer), model.config.image_token_id), lr=demo.sft_lr,
                   batch_size=min(demo.batch_size, 16), seed=demo.seed + 3, epochs=demo.sft_epochs,
                   workdir=Path(work))
    with quiet_transformers():
        model.save_pretrained(dst)
        proc.save_pretrained(dst)
        model.generation_config.save_pretrained(dst)
    info = {**info, "samples": demo.sft_samples, "epochs": demo.sft_epochs, "lr": demo.sft_lr,
            "frozen": "vision tower + projector"}
    _write_provenance(src, dst, info)
    return info


def _write_provenance(src: Path, dst: Path, training: dict) -> None:
    """Carry a merged variant's recipe over to its fine-tuned copy, with a `training` record."""
    from ..engine.recipe import RECIPE_FILE, Recipe

    if (src / RECIPE_FILE).exists():
        r = Recipe.load(src)
        r.records["training"] = {"task": "image_code (toy)", **training}
        (dst / RECIPE_FILE).write_text(r.dump())


# ---------------------------------------------------------------- the demo
def _merge(paths: dict[str, Path], out: Path, lam: float, variant: str = "merged") -> Path:
    from ..engine.merge import run_merge
    from ..engine.recipe import Recipe

    r = Recipe(vlm=str(paths["vlm"]), coder=str(paths["coder"]), base=str(paths["base"]), lam=lam, variant=variant,
               name=f"toy-{variant}" + (f"-lam{lam:g}" if variant == "merged" else ""))
    run_merge(r, out, progress=False, hash_inputs=False)
    return out


def _lam_dir(lam: float) -> str:
    return f"merged-lam{lam:g}"


def run_demo(out: str | os.PathLike | None = None, demo: DemoConfig = FULL, *, cache: Path | None = None,
             force: bool = False, threads: int | None = None) -> dict:
    """Build (or reuse) the trio, merge, evaluate, fine-tune the three variants, write the table.

    Writes into `out` (default <cache>/demo-<key>): results.json, results.md, accuracy_vs_lambda.png,
    variants/ (merged and swapped models) and sft/ (the three variants after the image -> code SFT).
    An existing `out` from the same configuration is reused as is unless `force`.
    """
    from ..engine.merge import finalize

    out = Path(out).expanduser().absolute() if out else cache_root() / f"demo-{demo.key()}"
    old = _read_results(out)
    if old is not None and not force:
        if old.get("key") == demo.key():
            log.info("reusing %s (same configuration; --force to redo)", out)
            return old
        raise ViscodexError(f"{out} holds results of another configuration; pass --force to overwrite it")
    if out.exists() and old is None and any(out.iterdir()) and not force:
        raise ViscodexError(f"{out} exists and is not a demo folder; choose another --out or pass --force")
    prev_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    tmp = out.parent / f".{out.name}.viscodex-tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        t = time.perf_counter()
        built = not ((Path(cache) if cache else cache_root()) / f"trio-{demo.trio_key()}" / "trio.json").exists()
        paths = cached_trio(demo, cache=cache)
        timings = {"trio": round(time.perf_counter() - t, 1), "trio_built": built}
        trio_record = json.loads((paths["base"].parent / "trio.json").read_text())

        t = time.perf_counter()
        log.info("merging: coder-swapped and lambda in %s ...", ", ".join(f"{x:g}" for x in _lams(demo)))
        var = {"swapped": _merge(paths, tmp / "variants" / "swapped", 0.0, "swapped")}
        for lam in _lams(demo):
            var[_lam_dir(lam)] = _merge(paths, tmp / "variants" / _lam_dir(lam), lam)
        timings["merge"] = round(time.perf_counter() - t, 1)

        t = time.perf_counter()
        sets = eval_sets(demo)
        models = {"base": paths["base"], "coder": paths["coder"], "vlm": paths["vlm"], **var}
        scores = {}
        for name, path in models.items():
            log.info("evaluating %s ...", name)
            scores[name] = evaluate(*load_model(path), sets)
        timings["eval"] = round(time.perf_counter() - t, 1)

        t = time.perf_counter()
        three = {"vlm": paths["vlm"], "swapped": var["swapped"], "merged": var[_lam_dir(demo.lam)]}
        sft, sft_scores = {}, {}
        for name, path in three.items():
            log.info("SFT of %s on %d image -> code samples ...", VARIANT_NAMES[name], demo.sft_samples)
            dst = tmp / "sft" / name
            sft[name] = sft_image_code(path, dst, demo)
            sft_scores[name] = evaluate(*load_model(dst), sets)
        timings["sft"] = round(time.perf_counter() - t, 1)
        timings["total"] = round(time.perf_counter() - t0, 1)

        results = {
            "key": demo.key(), "config": asdict(demo), "threads": torch.get_num_threads(),
            "trio": {k: trio_record.get(k) for k in ("key", "base", "coder", "vlm", "seconds", "threads")},
            "chance": round(tt.chance_attr_acc(), 4), "eval_samples": demo.eval_samples,
            "scores": scores, "sft": {"training": sft, "scores": sft_scores}, "timings": timings,
        }
        results["claims"] = claims(results)
        (tmp / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (tmp / "results.md").write_text(table_markdown(results))
        plot(results, tmp / "accuracy_vs_lambda.png")
        finalize(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        torch.set_num_threads(prev_threads)
    return _read_results(out)


def _lams(demo: DemoConfig) -> list[float]:
    return sorted(set(demo.lambdas) | {demo.lam})


def _read_results(out: Path) -> dict | None:
    p = out / "results.json"
    if not p.is_file():
        return None
    try:
        r = json.loads(p.read_text())
    except json.JSONDecodeError:
        return None
    r["out"] = str(out)
    return r


def variant_paths(results: dict) -> dict[str, Path]:
    """The three variants after the image -> code SFT, keyed as the app keys them (vlm, swapped, merged)."""
    out = Path(results["out"])
    return {k: out / "sft" / k for k in VARIANT_NAMES}


# ---------------------------------------------------------------- reporting
def _acc(results: dict, model: str, task: str, sft: bool = False) -> float | None:
    s = (results["sft"]["scores"] if sft else results["scores"]).get(model, {}).get(task)
    return None if s is None else s["attr_acc"]


def claims(results: dict) -> list[dict]:
    """The paper's qualitative claims, each with the two numbers it compares and whether they show it."""
    lam = results["config"]["lam"]
    m = _lam_dir(lam)

    def a(model, task, sft=False):
        return _acc(results, model, task, sft)

    # (claim, test, x, y, holds when x > y) ; "<" claims are written with the operands swapped
    rows = [
        ("swapping the backbone loses visual grounding", "grounding: base VLM > swapped",
         a("vlm", "grounding"), a("swapped", "grounding")),
        ("merging keeps visual grounding", f"grounding: merged (lambda {lam:g}) > swapped",
         a(m, "grounding"), a("swapped", "grounding")),
        ("merging adds the coder's skill", f"coding: merged (lambda {lam:g}) > base VLM",
         a(m, "coding"), a("vlm", "coding")),
        ("after SFT, merged beats the base VLM on image -> code", "image->code after SFT: merged > base VLM",
         a("merged", "image_code", True), a("vlm", "image_code", True)),
        ("after SFT, merged beats coder-swapped on image -> code", "image->code after SFT: merged > swapped",
         a("merged", "image_code", True), a("swapped", "image_code", True)),
    ]
    return [{"claim": c, "test": t, "values": [x, y], "holds": bool(x is not None and y is not None and x > y)}
            for c, t, x, y in rows]


def _fmt(s: dict | None) -> str:
    if s is None:
        return "-"
    return f"{s['attr_acc']:.2f} ({s['exact']:.2f})"


def table_markdown(results: dict) -> str:
    """The results as Markdown: main table, lambda sweep, claims, timings."""
    lam = results["config"]["lam"]
    sc, sft = results["scores"], results["sft"]["scores"]
    rows = [("base LLM", "base", None), ("coder LLM", "coder", None), ("base VLM", "vlm", "vlm"),
            ("coder-swapped", "swapped", "swapped"), (f"merged (lambda {lam:g})", _lam_dir(lam), "merged")]
    lines = [
        "# Toy VisCodex: base VLM vs coder-swapped vs merged",
        "",
        (f"Evaluation: {results['eval_samples']} samples per task, drawn apart from the training data (fresh random "
         "images; the coding prompts are the 64 scene descriptions, which the coder's training also covers), "
         "greedy decoding. Each cell: attribute accuracy (size, colour, shape; in brackets: all three right). "
         f"Chance attribute accuracy = {results['chance']:.2f}. Seed {results['config']['seed']}."),
        "",
        "| model | grounding (image -> description) | coding (description -> SVG) | image -> SVG, zero-shot | image -> SVG after SFT |",
        "|---|---|---|---|---|",
    ]
    for label, k, s in rows:
        r = sc.get(k, {})
        lines.append(f"| {label} | {_fmt(r.get('grounding'))} | {_fmt(r.get('coding'))} | {_fmt(r.get('image_code'))} | "
                     f"{_fmt(sft.get(s, {}).get('image_code')) if s else '-'} |")
    lines += ["", "## Lambda sweep (weight of the VLM's task vector; 1 = base VLM, 0 = coder backbone)", "",
              "| lambda | grounding | coding | image -> SVG, zero-shot |", "|---|---|---|---|"]
    for lm in sorted({float(k[len('merged-lam'):]) for k in sc if k.startswith("merged-lam")}):
        r = sc[_lam_dir(lm)]
        lines.append(f"| {lm:g} | {_fmt(r.get('grounding'))} | {_fmt(r.get('coding'))} | {_fmt(r.get('image_code'))} |")
    lines += ["", "## After the short SFT on image -> SVG (vision tower and projector frozen)", "",
              "| variant | grounding | coding | image -> SVG |", "|---|---|---|---|"]
    for k, label in VARIANT_NAMES.items():
        r = sft.get(k, {})
        lines.append(f"| {label} + SFT | {_fmt(r.get('grounding'))} | {_fmt(r.get('coding'))} | {_fmt(r.get('image_code'))} |")
    lines += ["", "## The paper's claims at toy scale", "", "| claim | test | values | shows? |", "|---|---|---|---|"]
    for c in results["claims"]:
        x, y = c["values"]
        lines.append(f"| {c['claim']} | {c['test']} | {x:.2f} vs {y:.2f} | {'yes' if c['holds'] else 'no'} |")
    t = results["timings"]
    lines += ["", (f"Time: {t['total']:.0f} s in all (trio {t['trio']:.0f} s - "
                   f"{'built' if t.get('trio_built') else 'reused from the cache'}, merges {t['merge']:.0f} s, "
                   f"evaluation {t['eval']:.0f} s, SFT {t['sft']:.0f} s) on {results['threads']} thread(s)."), ""]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    """Accuracy vs lambda for the three tasks, with the SFT results as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sc, sft = results["scores"], results["sft"]["scores"]
    lams = sorted({float(k[len("merged-lam"):]) for k in sc if k.startswith("merged-lam")})
    fig, ax = plt.subplots(figsize=(8.6, 4.2), dpi=110)
    for task, color in (("grounding", "tab:blue"), ("coding", "tab:orange"), ("image_code", "tab:green")):
        ys = [sc[_lam_dir(x)][task]["attr_acc"] for x in lams]
        ax.plot(lams, ys, "o-", color=color, label=tt.TASKS[task].title + (", zero-shot" if task == "image_code" else ""))
    pts = {"vlm": 1.0, "merged": results["config"]["lam"], "swapped": 0.0}
    ax.scatter([pts[k] for k in pts], [sft[k]["image_code"]["attr_acc"] for k in pts], marker="*", s=140,
               color="tab:green", edgecolor="black", zorder=5,
               label="image -> code after SFT\n(at 1: base VLM, 0.7: merged, 0: swapped)")
    ax.axhline(sc["coder"]["coding"]["attr_acc"], color="tab:orange", ls=":", lw=1, label="coder LLM, coding")
    ax.axhline(results["chance"], color="gray", ls="--", lw=1, label="chance")
    ax.set_xlabel("lambda (weight of the VLM's task vector)")
    ax.set_ylabel("attribute accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title("Toy VisCodex: merging the coder into the VLM")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

