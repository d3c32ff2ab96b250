"""Merge methods: pure per-tensor functions in one registry (see registry.py)."""
from .registry import METHODS, Method, Param, get_method, method_for, register  # noqa: F401
from . import basic  # noqa: F401  (registers task_arithmetic, weight_average)

__all__ = ["METHODS", "Method", "Param", "get_method", "method_for", "register"]
