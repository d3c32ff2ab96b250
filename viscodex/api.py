"""The library's front door: one function per thing the CLI does, taking Python values.

    import viscodex
    res = viscodex.merge("recipes/viscodex-8b.yaml", "VisCodex-8B")   # or a viscodex.Recipe(...)
    viscodex.train(res.out, data="records.jsonl", out="VisCodex-8B-sft", epochs=2)
    viscodex.publish("VisCodex-8B-sft", "me/VisCodex-8B-sft", dry_run=True)

Each function is a thin layer over the module that does the work (engine.merge.run_merge,
training.trainer.run_train, hub.publish.publish, evaluation.runner.evaluate_many,
evaluation.sweep.run_sweep); their keyword arguments are the CLI's options with Python names.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine.merge import MergeResult
    from .engine.recipe import Recipe
    from .evaluation.sweep import SweepResult
    from .hub.publish import PublishResult
    from .training.trainer import TrainResult


def _recipe(recipe: Recipe | str | os.PathLike | dict) -> Recipe:
    from .engine.recipe import Recipe

    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, dict):
        return Recipe.from_dict(recipe)
    return Recipe.load(Path(recipe))


def _check_options(func: str, given: dict, model: type, flags: dict[str, str] | None = None) -> None:
    """Unknown keyword arguments get an error naming the argument, its CLI flag and the valid ones."""
    import dataclasses

    from .errors import RecipeError

    valid = [f.name for f in dataclasses.fields(model)]
    for k in given:
        if k not in valid:
            flag = (flags or {}).get(k, "--" + k.replace("_", "-"))
            raise RecipeError(f"viscodex.{func}(): unknown option {k}= (nor is there a {flag} flag); "
                              f"valid: {', '.join(valid)}")


def merge(recipe: Recipe | str | os.PathLike | dict, out: str | os.PathLike, **options: Any) -> MergeResult:
    """Merge per `recipe` (a Recipe, a recipe YAML, a merged folder holding one, or a dict of its
    fields) into the new folder `out`. `options`: MergeOptions' fields (device, shard_size, threads,
    compute_threads, force, hash_inputs, progress), the `viscodex merge` options."""
    from .engine.merge import run_merge
    from .engine.options import MergeOptions

    _check_options("merge", options, MergeOptions)
    return run_merge(_recipe(recipe), out, **MergeOptions(**options).kwargs())


def train(model: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike, **config: Any) -> TrainResult:
    """Fine-tune a merged model (vision tower and projector frozen) on `data` into `out`. `config`:
    any TrainConfig field (epochs, learning_rate, global_batch, max_steps, ...)."""
    from .training.trainer import TrainConfig, run_train

    _check_options("train", config, TrainConfig, {"learning_rate": "--lr", "extra_args": "--extra-arg"})
    return run_train(TrainConfig(model=str(model), data=str(data), out=str(out), **config))


def publish(folder: str | os.PathLike, repo_id: str, **options: Any) -> PublishResult:
    """Upload a merged folder to the Hub with a model card generated from its recipe. `options`:
    private, revision, license, dry_run, token, retry."""
    from .hub.publish import publish as run_publish

    return run_publish(folder, repo_id, **options)


def evaluate(model: str | os.PathLike, tasks: str | list[str], **options: Any) -> list[dict[str, Any]]:
    """Score a model (folder or Hub id) on one or more tasks (`viscodex.evaluation.task_names()`);
    one report per task. `options`: EvalOptions' fields (source, limit, cache_dir, batch_size,
    max_new_tokens, device, workers, progress, resume, judge_url, judge_model, judge_key_env,
    clip_model), the `viscodex eval` options."""
    from .evaluation.options import EvalOptions
    from .evaluation.runner import evaluate_many

    _check_options("evaluate", options, EvalOptions)
    opts = EvalOptions(**options)
    return evaluate_many(model, opts.tasks([tasks] if isinstance(tasks, str) else list(tasks)), **opts.kwargs())


def sweep(recipe: Recipe | str | os.PathLike | dict, lambdas: list[float], tasks: str | list[str],
          out: str | os.PathLike, **options: Any) -> SweepResult:
    """Merge at each lambda, evaluate, and pick the best (table, plot and JSON under `out`).
    `options`: SweepOptions' fields, the `viscodex sweep` options."""
    from .evaluation.options import SweepOptions
    from .evaluation.sweep import run_sweep

    _check_options("sweep", options, SweepOptions)
    return run_sweep(_recipe(recipe), list(lambdas), [tasks] if isinstance(tasks, str) else list(tasks),
                     Path(out), **SweepOptions(**options).kwargs())
