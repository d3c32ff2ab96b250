"""SVD-based methods on 2-D weight matrices: TSV-M (Gargiulo et al. 2025) and Iso-C / Iso-CTS
(Marczak et al. 2025). They see weighted task vectors w_i tau_i (see taskvectors.py); T is the
number of experts with nonzero weight (TSV-M and Iso-CTS also leave out a task vector that is zero
on the tensor: its singular vectors would be arbitrary).

All decompositions are exact thin SVDs (torch.linalg.svd, full_matrices=False) in float32 on the
merge device. Memory per tensor: a few m x n matrices plus their factors, never an m x m or
n x n beyond min(m, n)^2.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ...errors import MergeError
from .registry import Param, register_matrix_method
from .taskvectors import apply, merge_interfering, nonzero_task_vectors, require_matrix, weighted_task_vectors

def thin_svd(a: torch.Tensor):
    """(U, S, Vh) of a thin SVD in float32."""
    return torch.linalg.svd(a.to(torch.float32), full_matrices=False)


def polar(a: torch.Tensor) -> torch.Tensor:
    """The orthonormal-columns matrix nearest to `a` (orthogonal Procrustes): P Q^T from a = P S Q^T."""
    p, _, qh = thin_svd(a)
    return p @ qh


# ----------------------------------------------------------------- TSV-M
def tsv_factors(taus: Sequence[torch.Tensor], keep: int | None = None):
    """(U_perp, S_cat, V_perp) of TSV-M: per task vector its top-k singular triplets, k =
    floor(min(m, n) / T) unless `keep` is given; U's and V's concatenated and orthogonalised.
    tau_m = U_perp diag(S_cat) V_perp^T has rank <= T * k."""
    m, n = taus[0].shape
    k = keep if keep is not None else min(m, n) // len(taus)
    if k < 1:
        raise MergeError(f"tsv: a {m} x {n} matrix has no singular vectors to share among {len(taus)} task vectors")
    us, ss, vs = [], [], []
    for t in taus:
        u, s, vh = thin_svd(t)
        us.append(u[:, :k])
        ss.append(s[:k])
        vs.append(vh[:k].T)
    u_cat = torch.cat(us, 1)
    s_cat = torch.cat(ss)
    v_cat = torch.cat(vs, 1)
    del us, vs
    return polar(u_cat), s_cat, polar(v_cat)


def tsv_task_vector(taus: Sequence[torch.Tensor]) -> torch.Tensor:
    """TSV-M's merged task vector: U S V^T from the orthogonalised per-task factors."""
    u, s, v = tsv_factors(taus)
    return (u * s) @ v.T


def tsv(base, experts, weights, *, generator=None, scale: float = 1.0,
        fallback_scale: float | None = None) -> torch.Tensor:
    """theta_0 + scale * TSV-M(w_i tau_i). One expert: its task vector, unchanged."""
    return merge_interfering("tsv", base, experts, weights, scale, tsv_task_vector)


# ----------------------------------------------------------------- Iso-C / Iso-CTS
def iso_c_task_vector(taus: Sequence[torch.Tensor]) -> torch.Tensor:
    """mean(S) * U V^T for sum_i tau_i = U S V^T: the summed task vector with a flat spectrum."""
    total = torch.stack(list(taus)).sum(0) if len(taus) > 1 else taus[0]
    u, s, vh = thin_svd(total)
    return (u * s.mean()) @ vh


def iso_c(base, experts, weights, *, generator=None, scale: float = 1.0,
        fallback_scale: float | None = None) -> torch.Tensor:
    """theta_0 + scale * Iso-C(w_i tau_i)."""
    require_matrix("iso_c", base)
    taus = weighted_task_vectors(base, experts, weights)
    if not taus:
        return base.clone()
    return apply(base, iso_c_task_vector(taus), scale)


def iso_cts_task_vector(taus: Sequence[torch.Tensor], common_space_fraction: float = 0.8) -> torch.Tensor:
    """Iso-CTS: the top of SVD(sum_i tau_i) as common subspace, the remaining rank split equally
    among the tasks (each takes the top of SVD(tau_i - U_c U_c^T tau_i)), factors orthogonalised,
    spectrum flattened to its mean. The common size is rounded so the task part divides by T,
    as in the authors' code."""
    t = len(taus)
    m, n = taus[0].shape
    r = min(m, n)
    common = int(r * common_space_fraction)
    per_task = round((r - common) / t)
    common = r - per_task * t
    if common < 0:
        per_task, common = r // t, r - (r // t) * t
    total = torch.stack(list(taus)).sum(0) if t > 1 else taus[0]
    u, s, vh = thin_svd(total)
    u_c, s_c, v_c = u[:, :common], s[:common], vh[:common].T
    del u, vh, total
    us, ss, vs = [u_c], [s_c], [v_c]
    if per_task > 0:
        for tau in taus:
            resid = tau - u_c @ (u_c.T @ tau)
            ut, st, vht = thin_svd(resid)
            us.append(ut[:, :per_task])
            ss.append(st[:per_task])
            vs.append(vht[:per_task].T)
    u_perp, v_perp = polar(torch.cat(us, 1)), polar(torch.cat(vs, 1))
    s_mean = torch.cat(ss).mean()
    return (u_perp * s_mean) @ v_perp.T


def iso_cts(base, experts, weights, *, generator=None, common_space_fraction: float = 0.8,
            scale: float = 1.0,
        fallback_scale: float | None = None) -> torch.Tensor:
    """theta_0 + scale * Iso-CTS(w_i tau_i)."""
    require_matrix("iso_cts", base)
    taus = nonzero_task_vectors(base, experts, weights)
    if not taus:
        return base.clone()
    return apply(base, iso_cts_task_vector(taus, common_space_fraction), scale)


ISO = ("Marczak et al. 2025, No Task Left Behind: Isotropic Model Merging with Common and Task-Specific "
       "Subspaces (ICML 2025, arXiv 2502.04959)")
register_matrix_method("tsv", tsv, "Gargiulo et al. 2025, Task Singular Vectors: Reducing Task Interference in Model "
                                   "Merging (CVPR 2025, arXiv 2412.00081) - TSV-M")
register_matrix_method("iso_c", iso_c, f"{ISO} - Iso-C")
register_matrix_method(
    "iso_cts", iso_cts, f"{ISO} - Iso-CTS",
    Param("common_space_fraction", float, 0.8, "share of the rank given to the common subspace", min=0.0, max=1.0))
