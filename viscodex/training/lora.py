"""LoRA / QLoRA for `viscodex train` through peft: adapters on the language backbone only.

The targets are the linear layers whose weights have the `backbone` role in the same
architecture table the merge uses (arch.ROLE_RULES), so the vision tower and projector (which
have their own q/k/v and gate/up/down projections) and the embeddings are never adapted. With
`--merge-lora`, the output is a full checkpoint (base weights + B @ A * alpha / r), so `publish`
and the app use it unchanged. Without it, the output is the peft adapter folder.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..engine import arch
from ..errors import ViscodexError
from .flags import arg

log = logging.getLogger(__name__)


def backbone_linear_names(model) -> list[str]:
    """Full names of the nn.Linear modules of the language backbone (role `backbone`)."""
    names = [n for n, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) and arch.param_role(f"{n}.weight") == "backbone"]
    if not names:
        raise ViscodexError("no linear layers of the language backbone found to put LoRA adapters on")
    return names


def add_lora(model, r: int, alpha: int | None = None, dropout: float = 0.0):
    """Wrap `model` with LoRA adapters on the backbone's linear layers; everything else frozen."""
    from peft import LoraConfig, get_peft_model

    conf = LoraConfig(r=r, lora_alpha=alpha or 2 * r, lora_dropout=dropout, target_modules=backbone_linear_names(model),
                      bias="none")
    model = get_peft_model(model, conf)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    info = {"modules": ["everything except the LoRA adapters (language backbone linear layers)"],
            "trainable_params": n_train, "frozen_params": n_all - n_train,
            "lora": {"r": r, "alpha": conf.lora_alpha, "dropout": dropout, "targets": len(conf.target_modules)}}
    return model, info


def quantization_config():
    """4-bit NF4 weights for QLoRA (bitsandbytes, CUDA only)."""
    if not torch.cuda.is_available():
        raise ViscodexError(f"{arg('qlora')} needs a CUDA GPU (bitsandbytes 4-bit kernels); use --lora-r without --qlora on CPU")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ViscodexError(f"{arg('qlora')} needs bitsandbytes: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16,
                              llm_int8_skip_modules=list(arch.UNQUANTISED_MODULES))  # the tower and head stay unquantised


def merge_adapter(base: Path, adapter: Path, dest: Path) -> None:
    """Base weights + the saved adapter -> a full checkpoint in `dest` (float32 while merging;
    run_train casts the result back to the input's dtype, so untouched tensors come back bitwise)."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.save_pretrained(dest)


__all__ = ["add_lora", "backbone_linear_names", "merge_adapter", "quantization_config"]
