"""Batched generation for evaluation: the model's own processor and chat template, images per
sample, left padding, greedy decoding by default; on the GPU when there is one.

A CUDA out-of-memory error halves the batch and retries, so `--batch-size` is a ceiling, not a bet.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path

import torch

from .._util.quiet import quiet_transformers
from ..engine import arch
from .tasks import EvalError

log = logging.getLogger(__name__)

MAX_PIXELS = 1280 * 28 * 28  # Qwen2.5-VL's recommended upper bound per image; larger images are downscaled


def model_key(model: str | os.PathLike) -> str:
    """What identifies a model's weights for the result cache: the output hashes recorded in a
    viscodex_recipe.yaml, else the weight files' names, sizes and mtimes (local), else the id."""
    p = Path(model).expanduser()
    if not p.is_dir():
        return f"hub:{model}"
    from ..engine.recipe import RECIPE_FILE

    h = hashlib.sha256()
    rec = p / RECIPE_FILE
    files = None
    if rec.is_file():
        import yaml

        try:
            files = ((yaml.safe_load(rec.read_text()) or {}).get("output") or {}).get("files")
        except Exception:  # noqa: BLE001 - fall back to file stats
            files = None
    if files:
        h.update(json.dumps(files, sort_keys=True).encode())
        return "weights:" + h.hexdigest()[:24]
    for f in sorted(p.iterdir()):
        if f.suffix in (".safetensors", ".bin") or f.name == "config.json":
            st = f.stat()
            h.update(f"{f.name}|{st.st_size}|{st.st_mtime_ns}".encode())
    return "files:" + h.hexdigest()[:24]


def fit_pixels(img, max_pixels: int = MAX_PIXELS):
    """Downscale (keeping the aspect ratio) an image above `max_pixels`."""
    from PIL import Image

    w, h = img.size
    if w * h <= max_pixels:
        return img
    s = math.sqrt(max_pixels / (w * h))
    return img.resize((max(28, int(w * s)), max(28, int(h * s))), Image.BICUBIC)


class Generator:
    """A loaded model and its processor/tokenizer, answering chat prompts in batches."""

    def __init__(self, model: str | os.PathLike, *, device: str | None = None, dtype: str = "auto",
                 batch_size: int = 8, max_pixels: int = MAX_PIXELS):
        from transformers import AutoConfig

        self.path = str(model)
        self.key = model_key(model)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise EvalError("--device cuda requested but no CUDA device is available")
        self.batch_size, self.max_pixels = max(1, int(batch_size)), max_pixels
        try:
            cfg = AutoConfig.from_pretrained(self.path)
        except (OSError, ValueError) as e:
            raise EvalError(f"{self.path}: cannot load a model config ({e})") from e
        self.is_vlm = cfg.model_type in arch.VLM_MODEL_TYPES
        if dtype == "auto":
            torch_dtype = "auto" if self.device.type == "cuda" else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        with quiet_transformers():
            if self.is_vlm:
                from transformers import AutoModelForImageTextToText, AutoProcessor

                self.model = AutoModelForImageTextToText.from_pretrained(self.path, dtype=torch_dtype)
                self.processor = AutoProcessor.from_pretrained(self.path)
                self.tokenizer = self.processor.tokenizer
            else:
                from transformers import AutoModelForCausalLM, AutoTokenizer

                self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch_dtype)
                self.processor = self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model.to(self.device).eval()
        g = self.model.generation_config
        text_cfg = self.model.config.get_text_config()
        self.eos = g.eos_token_id if g.eos_token_id is not None else text_cfg.eos_token_id
        pad = g.pad_token_id if g.pad_token_id is not None else self.tokenizer.pad_token_id
        self.pad = pad if pad is not None else (self.eos[0] if isinstance(self.eos, list) else self.eos)

    def prompt(self, messages: list[dict]) -> str:
        if self.is_vlm:
            return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        flat = [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str) else
                 "".join(c.get("text", "") for c in m["content"] if c.get("type") == "text")} for m in messages]
        return self.tokenizer.apply_chat_template(flat, tokenize=False, add_generation_prompt=True)

    @torch.inference_mode()
    def _generate(self, prompts: list[str], images: list[list], max_new_tokens: int, sampling: dict) -> list[str]:
        flat = [fit_pixels(im, self.max_pixels) for ims in images for im in ims]
        if self.is_vlm:
            batch = self.processor(text=prompts, images=flat or None, return_tensors="pt", padding=True,
                                   padding_side="left")
        else:
            self.tokenizer.padding_side = "left"
            batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        kw = dict(max_new_tokens=int(max_new_tokens), pad_token_id=self.pad, eos_token_id=self.eos)
        kw.update(sampling or {"do_sample": False})
        with quiet_transformers():
            out = self.model.generate(**batch, **kw)
        return self.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)

    def generate(self, conversations: list[list[dict]], images: list[list], *, max_new_tokens: int,
                 sampling: dict | None = None) -> list[str]:
        """Answers for each (messages, images) pair, in order."""
        if any(images) and not self.is_vlm:
            raise EvalError(f"{self.path} is a text-only model; this task needs a vision-language model")
        prompts = [self.prompt(m) for m in conversations]
        out: list[str] = []
        i = 0
        while i < len(prompts):
            n = self.batch_size
            try:
                out += self._generate(prompts[i:i + n], images[i:i + n], max_new_tokens, sampling or {})
                i += n
            except torch.cuda.OutOfMemoryError:
                if n == 1:
                    raise
                torch.cuda.empty_cache()
                self.batch_size = max(1, n // 2)
                log.warning("CUDA out of memory at batch size %d; retrying with %d", n, self.batch_size)
        return out

    def close(self) -> None:
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


__all__ = ["Generator", "model_key", "fit_pixels", "MAX_PIXELS"]
