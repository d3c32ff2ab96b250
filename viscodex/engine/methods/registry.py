"""One table of merge methods. A method is a pure function over one tensor:

    fn(base, experts, weights, *, generator, **params) -> merged tensor

`base` is the base LLM's tensor (None when the method does not need it, see `needs_base`),
`experts` the fine-tuned tensors (here: the VLM's backbone and the coder), `weights` one weight per
expert (VisCodex: lam and 1 - lam). Inputs arrive in float32 on the merge device; the engine casts
the result to the output dtype (methods flagged `low_precision_ok` may get bf16/fp16 inputs). Methods never read files and never see tensor names.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from .. import arch
from ...errors import RecipeError

MethodFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Param:
    name: str
    type: type
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None

    def check(self, method: str, value: Any) -> Any:
        if value is None and self.default is None:  # optional parameter left unset
            return None
        if self.type is bool:
            if not isinstance(value, bool):
                raise RecipeError(f"method {method!r}: parameter {self.name!r} must be true/false, got {value!r}")
            return value
        try:
            v = self.type(value)
        except (TypeError, ValueError) as e:
            raise RecipeError(f"method {method!r}: parameter {self.name!r} must be {self.type.__name__}, got {value!r}") from e
        if self.type in (int, float) and isinstance(value, bool):
            raise RecipeError(f"method {method!r}: parameter {self.name!r} must be {self.type.__name__}, got {value!r}")
        if self.type is float and not math.isfinite(v):  # NaN compares false with every bound
            raise RecipeError(f"method {method!r}: parameter {self.name!r} must be a finite number, got {value!r}")
        if self.min is not None and v < self.min or self.max is not None and v > self.max:
            raise RecipeError(f"method {method!r}: parameter {self.name!r}={v} is outside [{self.min}, {self.max}]")
        if self.choices is not None and v not in self.choices:
            raise RecipeError(f"method {method!r}: parameter {self.name!r}={v!r}; choose from {', '.join(map(str, self.choices))}")
        return v


@dataclass(frozen=True)
class Method:
    name: str
    fn: MethodFn
    reference: str
    params: tuple[Param, ...] = ()
    # Whole-matrix methods (SVD, optimisation) apply to 2-D tensors not matched by `exclude`;
    # everything else goes to `fallback` (a method name) with the fallback's default parameters.
    matrix_only: bool = False
    exclude: tuple[str, ...] = ()
    fallback: str = "task_arithmetic"
    # Whether the base tensor is read, given weights and params. Default: always.
    uses_base: Callable[[Sequence[float], dict], bool] = field(default=lambda w, p: True)
    seeded: bool = False
    # Methods whose parameters need statistics of the whole model (TIES with topk=global) return,
    # from the validated params, an object with `passes` (int), `observe(pass_index, base, experts,
    # weights)` (called for every tensor this method handles, in every pass) and `result()` (extra
    # keyword arguments for `fn`); None when the params need no pre-pass. See methods/ties.py.
    prepass: Callable[[dict], Any] | None = None
    # Element-wise methods can be computed on row chunks of a tensor (bounded memory for huge
    # embeddings); whole-tensor methods (top-k, SVD, optimisation) get the full tensor at once.
    elementwise: bool = False
    # True when fn accepts bf16/fp16 inputs and still computes in float32 (e.g. torch.lerp's opmath,
    # or explicit upcasts): the engine then skips materialising float32 copies of the inputs.
    low_precision_ok: bool = False

    def validate_params(self, params: dict | None) -> dict:
        params = dict(params or {})
        known = {p.name: p for p in self.params}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise RecipeError(
                f"method {self.name!r}: unknown parameter(s) {', '.join(unknown)}; "
                f"it takes {', '.join(known) or 'none'}"
            )
        return {p.name: p.check(self.name, params.get(p.name, p.default)) for p in self.params}

    def needs_base(self, weights: Sequence[float], params: dict) -> bool:
        return bool(self.uses_base(weights, params))

    def applies_to(self, name: str, shape: Sequence[int]) -> bool:
        if self.matrix_only and len(shape) != 2:
            return False
        return not any(re.search(p, name) for p in self.exclude)


# Matrix methods send 1-D tensors (norms, biases) and embeddings to their fallback, which by
# default inherits `scale`; the papers' presets (paper.py) scale the matrices only (issue 16:
# `scale 2` turned the mean of the 1-D task vectors into their sum).
FALLBACK_SCALE = Param("fallback_scale", float, None,
                       "scale of the fallback (1-D tensors and embeddings); unset: the method's `scale`",
                       min=-10.0, max=10.0)

SCALE = Param("scale", float, 1.0, "global scale on the merged task vector", min=-10.0, max=10.0)

METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} registered twice")
    METHODS[method.name] = method
    return method


def register_matrix_method(name: str, fn: MethodFn, reference: str, *params: Param) -> Method:
    """A whole-matrix method (SVD, optimisation): 2-D tensors only, the embeddings (whose rows
    differ between sources) and 1-D tensors go to task_arithmetic; `scale` and `fallback_scale`
    follow the method's own parameters."""
    return register(Method(name=name, fn=fn, reference=reference, params=(*params, SCALE, FALLBACK_SCALE),
                           matrix_only=True, exclude=arch.EMBEDDING_PATTERNS, fallback="task_arithmetic"))


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise RecipeError(f"unknown merge method {name!r}; choose from {', '.join(sorted(METHODS))}") from None


def method_for(method: Method, name: str, shape: Sequence[int], params: dict | None = None) -> tuple[Method, dict | None]:
    """The method that actually handles tensor `name` (the fallback for excluded tensors).

    Returns (method, params) where params is None when the recipe's own params apply. The fallback
    runs with its defaults, except for parameters it shares with the recipe's method (`scale`),
    which it inherits from `params` (the recipe's validated params) when given.
    """
    if method.applies_to(name, shape):
        return method, None
    fb = get_method(method.fallback)
    shared = {p.name for p in fb.params} & {p.name for p in method.params}
    inherited = {k: v for k, v in (params or {}).items() if k in shared}
    if (params or {}).get("fallback_scale") is not None and "scale" in {p.name for p in fb.params}:
        inherited["scale"] = params["fallback_scale"]
    return fb, fb.validate_params(inherited)
