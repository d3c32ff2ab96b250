"""Element-wise methods: task arithmetic (VisCodex) and weight averaging."""
from __future__ import annotations

from typing import Sequence

import torch

from .registry import Method, Param, register


def _sums_to_one(weights: Sequence[float], scale: float = 1.0) -> bool:
    return abs(scale * sum(weights) - 1.0) < 1e-12


def task_arithmetic(base, experts, weights, *, generator=None, scale: float = 1.0) -> torch.Tensor:
    """theta_0 + scale * sum_i w_i (theta_i - theta_0).

    When the coefficients sum to one (VisCodex: lam + (1 - lam)) the base cancels and is not read;
    two experts are then a single `lerp`, which computes in float32 and rounds once even on bf16
    inputs, and is exact at the end points (lam = 1 returns the VLM's tensor bit for bit).
    Otherwise: (1 - scale*sum w) theta_0 + sum_i scale*w_i theta_i in float32 (same algebra).
    """
    coefs = [scale * w for w in weights]
    if _sums_to_one(weights, scale) and len(experts) == 2:
        return torch.lerp(experts[1], experts[0], coefs[0])
    out = torch.zeros(experts[0].shape, dtype=torch.float32, device=experts[0].device)
    for c, t in zip(coefs, experts):
        if c != 0.0:
            out.add_(t, alpha=c)
    if not _sums_to_one(weights, scale):
        out.add_(base, alpha=1.0 - sum(coefs))
    return out


def weight_average(base, experts, weights, *, generator=None) -> torch.Tensor:
    """mean_i theta_i (weights ignored: the plain model soup baseline)."""
    out = torch.zeros(experts[0].shape, dtype=torch.float32, device=experts[0].device)
    for t in experts:
        out.add_(t)
    return out.div_(len(experts))


register(Method(
    name="task_arithmetic",
    fn=task_arithmetic,
    reference="Ilharco et al. 2023, Editing Models with Task Arithmetic (arXiv 2212.04089); VisCodex (arXiv 2508.09945)",
    params=(Param("scale", float, 1.0, "global scale on the weighted sum of task vectors", min=-10.0, max=10.0),),
    uses_base=lambda w, p: not _sums_to_one(w, p.get("scale", 1.0)),
    elementwise=True,
    low_precision_ok=True,
))
register(Method(
    name="weight_average",
    fn=weight_average,
    reference="Wortsman et al. 2022, Model soups (arXiv 2203.05482)",
    uses_base=lambda w, p: False,
    elementwise=True,
    low_precision_ok=True,
))
