"""Comparing two models on the same samples: a paired bootstrap interval of the difference of their
mean scores, and a three-way verdict against a stated margin.

Paired, because both models answer the very same prompts (and images): resampling the per-sample
differences keeps what the samples share (an easy scene is easy for both) out of the interval.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"


@dataclass(frozen=True)
class Interval:
    """Mean of the paired differences x - y and its bootstrap interval."""

    mean: float
    low: float
    high: float
    n: int
    level: float

    def verdict(self, margin: float) -> str:
        """`holds` when the whole interval lies above `margin` (x - y > margin), `does not hold`
        when it lies below it, `inconclusive` when it contains it."""
        if self.low > margin:
            return HOLDS
        if self.high < margin:
            return FAILS
        return INCONCLUSIVE


def paired_bootstrap(x: list[float], y: list[float], *, level: float = 0.95, resamples: int = 2000,
                     seed: int = 0) -> Interval:
    """Percentile interval of mean(x - y) over `resamples` resamplings of the sample indices.
    Deterministic in `seed`. `x[i]` and `y[i]` must be the scores of the same sample."""
    if len(x) != len(y):
        raise ValueError(f"paired_bootstrap: {len(x)} scores vs {len(y)}; both models must score the same samples")
    if not x:
        raise ValueError("paired_bootstrap: no samples")
    if not 0 < level < 1:
        raise ValueError(f"paired_bootstrap: level must be in (0, 1), got {level}")
    d = [a - b for a, b in zip(x, y)]
    n = len(d)
    rng = random.Random(seed)
    means = sorted(sum(d[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    tail = (1 - level) / 2
    lo = means[int(tail * resamples)]
    hi = means[min(resamples - 1, int((1 - tail) * resamples))]
    return Interval(sum(d) / n, lo, hi, n, level)


__all__ = ["FAILS", "HOLDS", "INCONCLUSIVE", "Interval", "paired_bootstrap"]
