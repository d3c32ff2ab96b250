"""Evaluation results as the recipe's `eval_results` section, which `viscodex card` turns into the
model card's `model-index`.

Shape (a list; keys are huggingface_hub EvalResult field names, which `card.eval_results` reads;
the other keys are kept in the recipe for the record and ignored by the card):

    eval_results:
    - task_type: image-text-to-text
      dataset_type: likaixin/MMCode          # Hub dataset id (viscodex/<task>-sample for the tiny sample)
      dataset_name: MMCode (first 200)       # "(first N)" when --limit cut the benchmark
      dataset_split: test
      metric_type: pass@1
      metric_name: pass@1
      metric_value: 11.0                     # percent, 2 decimals
      viscodex: {task: mmcode, samples: 200, source: hub, max_new_tokens: 1024, decoding: greedy, date: ...}

An entry replaces an older one for the same dataset, split and metric.
"""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

from ..engine.recipe import RECIPE_FILE, Recipe
from .tasks import SAMPLE_SOURCE, EvalError

TASK_TYPE = "image-text-to-text"


def card_entry(report: dict[str, Any], extra: dict | None = None) -> dict[str, Any]:
    """One `eval_results` entry from an evaluation report (see runner.evaluate)."""
    name = report.get("dataset_name") or report["task"]
    dtype = report.get("dataset") or f"viscodex/{report['task']}"
    if report.get("source") == SAMPLE_SOURCE and report.get("dataset"):
        dtype = f"viscodex/{report['task']}-sample"
        name = f"{name} (viscodex tiny sample)"
    elif report.get("limit"):
        name = f"{name} (first {report['n']})"
    src = report.get("source") or "hub"
    if src not in ("hub", SAMPLE_SOURCE, "generated"):
        src = Path(src).name  # a local copy: its folder/file name, never this machine's path
    meta = {"task": report["task"], "samples": report["n"], "source": src,
            "max_new_tokens": report.get("max_new_tokens"), "decoding": report.get("decoding", "greedy"),
            "date": _dt.date.today().isoformat()}
    meta.update(extra or {})
    return {
        "task_type": TASK_TYPE, "dataset_type": dtype, "dataset_name": name, "dataset_split": report.get("split"),
        "metric_type": report.get("metric", "score"), "metric_name": report.get("metric_name") or report.get("metric"),
        "metric_value": round(100.0 * float(report["score"]), 2), "viscodex": meta,
    }


def _same(a: dict, b: dict) -> bool:
    keys = ("dataset_type", "dataset_split", "metric_type")
    return all(a.get(k) == b.get(k) for k in keys) and not a.get("model") and not a.get("variant")


def merge_entries(old, new: list[dict]) -> list[dict]:
    """`old` eval_results (list, mapping or None) with `new` entries added, replacing same-benchmark ones."""
    if old is None:
        items: list = []
    elif isinstance(old, list):
        items = list(old)
    elif isinstance(old, dict):  # the card's mapping shorthand: benchmark -> value or {metric: value}
        items = []
        for bench, v in old.items():
            if isinstance(v, dict):
                items += [{"dataset_name": bench, "metric_type": m, "metric_value": x} for m, x in v.items()]
            else:
                items.append({"dataset_name": bench, "metric_type": "score", "metric_value": v})
    else:
        raise EvalError("the recipe's eval_results must be a list or a mapping")
    items = [x for x in items if not (isinstance(x, dict) and any(_same(x, n) for n in new))]
    return items + new


def write_to_recipe(folder: str | os.PathLike, entries: list[dict]) -> Path:
    """Record `entries` in the `eval_results` section of `folder`'s viscodex_recipe.yaml (atomically)."""
    folder = Path(folder).expanduser()
    path = folder / RECIPE_FILE if folder.is_dir() else folder
    if not path.is_file():
        raise EvalError(f"{folder}: no {RECIPE_FILE} to record results in (is it a folder written by `viscodex merge`?)")
    recipe = Recipe.load(path)
    recipe.records["eval_results"] = merge_entries(recipe.records.get("eval_results"), entries)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(recipe.dump(), encoding="utf-8")
    os.replace(tmp, path)
    return path


__all__ = ["card_entry", "merge_entries", "write_to_recipe"]
