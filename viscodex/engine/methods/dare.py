"""DARE: drop each entry of every task vector with probability p and rescale the survivors by
1/(1-p), then merge with task arithmetic or TIES (Yu et al. 2024).

Randomness: the masks are drawn on the CPU from the engine's generator (seeded from the recipe's
`seed`), one draw per expert per tensor in plan order, so the same recipe and seed give the same
output bytes whether the merge runs on CPU or GPU. When the engine hands over a CUDA generator, a
CPU twin seeded with the same seed is used instead. p = 0 draws nothing and is exactly the chosen
combination method.
"""
from __future__ import annotations

import weakref

import torch

from .basic import task_arithmetic
from .registry import SCALE, Method, Param, register
from .taskvectors import apply, weighted_task_vectors
from .ties import DENSITY, ties, ties_task_vector

_CPU_TWINS: weakref.WeakKeyDictionary[torch.Generator, torch.Generator] = weakref.WeakKeyDictionary()


def cpu_generator(generator: torch.Generator | None) -> torch.Generator | None:
    """A CPU generator whose stream depends only on the seed of `generator`."""
    if generator is None or generator.device.type == "cpu":
        return generator
    twin = _CPU_TWINS.get(generator)
    if twin is None:
        twin = torch.Generator().manual_seed(generator.initial_seed())
        _CPU_TWINS[generator] = twin
    return twin


def drop_mask(shape, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Boolean keep-mask with P(keep) = 1 - p, drawn on the CPU."""
    return torch.rand(shape, generator=cpu_generator(generator), dtype=torch.float32) >= p


def dare_drop(tau: torch.Tensor, p: float, rescale: bool, generator) -> torch.Tensor:
    """tau with entries dropped with probability p (and the rest scaled by 1/(1-p) if `rescale`)."""
    keep = drop_mask(tau.shape, p, generator).to(tau.device)
    out = tau * keep
    if rescale and p < 1.0:
        out.div_(1.0 - p)
    return out


def dare(base, experts, weights, *, generator=None, drop_rate: float = 0.2, rescale: bool = True,
         combine: str = "task_arithmetic", density: float = 0.2, scale: float = 1.0) -> torch.Tensor:
    """theta_0 + scale * combine(DARE(tau_vlm), DARE(tau_coder))."""
    if drop_rate == 0.0:
        if combine == "ties":
            return ties(base, experts, weights, density=density, scale=scale)
        return task_arithmetic(base, experts, weights, scale=scale)
    ws = [w for w in weights if w != 0.0]
    taus = weighted_task_vectors(base, experts, [1.0 if w != 0.0 else 0.0 for w in weights])
    if not taus:
        return base.clone()
    taus = [dare_drop(t, drop_rate, rescale, generator) for t in taus]
    if combine == "ties":
        tau_m = ties_task_vector(taus, ws, density)
    else:
        tau_m = torch.zeros_like(taus[0])
        for t, w in zip(taus, ws):
            tau_m.add_(t, alpha=w)
    return apply(base, tau_m, scale)


register(Method(
    name="dare",
    fn=dare,
    reference="Yu et al. 2024, Language Models are Super Mario: Absorbing Abilities from Homologous Models "
              "as a Free Lunch (ICML 2024, arXiv 2311.03099)",
    params=(
        Param("drop_rate", float, 0.2, "probability of dropping each task-vector entry", min=0.0, max=0.999),
        Param("rescale", bool, True, "scale the kept entries by 1/(1-drop_rate)"),
        Param("combine", str, "task_arithmetic", "how the sparsified task vectors are merged",
              choices=("task_arithmetic", "ties")),
        DENSITY.__class__(DENSITY.name, DENSITY.type, DENSITY.default,
                          "with combine=ties: fraction of entries TIES keeps", min=0.0, max=1.0),
        SCALE,
    ),
    seeded=True,
))
