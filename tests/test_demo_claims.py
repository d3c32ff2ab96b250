"""The demo's claims are decided with paired bootstrap intervals and stated margins (fast: no
training). A merge that returns the VLM, one that returns the coder, and the coder-swapped model
passed off as the merge must each fail at least one claim."""
from __future__ import annotations

import copy
import random

import pytest

from viscodex.evaluation.stats import FAILS, HOLDS, INCONCLUSIVE, paired_bootstrap
from viscodex.toy.claims import decide, paper_claims
from viscodex.toy.report import lam_dir, model_names, table_markdown

LAM = 0.7
M = lam_dir(LAM)


def test_paired_bootstrap_interval_and_verdicts():
    x = [1.0] * 30 + [0.0] * 34
    same = paired_bootstrap(x, x)
    assert (same.mean, same.low, same.high, same.n) == (0.0, 0.0, 0.0, 64)
    assert same.verdict(0.0) == INCONCLUSIVE and same.verdict(-0.01) == HOLDS and same.verdict(0.01) == FAILS
    up = paired_bootstrap([1.0] * 64, [0.0] * 32 + [1.0] * 32)
    assert up.mean == 0.5 and 0.3 < up.low < 0.5 < up.high < 0.7
    assert up.verdict(0.1) == HOLDS and up.verdict(0.9) == FAILS and up.verdict(0.5) == INCONCLUSIVE
    assert paired_bootstrap(x, list(reversed(x))) == paired_bootstrap(x, list(reversed(x)))  # seeded


def test_paired_bootstrap_pairs_samples():
    """A constant shift on noisy samples is certain when paired (the per-sample noise cancels)."""
    rng = random.Random(1)
    y = [rng.random() for _ in range(64)]
    iv = paired_bootstrap([v + 0.1 for v in y], y)
    assert iv.low == pytest.approx(0.1) and iv.high == pytest.approx(0.1)


@pytest.mark.parametrize("x, y, msg", [
    ([1.0], [1.0, 0.0], "1 scores vs 2"),
    ([], [], "no samples"),
])
def test_paired_bootstrap_refuses_bad_input(x, y, msg):
    with pytest.raises(ValueError, match=msg):
        paired_bootstrap(x, y)


def _cell(values: list[float]) -> dict:
    return {"attr_acc": sum(values) / len(values), "exact": 0.0, "per_sample": values}


def _model(ground: float, code: float, image_code: float, n: int = 64) -> dict:
    """Scores whose per-sample values are 1 for the first `rate * n` samples, 0 after."""
    def col(rate):
        k = round(rate * n)
        return _cell([1.0] * k + [0.0] * (n - k))
    return {"grounding": col(ground), "coding": col(code), "image_code": col(image_code)}


def paper_like() -> dict:
    """Results where every claim holds: what the paper reports."""
    vlm, swapped, merged = _model(0.8, 0.3, 0.25), _model(0.1, 0.9, 0.3), _model(0.8, 0.6, 0.6)
    return {
        "config": {"lam": LAM, "seed": 0}, "eval_samples": 64, "chance": 0.29, "threads": 1,
        "scores": {"base": {"coding": vlm["coding"]}, "coder": {"coding": swapped["coding"]}, "vlm": vlm,
                   "swapped": swapped, M: merged, "merged-lam0": swapped, "merged-lam1": vlm},
        "sft": {"scores": {"vlm": _model(0.8, 0.3, 0.5), "swapped": _model(0.2, 0.8, 0.5),
                           "merged": _model(0.8, 0.6, 0.7)}},
        "timings": {"total": 1, "trio": 1, "merge": 1, "eval": 1, "sft": 1},
    }


def verdicts(results: dict) -> list[str]:
    return [c["verdict"] for c in decide(results, paper_claims(M), model_names(LAM))]


def test_paper_like_results_hold_every_claim_and_the_table_shows_intervals():
    r = paper_like()
    r["claims"] = decide(r, paper_claims(M), model_names(LAM))
    assert [c["verdict"] for c in r["claims"]] == [HOLDS] * len(paper_claims(M))
    md = table_markdown(r)
    assert "| swapping the backbone loses visual grounding | grounding: base VLM - coder-swapped > +0.10 | 0.80 vs 0.09 | +0.70 [" in md
    assert "**holds**" in md and "95 % paired bootstrap interval" in md
    assert "| merged | 0.80 (0.00) | 0.80 (0.00) |" in md  # grounding before and after the SFT


@pytest.mark.parametrize("fake", ["vlm", "coder", "swapped"])
def test_fake_merges_fail_a_claim(fake):
    """The merge's scores replaced by the VLM's, the coder's (a merge at lambda 0 = coder backbone
    + the VLM's vision tower) or the swapped model's: some claim no longer holds."""
    r = paper_like()
    src = {"vlm": "vlm", "coder": "merged-lam0", "swapped": "swapped"}[fake]
    r["scores"][M] = copy.deepcopy(r["scores"][src])
    r["sft"]["scores"]["merged"] = copy.deepcopy(r["sft"]["scores"][{"vlm": "vlm"}.get(fake, "swapped")])
    got = verdicts(r)
    assert any(v != HOLDS for v in got), got
    # the zero-shot and grounding claims alone already catch each fake (no reliance on the SFT rows)
    assert any(v != HOLDS for v in got[:5]), got


def test_missing_scores_are_not_measured():
    r = paper_like()
    del r["scores"][M]["coding"]
    got = decide(r, paper_claims(M), model_names(LAM))
    assert got[2]["verdict"] == "not measured" and "interval" not in got[2]
