"""`viscodex eval` and `viscodex sweep`: score models on multimodal code benchmarks (MMCode,
ChartMimic-style, Design2Code-style, the demo's toy tasks) and choose the merge's lambda.

Modules: tasks (interface + registry), catalog (the built-in tasks by name), mmcode / chartmimic / design2code / toy (the tasks),
mmcode_harness (+ mmcode_child.py, run in the sandbox: MMCode's official harness semantics),
chart_programs (the scripts ChartMimic's evaluators run), chart_metrics (+ chart_trace_child.py:
ChartMimic's low-level F1s), judge (ChartMimic's high-level judge),
similarity (image scores), generate (batched generation), runner (resumable evaluation, scoring
predictions made elsewhere), records (results -> viscodex_recipe.yaml -> model card, honest metric
names), sweep (merge + evaluate per lambda, steerable selection).
"""
from .catalog import get_task, task_names
from .tasks import EvalError, EvalSample, Task

__all__ = ["EvalError", "EvalSample", "Task", "get_task", "task_names", "evaluate", "evaluate_many", "run_sweep"]


def __getattr__(name):  # heavy modules (torch, transformers) load on first use
    if name in ("evaluate", "evaluate_many"):
        from . import runner

        return getattr(runner, name)
    if name == "run_sweep":
        from .sweep import run_sweep

        return run_sweep
    raise AttributeError(name)
