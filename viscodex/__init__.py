"""viscodex: build multimodal code models by merging a code LLM into a Qwen2.5-VL language backbone.

The public API, exported lazily (importing viscodex loads neither torch nor transformers):

    import viscodex
    res = viscodex.merge(viscodex.Recipe(vlm="Qwen/Qwen2.5-VL-7B-Instruct",
                                         coder="Qwen/Qwen2.5-Coder-7B-Instruct",
                                         base="Qwen/Qwen2.5-7B", lam=0.7), "VisCodex-8B")

merge, train, publish, evaluate, sweep (viscodex.api); Recipe, TrainConfig; the error classes
(viscodex.errors). The folders below hold the rest: engine/ (the merge), training/, hub/,
evaluation/, app/, toy/.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__

# name -> module that defines it; the module is imported on first use
_EXPORTS = {
    "merge": "viscodex.api",
    "train": "viscodex.api",
    "publish": "viscodex.api",
    "evaluate": "viscodex.api",
    "sweep": "viscodex.api",
    "Recipe": "viscodex.engine.recipe",
    "TrainConfig": "viscodex.training.trainer",
    "ViscodexError": "viscodex.errors",
    "RecipeError": "viscodex.errors",
    "SourceError": "viscodex.errors",
    "CompatibilityError": "viscodex.errors",
    "MergeError": "viscodex.errors",
    **{name: "viscodex.errors" for name in ("DataError", "TrainError", "EvalError", "CardError", "PublishError",
                                            "SpaceError", "UploadError", "AppError", "DemoError",
                                            "OutputError", "SandboxUnavailable")},
}
__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from .api import evaluate, merge, publish, sweep, train
    from .engine.recipe import Recipe
    from .errors import (AppError, CardError, CompatibilityError, DataError, DemoError, EvalError, MergeError,
                         OutputError, PublishError, RecipeError, SandboxUnavailable, SourceError, SpaceError,
                         TrainError, UploadError, ViscodexError)
    from .training.trainer import TrainConfig


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'viscodex' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
