"""The paper's claims, decided on a demo's results with statistics rather than `x > y`.

Each claim compares two models on one toy task over the same evaluation samples: the paired
bootstrap interval (evaluation.stats) of the difference of their attribute accuracies is compared
with the claim's stated margin, giving "holds" (interval above the margin), "does not hold" (below)
or "inconclusive" (it contains the margin). The margins are fixed here, before any result: they say
how large a difference the claim means, not what a given seed happened to show.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..evaluation.stats import paired_bootstrap

LEVEL = 0.95


@dataclass(frozen=True)
class Claim:
    claim: str
    task: str
    x: str  # model key in results["scores"] (or results["sft"]["scores"] when `sft`)
    y: str
    margin: float  # holds when mean(x - y) > margin, with the whole interval
    x_sft: bool = False
    y_sft: bool = False

    def test(self, names: dict[str, str]) -> str:
        label = lambda k, sft: names.get(k, k) + (" + SFT" if sft else "")  # noqa: E731
        op = f"> {self.margin:+.2f}" if self.margin else "> 0"
        return f"{self.task}: {label(self.x, self.x_sft)} - {label(self.y, self.y_sft)} {op}"


def paper_claims(lam_key: str) -> list[Claim]:
    """The claims checked on every demo run; `lam_key` is the results key of the merge at the demo's lambda."""
    return [
        Claim("swapping the backbone loses visual grounding", "grounding", "vlm", "swapped", 0.10),
        Claim("merging keeps visual grounding (within 0.10 of the base VLM)", "grounding", lam_key, "vlm", -0.10),
        Claim("merging adds the coder's skill", "coding", lam_key, "vlm", 0.05),
        Claim("merged writes code for images zero-shot better than the base VLM", "image_code", lam_key, "vlm", 0.05),
        Claim("merged writes code for images zero-shot better than coder-swapped", "image_code", lam_key, "swapped", 0.05),
        Claim("the SFT (grounding mixed in) keeps the merged model's grounding", "grounding", "merged", lam_key, -0.10,
              x_sft=True),
        Claim("after SFT, merged beats the base VLM on image -> code", "image_code", "merged", "vlm", 0.0, True, True),
        Claim("after SFT, merged beats coder-swapped on image -> code", "image_code", "merged", "swapped", 0.0, True, True),
    ]


def _per_sample(results: dict, model: str, task: str, sft: bool) -> list[float] | None:
    s = (results["sft"]["scores"] if sft else results["scores"]).get(model, {}).get(task)
    return None if s is None else s.get("per_sample")


def decide(results: dict, claims: list[Claim], names: dict[str, str]) -> list[dict]:
    """Each claim with its interval and verdict (missing scores: "not measured")."""
    out = []
    for c in claims:
        x, y = _per_sample(results, c.x, c.task, c.x_sft), _per_sample(results, c.y, c.task, c.y_sft)
        row = {"claim": c.claim, "test": c.test(names), "task": c.task, "margin": c.margin}
        if x is None or y is None:
            out.append({**row, "verdict": "not measured"})
            continue
        iv = paired_bootstrap(x, y, level=LEVEL)
        out.append({**row, "values": [round(sum(x) / len(x), 4), round(sum(y) / len(y), 4)],
                    "difference": round(iv.mean, 4), "interval": [round(iv.low, 4), round(iv.high, 4)],
                    "level": LEVEL, "n": iv.n, "verdict": iv.verdict(c.margin)})
    return out


__all__ = ["Claim", "LEVEL", "decide", "paper_claims"]
