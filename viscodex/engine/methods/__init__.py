"""Merge methods: pure per-tensor functions in one registry (see registry.py and docs/methods.md).

Importing the method modules registers them: basic (task_arithmetic, weight_average), ties, dare,
spectral (tsv, iso_c, iso_cts) and wudi (wudi, optmerge, optmerge_closed_form).
"""
from . import basic, dare, spectral, ties, wudi  # noqa: F401
from .registry import METHODS, Method, Param, get_method, method_for, register

__all__ = ["METHODS", "Method", "Param", "get_method", "method_for", "register"]
