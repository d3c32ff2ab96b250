"""Settings that reproduce each method's paper with two experts.

The papers merge unweighted task vectors (weight 1 each); the engine hands methods w_i tau_i with
w = (lambda, 1 - lambda). `lambda: 0.5` gives w = (1/2, 1/2), and each method's `scale` (and, for
optimisers whose step does not scale with the inputs, its learning rate) undoes the 1/2 exactly:

* degree-1 homogeneous methods (task arithmetic, DARE + task arithmetic, TSV-M, Iso-C, Iso-CTS,
  the OptMerge closed form, SGD-based OptMerge) satisfy f(tau / 2) = f(tau) / 2: `scale 2`.
* TIES' weighted disjoint mean is invariant to equal weights (sum w tau / sum w): `scale 1`
  (`scale 2` would double it).
* Adam (WUDI) normalises its step, so on inputs halved it moves twice as far relative to them:
  `scale 2` with the learning rate halved (5e-6 for the paper's 1e-5).
* Matrix methods send 1-D tensors and embeddings to task arithmetic; the reference code
  (MLLMerging) averages those task vectors, so the fallback keeps `fallback_scale 1` (the mean).

tests/test_methods_paper.py checks each entry against an independent computation of the paper's
formula with unweighted task vectors.
"""
from __future__ import annotations

from .registry import get_method

LAMBDA = 0.5
PAPER: dict[str, dict] = {
    "task_arithmetic": {"scale": 2.0},  # Ilharco et al.: theta_0 + sum_i tau_i
    "weight_average": {},  # mean_i theta_i whatever the weights
    "ties": {"density": 0.2, "scale": 1.0},  # Yadav et al.: k = 20 %, lambda 1
    "dare": {"drop_rate": 0.2, "scale": 2.0},  # Yu et al. with task arithmetic
    "tsv": {"scale": 2.0, "fallback_scale": 1.0},
    "iso_c": {"scale": 2.0, "fallback_scale": 1.0},
    "iso_cts": {"common_space_fraction": 0.8, "scale": 2.0, "fallback_scale": 1.0},
    "wudi": {"lr": 5e-6, "init": "sum", "scale": 2.0, "fallback_scale": 1.0},  # Adam lr 1e-5 on unweighted inputs
    "optmerge": {"init": "mean", "scale": 2.0, "fallback_scale": 1.0},  # SGD lr 1e-4 from the mean, as published
    "optmerge_closed_form": {"init": "mean", "ridge": 0.0, "scale": 2.0, "fallback_scale": 1.0},  # the exact minimiser
}


def paper_settings(method: str) -> tuple[float, dict]:
    """(lambda, validated params) that reproduce `method`'s paper with two experts."""
    return LAMBDA, get_method(method).validate_params(PAPER[method])


def paper_flags(method: str) -> str:
    """The same, as `viscodex merge` flags."""
    return " ".join([f"--lambda {LAMBDA:g}"] + [f"-p {k}={v:g}" if isinstance(v, float) else f"-p {k}={v}"
                                                for k, v in PAPER[method].items()])


__all__ = ["PAPER", "LAMBDA", "paper_settings", "paper_flags"]
