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
# Sections written by viscodex itself (merge, train, eval); carried through when a recipe is re-read.
RECORD_SECTIONS = ("sources", "output", "policy_used", "versions", "training", "eval_results", "card")


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
        """A checked copy: types per the schema (recipe_schema.py), method parameters filled in
        with their defaults. The Recipe itself is not changed."""
        from .methods import get_method  # late: methods import torch
        from .recipe_schema import check

        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in ("roles", "tensors", "records", "lam")}
        m = check({**fields, "lambda": self.lam,
                   "policy": {"roles": dict(self.roles), "tensors": [dataclasses.asdict(r) for r in self.tensors]}})
        if not (0.0 <= m.lam <= 1.0) and not m.allow_extrapolation:
            raise RecipeError(f"lambda {m.lam} is outside [0, 1]; pass --allow-extrapolation (Python: "
                              f"allow_extrapolation=True) to extrapolate")
        method = get_method(m.method)  # raises RecipeError for unknown methods
        params = method.validate_params(m.params)
        if method.needs_base([m.lam, 1.0 - m.lam], params) and not m.base and m.variant == "merged":
            raise RecipeError(f"method {m.method!r} needs recipe field `base` (CLI --base): the LLM both experts were fine-tuned from")
        for role in self.roles:
            if role not in {r for _, r in arch.ROLE_RULES}:
                raise RecipeError(f"policy for unknown role {role!r}")
        return dataclasses.replace(self, lam=float(m.lam), params=params, roles=dict(self.roles),
                                   tensors=list(self.tensors), records=dict(self.records))

    @property
    def weights(self) -> list[float]:
        """Per-expert weights (vlm, coder) of the VisCodex formula."""
        return [self.lam, 1.0 - self.lam]

    # ---- YAML ----
    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        from .recipe_schema import check

        if not isinstance(d, dict):
            check(d)  # raises the schema's message (empty file, a list, ...)
        d = dict(d)
        records = {k: d.pop(k) for k in RECORD_SECTIONS if k in d}
        merge = d.pop("merge", None) or {}  # `merge:` block of a written recipe
        if not isinstance(merge, dict):
            raise RecipeError(f"recipe field `merge` must be a mapping, got {merge!r}")
        d = {**merge, **d}
        d.pop("viscodex_version", None)
        m = check(d)
        policy = m.policy or None
        rules = [TensorRule(r.pattern, r.policy) for r in (policy.tensors if policy else [])]
        fields = m.model_dump(exclude={"policy"})
        return cls(**fields, roles=dict(policy.roles) if policy else {}, tensors=rules, records=records)

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
        return cls.from_dict(data)

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
