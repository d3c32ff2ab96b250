"""Optional parts of a `viscodex train` run: the validation split (`--eval-split`), the optimizer
(`--optim`), and a trainable projector with its own learning rate (`--train-projector`)."""
from __future__ import annotations

import random
from pathlib import Path

import torch

from ..engine import arch
from ..errors import ViscodexError
from .flags import arg
from .data import DataIndex

BNB_OPTIMIZERS = ("8bit", "bnb", "paged", "lion", "ademamix")  # parts of optimizer names bitsandbytes provides


# ---------------------------------------------------------------- validation split
def parse_eval_split(value: str | None) -> float | Path | None:
    """`--eval-split`: a fraction in (0, 1) of the checked records, or a separate data file/folder."""
    if value is None:
        return None
    try:
        frac = float(value)
    except ValueError:
        p = Path(value).expanduser()
        if not p.exists():
            raise ViscodexError(f"{arg('eval_split')} {value!r}: neither a fraction in (0, 1) nor an existing data file") from None
        return p
    if not 0 < frac < 1:
        raise ViscodexError(f"{arg('eval_split')} {value!r}: a fraction must be in (0, 1), e.g. 0.01")
    return frac


def split_index(index: DataIndex, frac: float, seed: int) -> tuple[DataIndex, DataIndex]:
    """(train, eval): a seeded random `frac` of the valid records (at least 1) held out."""
    n = len(index.valid)
    k = max(1, round(n * frac))
    if k >= n:
        raise ViscodexError(f"{arg('eval_split')} {frac!r} leaves no training records out of {n}")
    held = set(random.Random(seed).sample(range(n), k))

    def part(keep) -> DataIndex:
        pos = [i for i in range(n) if keep(i)]
        return DataIndex([index.valid[i] for i in pos], [index.lengths[i] for i in pos], total=len(pos))

    return part(lambda i: i not in held), part(lambda i: i in held)


# ---------------------------------------------------------------- optimizer
def check_optim(name: str) -> None:
    from transformers.training_args import OptimizerNames

    try:
        OptimizerNames(name)
    except ValueError:
        raise ViscodexError(f"unknown {arg('optim')} {name!r}; e.g. adamw_torch, adamw_torch_fused, adamw_8bit, adafactor, "
                            f"sgd (all: {', '.join(o.value for o in OptimizerNames)})") from None
    if any(part in name for part in BNB_OPTIMIZERS) and not name.startswith(("adamw_torch", "adamw_apex")):
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ViscodexError(f"{arg('optim')} {name!r} needs bitsandbytes: pip install bitsandbytes "
                                f"(or use adamw_torch / adamw_torch_fused)") from None


# ---------------------------------------------------------------- projector
def unfreeze_projector(model) -> int:
    """Make the projector trainable again after freeze_for_sft; returns its parameter count."""
    n = 0
    for name, p in model.named_parameters():
        if arch.is_projector(name):
            p.requires_grad_(True)
            n += p.numel()
    if not n:
        raise ViscodexError(f"{arg('train_projector')}: this model has no projector parameters ({arch.PROJECTOR_MODULE}.*)")
    return n


def encoder_without_grad(visual) -> None:
    """Run the vision encoder (patch embedding + blocks) under no_grad, leaving the projector's
    forward recorded so it gets gradients."""
    for m in [visual.patch_embed, *visual.blocks]:
        m.forward = torch.no_grad()(m.forward)


def split_projector_groups(optimizer, model, lr: float) -> None:
    """Move the projector's parameters into their own param groups (same settings, learning rate
    `lr`), before the scheduler is made (it records each group's initial lr)."""
    proj = {id(p) for n, p in model.named_parameters() if arch.is_projector(n) and p.requires_grad}
    for g in list(optimizer.param_groups):
        mine = [p for p in g["params"] if id(p) in proj]
        if not mine:
            continue
        g["params"] = [p for p in g["params"] if id(p) not in proj]
        optimizer.add_param_group({**{k: v for k, v in g.items() if k != "params"}, "params": mine, "lr": lr})
    optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]


__all__ = ["check_optim", "encoder_without_grad", "parse_eval_split", "split_index",
           "split_projector_groups", "unfreeze_projector"]
