"""Task vectors of one tensor, and how the recipe's weights enter every method.

All methods beyond plain task arithmetic work on weighted task vectors

    tau_i = w_i * (theta_i - theta_0)        (VisCodex: w = (lam, 1 - lam))

and return theta_0 + scale * tau_m. Experts with weight 0 are left out, so the number of task
vectors T (which sets ranks in TSV-M, Iso-CTS and OptMerge) counts only experts that take part:
lam = 1 merges the VLM alone. Methods that decompose or normalise each task vector (TSV-M,
Iso-CTS, WUDI, OptMerge) also leave out task vectors that are zero on a tensor. With one expert left and a method whose definition returns its task
vector unchanged, `single_expert` gives the result exactly (see `task_arithmetic`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ...errors import MergeError
from .basic import task_arithmetic


def weighted_task_vectors(base: torch.Tensor, experts: Sequence[torch.Tensor],
                          weights: Sequence[float]) -> list[torch.Tensor]:
    """[w_i * (theta_i - theta_0)] for the experts with w_i != 0."""
    if base is None:
        raise MergeError("this merge method needs the base model's tensor (set `base` in the recipe)")
    if len(experts) != len(weights):
        raise MergeError(f"{len(experts)} experts but {len(weights)} weights")
    out = []
    for t, w in zip(experts, weights):
        if t.shape != base.shape:
            raise MergeError(f"expert shape {list(t.shape)} differs from base shape {list(base.shape)}")
        if w != 0.0:
            out.append((t - base).mul_(w))
    return out


def nonzero_task_vectors(base, experts, weights) -> list[torch.Tensor]:
    """Weighted task vectors without those that are zero on this tensor (an expert that left it
    untouched): methods that decompose or normalise each task vector leave those out."""
    return [t for t in weighted_task_vectors(base, experts, weights) if bool(t.any())]


def active(weights: Sequence[float]) -> int:
    """Number of experts taking part (nonzero weight)."""
    return sum(1 for w in weights if w != 0.0)


def single_expert(base, experts, weights, scale: float) -> torch.Tensor:
    """theta_0 + scale * w_i tau_i for the one expert with nonzero weight, exact at scale*w_i = 1."""
    return task_arithmetic(base, experts, weights, scale=scale)


def apply(base: torch.Tensor, tau_m: torch.Tensor, scale: float) -> torch.Tensor:
    """theta_0 + scale * tau_m (in place on tau_m)."""
    return tau_m.mul_(scale).add_(base)


def merge_interfering(name: str, base, experts, weights, scale: float,
                      combine: Callable[[list[torch.Tensor]], torch.Tensor]) -> torch.Tensor:
    """theta_0 + scale * combine(taus) for the matrix methods that resolve interference between
    task vectors (TSV, WUDI, OptMerge). With one active expert, or one nonzero task vector on this
    tensor, there is nothing to resolve: that task vector is used unchanged (exact at scale 1)."""
    require_matrix(name, base)
    if active(weights) <= 1:
        return single_expert(base, experts, weights, scale)
    taus = nonzero_task_vectors(base, experts, weights)
    if len(taus) <= 1:
        return apply(base, taus[0], scale) if taus else base.clone()
    return apply(base, combine(taus), scale)


def require_matrix(name: str, t: torch.Tensor) -> None:
    if t.dim() != 2:
        raise MergeError(f"method {name!r} works on 2-D matrices, got shape {list(t.shape)} "
                         "(the engine sends other tensors to the fallback method)")
