"""The recipe's schema (pydantic, as mergekit validates its merge configs): types are checked
strictly, so `allow_extrapolation: 'no'`, `seed: abc`, `method: [ties]` or `vlm: 123` are errors
naming the field (and its Python argument and CLI flag), never silently coerced."""
from __future__ import annotations

import math
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import arch
from ..errors import RecipeError

DTYPES = ("auto", "bfloat16", "float16", "float32")
# recipe field -> (Python argument of Recipe, CLI flag of `viscodex merge`)
NAMES = {
    "vlm": ("vlm", "--vlm"), "coder": ("coder", "--coder"), "base": ("base", "--base"),
    "method": ("method", "--method"), "lambda": ("lam", "--lambda"), "params": ("params", "--param"),
    "dtype": ("dtype", "--dtype"), "variant": ("variant", "--variant"), "seed": ("seed", "--seed"),
    "allow_extrapolation": ("allow_extrapolation", "--allow-extrapolation"), "name": ("name", None),
    "keep_vision_token_rows": ("keep_vision_token_rows", None), "policy": ("roles=..., tensors", None),
}
_STRICT = ConfigDict(extra="forbid", strict=True)
Text = Field(min_length=1)


class TensorRuleModel(BaseModel):
    model_config = _STRICT
    pattern: str = Text
    policy: Literal[arch.POLICIES]  # type: ignore[valid-type]


class PolicyModel(BaseModel):
    model_config = _STRICT
    roles: dict[str, Literal[arch.POLICIES]] = {}  # type: ignore[valid-type]
    tensors: list[TensorRuleModel] = []


class RecipeModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    vlm: str = Text
    coder: str = Text
    base: Optional[str] = Field(default=None, min_length=1)
    method: str = "task_arithmetic"
    lam: float = Field(default=0.7, alias="lambda")
    params: dict[str, Any] = {}
    dtype: Literal[DTYPES] = "auto"  # type: ignore[valid-type]
    variant: Literal[arch.VARIANTS] = "merged"  # type: ignore[valid-type]
    name: Optional[str] = None
    seed: int = 0
    allow_extrapolation: bool = False
    keep_vision_token_rows: bool = True
    policy: Optional[PolicyModel] = None

    @field_validator("lam")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


def _where(loc: tuple) -> str:
    field = "lambda" if loc and loc[0] == "lam" else (str(loc[0]) if loc else "recipe")
    path = ".".join(str(x) for x in loc[1:])
    py, flag = NAMES.get(field, (None, None))
    where = f"recipe field `{field}{'.' + path if path else ''}`"
    extra = [f"Python: Recipe({py}=...)" if py and py != field else None, f"CLI {flag}" if flag else None]
    extra = [e for e in extra if e]
    return where + (f" ({', '.join(extra)})" if extra else "")


def check(data: Any) -> RecipeModel:
    """Validate a recipe mapping; raises RecipeError naming the first bad field (one line)."""
    if data is None or data == {}:
        raise RecipeError("the recipe is empty: it needs at least `vlm` and `coder`")
    if not isinstance(data, dict):
        raise RecipeError(f"a recipe must be a YAML mapping of fields (vlm, coder, ...), got a {type(data).__name__}")
    try:
        return RecipeModel.model_validate(data)
    except ValidationError as e:
        errs = e.errors()
        first = errs[0]
        msg = first["msg"]
        if first["type"] == "missing":
            msg = "is required"
        elif first["type"] == "extra_forbidden":
            return _unknown(errs)
        got = first.get("input")
        shown = "" if first["type"] == "missing" else f" (got {got!r})"
        more = f"; and {len(errs) - 1} more problem(s)" if len(errs) > 1 else ""
        raise RecipeError(f"{_where(tuple(first['loc']))}: {msg}{shown}{more}") from None


def _unknown(errs: list) -> RecipeModel:
    names = sorted({".".join(map(str, x["loc"])) for x in errs if x["type"] == "extra_forbidden"})
    raise RecipeError(f"unknown recipe field(s): {', '.join(names)}")


__all__ = ["check", "RecipeModel", "DTYPES", "NAMES"]
