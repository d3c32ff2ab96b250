"""TIES-Merging: trim each task vector to its largest-magnitude entries, elect a sign per entry,
average the entries that agree with it (Yadav et al. 2023).

Weights: the elected sign is that of sum_i w_i trim(tau_i), and the disjoint mean is weighted,
sum_{i agrees} w_i tau_i / sum_{i agrees} |w_i| (mergekit's normalised TIES). Where both experts
agree this is task arithmetic; where one survives alone it enters at full strength, as in the paper.

Trimming keeps, per expert, the K = round(density * N) largest |tau_i| entries: of the tensor
(`topk: per_tensor`, MLLMerging's LLaMA-Factory code) or of all tensors the method merges
(`topk: global`, the flattened-model variant), found exactly by a two-pass radix select over the
float32 bit patterns (`GlobalMagnitudeThreshold`) so the whole model never sits in memory.
Entries tied with the threshold are kept too (as `abs >= kthvalue` in the reference code).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ...errors import MergeError
from .registry import SCALE, Method, Param, register
from .taskvectors import apply, weighted_task_vectors


def keep_count(numel: int, density: float) -> int:
    """How many entries trimming keeps."""
    return min(numel, max(0, int(density * numel + 0.5)))


def magnitude_threshold(tau: torch.Tensor, density: float) -> float:
    """The K-th largest |entry| (K = keep_count); +inf when nothing is kept, 0 when all are."""
    n = tau.numel()
    k = keep_count(n, density)
    if k == 0:
        return float("inf")
    if k >= n:
        return 0.0
    return float(torch.kthvalue(tau.detach().abs().flatten(), n - k + 1).values)


def trim(tau: torch.Tensor, density: float, threshold: float | None = None) -> torch.Tensor:
    """tau with all but its largest-magnitude entries set to zero."""
    if threshold is None:
        if density >= 1.0:
            return tau
        threshold = magnitude_threshold(tau, density)
    return tau * (tau.abs() >= threshold)


def elect_and_merge(trimmed: Sequence[torch.Tensor], weights: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(elected sign, weighted disjoint mean) of trimmed, unweighted task vectors."""
    total = torch.zeros_like(trimmed[0])
    for t, w in zip(trimmed, weights):
        total.add_(t, alpha=w)
    sign = torch.sign(total)
    num = torch.zeros_like(total)
    den = torch.zeros_like(total)
    for t, w in zip(trimmed, weights):
        e = t * w
        agree = (torch.sign(e) == sign) & (e != 0)
        num.add_(torch.where(agree, e, 0.0))
        den.add_(agree.to(den.dtype), alpha=abs(w))
    return sign, num.div_(den.clamp_min_(torch.finfo(den.dtype).tiny)).mul_(den > 0)


def ties_task_vector(taus: Sequence[torch.Tensor], weights: Sequence[float], density: float,
                     thresholds: Sequence[float] | None = None) -> torch.Tensor:
    """tau_m of TIES for unweighted task vectors `taus` (one per nonzero weight)."""
    ths = list(thresholds) if thresholds is not None else [None] * len(taus)
    trimmed = [trim(t, density, th) for t, th in zip(taus, ths)]
    return elect_and_merge(trimmed, weights)[1]


def ties(base, experts, weights, *, generator=None, density: float = 0.2, topk: str = "per_tensor",
         scale: float = 1.0, thresholds: Sequence[float] | None = None) -> torch.Tensor:
    """theta_0 + scale * TIES(tau_vlm, tau_coder)."""
    if topk == "global" and thresholds is None:
        raise MergeError("ties with topk=global needs per-expert magnitude thresholds from a pre-pass over all "
                         "tensors, which this merge engine did not provide; use topk=per_tensor")
    ws = [w for w in weights if w != 0.0]
    ths = None
    if topk == "global":
        ths = [th for th, w in zip(thresholds, weights) if w != 0.0]
    taus = weighted_task_vectors(base, experts, [1.0 if w != 0.0 else 0.0 for w in weights])
    if not taus:
        return base.clone()
    return apply(base, ties_task_vector(taus, ws, density, ths), scale)


# ----------------------------------------------------------------- topk: global
_HI = 1 << 16


def _bits(t: torch.Tensor) -> torch.Tensor:
    """int32 bit patterns of |t| in float32: for non-negative floats, ordered like the values."""
    return t.detach().abs().to(torch.float32).contiguous().view(torch.int32).flatten()


class GlobalMagnitudeThreshold:
    """Exact per-expert K-th largest |tau_i| over a stream of tensors, in two passes.

    Pass 0 counts the high 16 bits of every |tau_i| (65536 bins); the bin holding the wanted rank
    is then resolved exactly by counting the low 16 bits of that bin's entries in pass 1. Memory:
    two 65536-bin histograms per expert, whatever the model size.
    """

    passes = 2

    def __init__(self, n_experts: int, density: float):
        self.density = density
        self.n = [0] * n_experts
        self.hi = [torch.zeros(_HI, dtype=torch.int64) for _ in range(n_experts)]
        self.lo = [torch.zeros(_HI, dtype=torch.int64) for _ in range(n_experts)]
        self.bin: list[int | None] = [None] * n_experts
        self.rank_in_bin = [0] * n_experts

    def observe(self, pass_index: int, base, experts, weights=None) -> None:
        if base is None:
            raise MergeError("ties topk=global needs the base model's tensors")
        for i, x in enumerate(experts):
            self.observe_task_vector(pass_index, i, x - base)

    def observe_task_vector(self, pass_index: int, i: int, tau: torch.Tensor) -> None:
        b = _bits(tau)
        if pass_index == 0:
            self.n[i] += b.numel()
            self.hi[i] += torch.bincount(b >> 16, minlength=_HI).cpu()
        else:
            if pass_index == 1 and self.bin[i] is None:
                self._choose_bins()
            if self.bin[i] is None or self.bin[i] < 0:
                return
            sel = b[(b >> 16) == self.bin[i]] & 0xFFFF
            self.lo[i] += torch.bincount(sel, minlength=_HI).cpu()

    def _target(self, i: int) -> int | None:
        """1-based rank (ascending) of the threshold among |tau_i|; None when all or none are kept."""
        k = keep_count(self.n[i], self.density)
        if k == 0 or k >= self.n[i]:
            return None
        return self.n[i] - k + 1

    def _choose_bins(self) -> None:
        for i in range(len(self.n)):
            q = self._target(i)
            if q is None:
                self.bin[i] = -1
                continue
            cum = torch.cumsum(self.hi[i], 0)
            b = int(torch.searchsorted(cum, torch.tensor(q, dtype=torch.int64)))
            self.bin[i] = b
            self.rank_in_bin[i] = q - (int(cum[b - 1]) if b > 0 else 0)

    def thresholds(self) -> list[float]:
        out = []
        for i in range(len(self.n)):
            q = self._target(i)
            if q is None:
                out.append(float("inf") if keep_count(self.n[i], self.density) == 0 else 0.0)
                continue
            if self.bin[i] is None:
                raise MergeError("GlobalMagnitudeThreshold: pass 1 was not run")
            cum = torch.cumsum(self.lo[i], 0)
            low = int(torch.searchsorted(cum, torch.tensor(self.rank_in_bin[i], dtype=torch.int64)))
            bits = torch.tensor([(self.bin[i] << 16) | low], dtype=torch.int32)
            out.append(float(bits.view(torch.float32)))
        return out

    def result(self) -> dict:
        return {"thresholds": self.thresholds()}


def global_thresholds(task_vectors: callable, n_experts: int, density: float) -> list[float]:
    """Run both passes over `task_vectors()`, a callable returning a fresh iterable of per-tensor
    lists [tau_1, ..., tau_T] (e.g. reading them from disk each time)."""
    g = GlobalMagnitudeThreshold(n_experts, density)
    for p in range(g.passes):
        it: Iterable = task_vectors()
        for taus in it:
            for i, t in enumerate(taus):
                g.observe_task_vector(p, i, t)
    return g.thresholds()


def _prepass(params: dict):
    if params.get("topk") == "global":
        return GlobalMagnitudeThreshold(2, params["density"])
    return None


DENSITY = Param("density", float, 0.2, "fraction of each task vector's entries kept (largest magnitudes)", min=0.0, max=1.0)

register(Method(
    name="ties",
    fn=ties,
    reference="Yadav et al. 2023, TIES-Merging: Resolving Interference When Merging Models (NeurIPS 2023, arXiv 2306.01708)",
    params=(
        DENSITY,
        Param("topk", str, "per_tensor", "trim per tensor, or with one threshold per expert over all merged tensors",
              choices=("per_tensor", "global")),
        SCALE,
    ),
    prepass=_prepass,
))
