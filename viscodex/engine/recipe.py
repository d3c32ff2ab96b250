"""Recipes: what to merge and how, as YAML. A merge writes the recipe it ran, with resolved
revisions, hashes and versions, as `viscodex_recipe.yaml`; that file is itself a valid recipe.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import arch
from ..errors import RecipeError

RECIPE_FILE = "viscodex_recipe.yaml"
DTYPES = ("auto", "bfloat16", "float16", "float32")
# Sections written by viscodex itself (merge, train, eval); carried through when a recipe is re-read.
RECORD_SECTIONS = ("sources", "output", "policy_used", "versions", "training", "eval_results")


@dataclass
class TensorRule:
    pattern: str  # regular expression over canonical tensor names
    policy: str

    def __post_init__(self):
        if self.policy not in arch.POLICIES:
            raise RecipeError(f"policy rule {self.pattern!r}: unknown policy {self.policy!r}; choose from {', '.join(arch.POLICIES)}")
        try:
            re.compile(self.pattern)
        except re.error as e:
            raise RecipeError(f"policy rule {self.pattern!r}: invalid regular expression ({e})") from e


@dataclass
class Recipe:
    vlm: str
    coder: str
    base: str | None = None
    method: str = "task_arithmetic"
    lam: float = 0.7
    params: dict[str, Any] = field(default_factory=dict)
    dtype: str = "auto"
    variant: str = "merged"
    name: str | None = None
    seed: int = 0
    allow_extrapolation: bool = False
    roles: dict[str, str] = field(default_factory=dict)  # role -> policy overrides
    tensors: list[TensorRule] = field(default_factory=list)  # per-tensor overrides, first match wins
    keep_vision_token_rows: bool = True
    records: dict[str, Any] = field(default_factory=dict)  # sections written by viscodex

    def validate(self) -> "Recipe":
        from .methods import get_method  # late: methods import torch

        if not self.vlm or not self.coder:
            raise RecipeError("a recipe needs both `vlm` and `coder`")
        if self.variant not in arch.VARIANTS:
            raise RecipeError(f"unknown variant {self.variant!r}; choose from {', '.join(arch.VARIANTS)}")
        if self.dtype not in DTYPES:
            raise RecipeError(f"unknown dtype {self.dtype!r}; choose from {', '.join(DTYPES)}")
        try:
            self.lam = float(self.lam)
        except (TypeError, ValueError) as e:
            raise RecipeError(f"lambda must be a number, got {self.lam!r}") from e
        if not (0.0 <= self.lam <= 1.0) and not self.allow_extrapolation:
            raise RecipeError(f"lambda {self.lam} is outside [0, 1]; pass --allow-extrapolation to extrapolate")
        method = get_method(self.method)  # raises RecipeError for unknown methods
        self.params = method.validate_params(self.params)
        if method.needs_base(self.weights, self.params) and not self.base and self.variant == "merged":
            raise RecipeError(f"method {self.method!r} needs a `base` (the LLM both experts were fine-tuned from)")
        for role, pol in self.roles.items():
            if role not in {r for _, r in arch.ROLE_RULES}:
                raise RecipeError(f"policy for unknown role {role!r}")
            if pol not in arch.POLICIES:
                raise RecipeError(f"role {role!r}: unknown policy {pol!r}; choose from {', '.join(arch.POLICIES)}")
        return self

    @property
    def weights(self) -> list[float]:
        """Per-expert weights (vlm, coder) of the VisCodex formula."""
        return [self.lam, 1.0 - self.lam]

    # ---- YAML ----
    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        if not isinstance(d, dict):
            raise RecipeError("a recipe must be a YAML mapping")
        d = dict(d)
        records = {k: d.pop(k) for k in RECORD_SECTIONS if k in d}
        merge = d.pop("merge", None) or {}  # `merge:` block of a written recipe
        d = {**merge, **d}
        policy = d.pop("policy", None) or {}
        if "lambda" in d:
            d["lam"] = d.pop("lambda")
        d.pop("viscodex_version", None)
        known = {f.name for f in dataclasses.fields(cls)} - {"roles", "tensors", "records"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise RecipeError(f"unknown recipe field(s): {', '.join(unknown)}")
        rules = [TensorRule(r["pattern"], r["policy"]) for r in policy.get("tensors", []) or []]
        return cls(**d, roles=dict(policy.get("roles", {}) or {}), tensors=rules,
                   records=records)

    @classmethod
    def load(cls, path: str | Path) -> "Recipe":
        p = Path(path)
        if p.is_dir():
            p = p / RECIPE_FILE
        try:
            data = yaml.safe_load(p.read_text())
        except FileNotFoundError as e:
            raise RecipeError(f"{p}: recipe file not found") from e
        except yaml.YAMLError as e:
            raise RecipeError(f"{p}: invalid YAML ({e})") from e
        return cls.from_dict(data or {})

    def to_dict(self) -> dict:
        d: dict[str, Any] = {}
        if self.name:
            d["name"] = self.name
        d.update(vlm=self.vlm, coder=self.coder, base=self.base, variant=self.variant, method=self.method)
        d["lambda"] = self.lam
        d["params"] = dict(self.params)
        d.update(dtype=self.dtype, seed=self.seed, keep_vision_token_rows=self.keep_vision_token_rows)
        if self.allow_extrapolation:
            d["allow_extrapolation"] = True
        if self.roles or self.tensors:
            d["policy"] = {"roles": dict(self.roles), "tensors": [dataclasses.asdict(r) for r in self.tensors]}
        d.update(self.records)
        return d

    def dump(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def with_overrides(self, **kw) -> "Recipe":
        """Command-line flags override recipe fields (None means 'not given')."""
        r = dataclasses.replace(self, **{k: v for k, v in kw.items() if v is not None})
        return r
