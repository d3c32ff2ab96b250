"""WUDI-Merging (Cheng et al. 2025) and OptMerge (Wei et al. 2025): choose tau_m to minimise the
interference loss over one weight matrix (m x n, PyTorch's (out, in) layout)

    L(tau_m) = sum_i ||(tau_m - T_i) K_i^T||_F^2

    WUDI:     T_i = tau_i,                      K_i = tau_i / ||tau_i||_F          (m x n)
    OptMerge: T_i = rank-r truncation of tau_i, K_i = S_r V_r^T / ||tau_i||_F    (r x n)
              (the reference's ||(tau_m - t_i) (S_r V_r^T)^T||, its "m x r form")

L is a quadratic, L = <X, X C> - 2 <X, D> + c0 with C = sum_i K_i^T K_i (n x n, acting on the input
side) and D = sum_i T_i K_i^T K_i (m x n). The iterative methods run torch.optim (Adam or SGD with
the reference's settings) on X with the exact gradient 2 (X C - D); the closed form solves X C = D.

Memory: the reference builds (tau_m - tau_i) tau_i^T, an m x m matrix (18944^2 for a 7B MLP
up-projection). Here C is applied either as the n x n matrix (when sum_i rank(K_i) >= n) or as
(X K^T) K through the stacked k x n factor K (when k < n), so the largest product is
m x min(k, n) and the largest square min(k, n)^2 <= (T * min(m, n))^2; D is formed per task as
(T_i K_i^T) K_i or T_i (K_i^T K_i), whichever square is smaller. Nothing m x m is formed when m is
the long side. (The loss is not symmetric in m and n, so the matrix is never transposed.)

Low-rank truncations use the eigendecomposition of the smaller Gram matrix in float64 (exact to
float32 for the kept top-r subspace, several times faster than a thin SVD on CPU and GPU).

Weights: the method sees w_i tau_i (see taskvectors.py), so targets scale with the recipe's
weights and the normalised projectors do not; with one expert left, tau_m = w tau exactly (the
loss is zero at the initialisation, which the methods return). A task vector that is zero on a
tensor (an expert that left it untouched) has no projector (its loss term is 0/0 in the papers'
form) and is left out for that tensor.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ...errors import MergeError
from .registry import Param, register_matrix_method
from .taskvectors import merge_interfering


# ----------------------------------------------------------------- the quadratic
@dataclass
class InterferenceQuadratic:
    """L(X) = sum_i ||(X - T_i) K_i^T||_F^2 in the bounded-memory form described above."""

    D: torch.Tensor  # m x n
    c0: float  # sum_i ||T_i K_i^T||^2
    C: torch.Tensor | None  # n x n, or None when K is used
    K: torch.Tensor | None  # k x n stacked factors, or None when C is used

    @classmethod
    def build(cls, targets: Sequence[torch.Tensor], factors: Sequence[torch.Tensor],
              dtype: torch.dtype = torch.float32) -> InterferenceQuadratic:
        n = targets[0].shape[1]
        k = sum(f.shape[0] for f in factors)
        use_c = k >= n
        D = torch.zeros(targets[0].shape, dtype=dtype, device=targets[0].device)
        C = torch.zeros((n, n), dtype=dtype, device=D.device) if use_c else None
        c0 = 0.0
        for t, f in zip(targets, factors):
            t, f = t.to(dtype), f.to(dtype)
            if f.shape[0] <= n:  # (T K^T) K: m x k_i
                tk = t @ f.T
                d = tk @ f
                c0 += float(tk.double().square().sum())
                del tk
            else:  # T (K^T K): n x n
                g = f.T @ f
                d = t @ g
                c0 += float((d.double() * t.double()).sum())
                if use_c:
                    C += g
                del g
            if use_c and f.shape[0] <= n:
                C += f.T @ f
            D += d
            del d
        K = None if use_c else torch.cat([f.to(dtype) for f in factors], 0)
        return cls(D, c0, C, K)

    @property
    def dtype(self) -> torch.dtype:
        return self.D.dtype

    def apply_c(self, x: torch.Tensor) -> torch.Tensor:
        if self.C is not None:
            return x @ self.C
        return (x @ self.K.T) @ self.K

    def loss(self, x: torch.Tensor) -> float:
        x = x.detach().to(self.dtype)
        xc = self.apply_c(x)
        return float((x.double() * (xc.double() - 2 * self.D.double())).sum()) + self.c0

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply_c(x).sub_(self.D).mul_(2.0)

    def solve(self, x0: torch.Tensor, rcond: float = 1e-6, ridge: float = 0.0) -> torch.Tensor:
        """The minimiser of L + mu ||X - x0||_F^2 (mu = ridge * mean eigenvalue of C, Tikhonov
        regularisation toward x0): x0 + (D - x0 C)(C + mu I)^-1. With ridge 0 it is the exact
        minimiser of L closest to x0 (eigenvalues of C below rcond * max are treated as zero)."""
        x0 = x0.to(self.dtype)
        r = self.D - self.apply_c(x0)
        n = self.D.shape[1]
        if self.C is not None:
            lam, q = torch.linalg.eigh(self.C.double())
        else:
            # C = K^T K = V diag(lam) V^T with V = K^T W diag(lam)^-1/2 from K K^T = W diag(lam) W^T;
            # r's rows lie in the row space of K, so (C + mu I)^-1 acts on them through V alone
            lam, w = torch.linalg.eigh((self.K @ self.K.T).double())
        mu = ridge * float(lam.clamp_min(0).sum()) / n
        keep = lam > rcond * lam.max().clamp_min(torch.finfo(torch.float64).tiny)
        lam = lam[keep]
        if self.C is not None:
            q = q[:, keep].to(self.dtype)
        else:
            q = ((self.K.T @ w[:, keep].to(self.dtype)) / lam.sqrt().to(self.dtype))
        return x0 + ((r @ q) / (lam + mu).to(self.dtype)) @ q.T


# ----------------------------------------------------------------- targets and factors
def _norm(t: torch.Tensor) -> float:
    n = float(torch.linalg.vector_norm(t))
    if n == 0.0:
        raise MergeError("a task vector is all zeros on this tensor: WUDI/OptMerge normalise by its norm; "
                         "use a policy rule to copy this tensor or a different method")
    return n


def top_subspace(a: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rank-r truncation of a, a factor K with K^T K = V_r S_r^2 V_r^T), from the eigendecomposition
    of the smaller Gram matrix in float64. When r >= min(m, n) nothing is truncated: (a, a)."""
    m, n = a.shape
    if r >= min(m, n):
        return a, a
    ad = a.to(torch.float64)
    if m >= n:
        _, v = torch.linalg.eigh(ad.T @ ad)
        v = v[:, -r:]  # V_r (eigh sorts ascending)
        av = ad @ v  # U_r S_r
        k = v.T * torch.linalg.vector_norm(av, dim=0)[:, None]  # S_r V_r^T
        t = av @ v.T
    else:
        _, u = torch.linalg.eigh(ad @ ad.T)
        u = u[:, -r:]
        k = u.T @ ad  # S_r V_r^T (up to the signs of rows, which K^T K ignores)
        t = u @ k
    return t.to(a.dtype), k.to(a.dtype)


def rank_for(shape, n_tasks: int, rank_fraction: float) -> int:
    r = min(shape)
    k = int(rank_fraction * r) if rank_fraction > 0 else r // n_tasks
    return max(1, min(r, k))


def wudi_parts(taus: Sequence[torch.Tensor]):
    return list(taus), [t / _norm(t) for t in taus]


def optmerge_parts(taus: Sequence[torch.Tensor], rank_fraction: float = 0.0, center: bool = False):
    """Targets and factors of OptMerge. `center` (the reference's full fine-tuning variant): targets
    are mean + truncation of (tau_i - mean); the projectors still come from tau_i itself."""
    r = rank_for(taus[0].shape, len(taus), rank_fraction)
    mean = torch.stack(list(taus)).mean(0) if center else None
    targets, factors = [], []
    for tau in taus:
        t, k = top_subspace(tau, r)
        nrm = _norm(tau)
        if center:
            t = top_subspace(tau - mean, r)[0] + mean
        targets.append(t)
        factors.append(k / nrm)
    return targets, factors


def init_vector(taus: Sequence[torch.Tensor], init: str) -> torch.Tensor:
    out = torch.stack(list(taus)).sum(0)
    return out.div_(len(taus)) if init == "mean" else out


def optimise(q: InterferenceQuadratic, x0: torch.Tensor, *, steps: int, optimizer: str, lr: float,
             momentum: float) -> torch.Tensor:
    """`steps` steps of torch.optim Adam/SGD on L from x0, with the exact gradient."""
    x = torch.nn.Parameter(x0.detach().to(torch.float32).clone())
    if optimizer == "adam":
        opt = torch.optim.Adam([x], lr=lr)
    else:
        opt = torch.optim.SGD([x], lr=lr, momentum=momentum)
    for _ in range(steps):
        x.grad = q.grad(x.detach())
        opt.step()
    return x.detach()


# ----------------------------------------------------------------- the methods
def wudi(base, experts, weights, *, generator=None, steps: int = 300, optimizer: str = "adam", lr: float = 1e-5,
         momentum: float = 0.9, init: str = "sum", scale: float = 1.0,
        fallback_scale: float | None = None) -> torch.Tensor:
    """theta_0 + scale * WUDI(w_i tau_i)."""
    def combine(taus):
        return optimise(InterferenceQuadratic.build(*wudi_parts(taus)), init_vector(taus, init), steps=steps,
                        optimizer=optimizer, lr=lr, momentum=momentum)

    return merge_interfering("wudi", base, experts, weights, scale, combine)


def optmerge(base, experts, weights, *, generator=None, steps: int = 300, optimizer: str = "sgd", lr: float = 1e-4,
             momentum: float = 0.9, init: str = "sum", rank_fraction: float = 0.0, center: bool = False,
             scale: float = 1.0,
        fallback_scale: float | None = None) -> torch.Tensor:
    """theta_0 + scale * OptMerge(w_i tau_i)."""
    def combine(taus):
        return optimise(InterferenceQuadratic.build(*optmerge_parts(taus, rank_fraction, center)),
                        init_vector(taus, init), steps=steps, optimizer=optimizer, lr=lr, momentum=momentum)

    return merge_interfering("optmerge", base, experts, weights, scale, combine)


def optmerge_closed_form(base, experts, weights, *, generator=None, rank_fraction: float = 0.0, center: bool = False,
                         init: str = "sum", rcond: float = 1e-6, ridge: float = 0.1, max_ratio: float = 4.0,
                         precision: str = "float64", scale: float = 1.0,
        fallback_scale: float | None = None) -> torch.Tensor:
    """theta_0 + scale * the ridge-regularised minimiser of OptMerge's loss (WUDI's with rank_fraction = 1).

    The unregularised minimiser D C^-1 is exact but ill-conditioned: C = sum_i K_i^T K_i has
    eigenvalues spanning many orders of magnitude, and directions where C is small get updates
    far larger than any task vector (1.1-15x task arithmetic on the tiny trio, 19-42x any input on
    tall random matrices, issue 16). Tikhonov regularisation toward the initialisation
    (min L + mu ||X - x0||^2, mu = ridge * mean eigenvalue of C; Hoerl & Kennard 1970; RegMean's
    alpha plays the same role, Jin et al. 2023, arXiv 2212.09849) keeps those directions at x0.
    A result whose largest entry still exceeds max_ratio times the largest weighted task-vector
    entry is refused (MergeError) rather than written."""
    def combine(taus):
        dt = torch.float64 if precision == "float64" else torch.float32
        q = InterferenceQuadratic.build(*optmerge_parts(taus, rank_fraction, center), dtype=dt)
        x = q.solve(init_vector(taus, init), rcond=rcond, ridge=ridge).to(torch.float32)
        check_update(x, taus, max_ratio)
        return x

    return merge_interfering("optmerge_closed_form", base, experts, weights, scale, combine)


def check_update(x: torch.Tensor, taus: Sequence[torch.Tensor], max_ratio: float) -> None:
    """Refuse an update out of all proportion to the inputs (the engine adds the tensor's name)."""
    top = max(float(t.abs().max()) for t in taus)
    got = float(x.abs().max())
    if max_ratio and got > max_ratio * top:
        raise MergeError(f"the merged update's largest entry {got:.3g} is {got / top:.1f}x the largest task-vector "
                         f"entry ({top:.3g}), above max_ratio {max_ratio:g}: the problem is ill-conditioned here; "
                         f"raise -p ridge (now regularising toward init) or use task_arithmetic for this tensor")


# ----------------------------------------------------------------- losses (for tests and reports)
def wudi_loss(tau_m: torch.Tensor, taus: Sequence[torch.Tensor]) -> float:
    return InterferenceQuadratic.build(*wudi_parts(taus), dtype=torch.float64).loss(tau_m)


def optmerge_loss(tau_m: torch.Tensor, taus: Sequence[torch.Tensor], rank_fraction: float = 0.0,
                  center: bool = False) -> float:
    return InterferenceQuadratic.build(*optmerge_parts(taus, rank_fraction, center), dtype=torch.float64).loss(tau_m)


# ----------------------------------------------------------------- registry
STEPS = Param("steps", int, 300, "optimisation steps per matrix", min=0, max=100000)
MOMENTUM = Param("momentum", float, 0.9, "SGD momentum", min=0.0, max=0.999)
RANK = Param("rank_fraction", float, 0.0,
             "rank kept per task vector as a fraction of min(m, n); 0 = 1/T as in the paper, 1 = no truncation (WUDI's loss)",
             min=0.0, max=1.0)
CENTER = Param("center", bool, False, "truncate tau_i - mean and add the mean back (the reference's full fine-tuning variant)")
# sum: the weighted task vectors already carry the recipe's weights (0.7 / 0.3), so their sum is
# the VisCodex update; OptMerge's paper takes the mean of unweighted vectors, which would halve it
INIT = Param("init", str, "sum", "starting point: sum or mean of the weighted task vectors", choices=("sum", "mean"))


def descent(optimizer: str, lr: float) -> tuple[Param, ...]:
    """The gradient-descent parameters of WUDI and OptMerge (their papers' optimiser and lr differ)."""
    return (STEPS, Param("optimizer", str, optimizer, "torch.optim optimiser", choices=("adam", "sgd")),
            Param("lr", float, lr, "learning rate", min=0.0, max=1.0), MOMENTUM, INIT)


register_matrix_method(
    "wudi", wudi, "Cheng et al. 2025, Whoever Started the Interference Should End It: Guiding Data-Free Model "
                  "Merging via Task Vectors (ICML 2025, arXiv 2503.08099)",
    *descent("adam", 1e-5))
register_matrix_method(
    "optmerge", optmerge, "Wei et al. 2025, OptMerge: Unifying Multimodal LLM Capabilities and Modalities via Model "
                          "Merging (arXiv 2505.19892)",
    *descent("sgd", 1e-4), RANK, CENTER)
register_matrix_method(
    "optmerge_closed_form", optmerge_closed_form,
    "Exact minimiser (D C^-1) of the OptMerge/WUDI quadratic loss; Wei et al. 2025 (arXiv 2505.19892), "
    "Cheng et al. 2025 (arXiv 2503.08099)",
    RANK,
    CENTER,
    Param("init", str, "sum", "the point the ridge regularises toward (sum or mean of the weighted task vectors)",
          choices=("sum", "mean")),
    Param("rcond", float, 1e-6, "eigenvalues of C below rcond * max are treated as zero", min=0.0, max=1.0),
    Param("ridge", float, 0.1, "Tikhonov weight toward init, relative to C's mean eigenvalue (0 = exact minimiser)",
          min=0.0, max=1e6),
    Param("max_ratio", float, 4.0, "refuse updates larger than this multiple of the largest task-vector entry "
          "(0 = no check)", min=0.0, max=1e6),
    Param("precision", str, "float64", "dtype of the solve (float64 is exact; float32 is faster on consumer GPUs)",
          choices=("float64", "float32")),
)
