"""Evaluation results as the recipe's `eval_results` section, which `viscodex card` turns into the
model card's `model-index`.

Shape (a list; keys are huggingface_hub EvalResult field names, which `card.eval_results` reads;
the other keys are kept in the recipe for the record and ignored by the card):

    eval_results:
    - task_type: image-text-to-text
      dataset_type: likaixin/MMCode          # Hub dataset id (viscodex/<task>-sample for the tiny sample)
      dataset_name: MMCode (first 200 samples of test)
      dataset_split: test[:200]              # the split actually run
      metric_type: pass@1                    # official names only when computed the official way,
      metric_name: pass@1                    # else viscodex/<task>/<metric>
      metric_value: 11.0                     # percent, 2 decimals
      viscodex: {task: mmcode, samples: 200, source: hub, max_new_tokens: 1024, decoding: greedy, date: ...}

An entry replaces an older one for the same dataset, split and metric.
"""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

from .._util.atomic import write_atomic
from ..engine.recipe import RECIPE_FILE, Recipe
from .tasks import SAMPLE_SOURCE, EvalError

TASK_TYPE = "image-text-to-text"


def is_official(report: dict[str, Any]) -> bool:
    """The benchmark's own metric, computed its way, on the benchmark's data (the Hub or a local copy
    in its format; not the tiny sample)."""
    return bool(report.get("official")) and report.get("source_kind", _kind(report.get("source"))) in ("hub", "local")


def _kind(source) -> str:
    return "hub" if source in (None, "hub") else source if source in (SAMPLE_SOURCE, "generated") else "local"


def card_entry(report: dict[str, Any], extra: dict | None = None) -> dict[str, Any]:
    """One `eval_results` entry from an evaluation report (see runner.build_report).

    Official metric names (e.g. `pass@1`) only for numbers computed the benchmark's way on its data;
    anything else is `viscodex/<task>/<metric>`, named as viscodex's own. The split is the one
    actually run (`test[:200]` when --limit cut it) and the name carries the sample count; the tiny
    sample never borrows the benchmark's dataset id."""
    n = report["n"]
    name = report.get("dataset_name") or report["task"]
    dtype = report.get("dataset") or f"viscodex/{report['task']}"
    split = str(report.get("split") or "")
    kind = report.get("source_kind") or _kind(report.get("source"))
    if kind == SAMPLE_SOURCE:
        dtype, name, split = f"viscodex/{report['task']}-sample", f"{name} (viscodex tiny sample, {n} samples)", "sample"
    elif report.get("limit"):
        split, name = f"{split}[:{n}]", f"{name} (first {n} samples of {report.get('split')})"
    metric, label = report.get("metric", "score"), report.get("metric_name") or report.get("metric")
    official = is_official(report)
    if not official:
        metric, label = f"viscodex/{report['task']}/{metric}", f"{label} (viscodex's own metric, not the benchmark's)"
        if kind != SAMPLE_SOURCE and not report.get("limit"):
            name = f"{name} ({n} samples)"
    src = report.get("source") or "hub"
    if src not in ("hub", SAMPLE_SOURCE, "generated"):
        src = Path(src).name  # a local copy: its folder/file name, never this machine's path
    meta = {"task": report["task"], "samples": n, "source": src, "official_metric": official,
            "max_new_tokens": report.get("max_new_tokens"), "decoding": report.get("decoding", "greedy"),
            "date": _dt.date.today().isoformat()}
    meta.update(extra or {})
    return {
        "task_type": TASK_TYPE, "dataset_type": dtype, "dataset_name": name, "dataset_split": split,
        "metric_type": metric, "metric_name": label,
        "metric_value": round(100.0 * float(report["score"]), 2), "viscodex": meta,
    }


def card_entries(report: dict[str, Any], extra: dict | None = None) -> list[dict[str, Any]]:
    """The headline's entry (card_entry), then one per metric the task computed the benchmark's way
    (`official_metrics`: metric key -> the benchmark's own name for it, e.g. Design2Code's
    `d2c_block_match` -> `Block-Match`), only on the benchmark's data (not the tiny sample). Such an
    entry's sample count is the number of samples that report the metric."""
    out = [card_entry(report, extra)]
    if (report.get("source_kind") or _kind(report.get("source"))) not in ("hub", "local"):
        return out
    metrics = report.get("metrics") or {}
    for key, name in (report.get("official_metrics") or {}).items():
        if key not in metrics:
            continue
        n = sum(1 for s in report.get("samples") or [] if key in (s.get("scores") or {}))
        one = {**report, "official": True, "metric": name, "metric_name": name, "score": metrics[key]}
        out.append(card_entry(one, {**(extra or {}), "samples": n, "metric_key": key}))
    return out


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
    return write_atomic(path, recipe.dump())


__all__ = ["card_entry", "card_entries", "merge_entries", "write_to_recipe"]
