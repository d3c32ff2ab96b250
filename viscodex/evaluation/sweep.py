"""Choose lambda the VisCodex way: merge at each lambda, evaluate, keep the best.

For each lambda the recipe is merged (the streaming merge engine, `run_merge`) into a scratch
folder, evaluated on every task, and the folder is deleted unless `keep`. Results are cached per
lambda under `<out>/lam-<lambda>/`, keyed by the recipe, so a rerun skips lambdas (and merges)
already evaluated. The sources are opened once (headers, Hub snapshots) and reused by every merge;
each merge still reads the source weights again (one read per lambda, not one for all).

Writes `<out>/results.json` (every report), `<out>/table.md`, `<out>/plot.png`. The best lambda
maximises the `select` criterion: the mean of the tasks' headline scores (default), their minimum,
or one task's score. A tie at the top is reported as "no signal" (no best lambda), never as the
first lambda listed; a warning names every other task the chosen lambda drops by more than
`warn_drop` (absolute, 0.05 = 5 points) below that task's best. A `write_recipe` folder is checked
before anything is merged.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RecipeError
from ..engine.recipe import Recipe
from .records import card_entries, write_to_recipe
from .runner import _sha, evaluate_many, write_json
from .catalog import get_task
from .options import DEFAULT_WARN_DROP
from .tasks import EvalError, Task

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    out: Path
    lambdas: list[float]
    tasks: list[str]
    scores: dict[float, dict[str, float]]  # lambda -> task -> headline score in [0, 1]
    best_lambda: float | None  # None: no signal (see no_signal)
    selected_by: str  # mean | min | a task name (the task itself when there is one task)
    reports: dict[float, list[dict]]
    table: Path
    plot: Path
    results: Path
    recipe_written: Path | None = None
    no_signal: str | None = None  # why no lambda was chosen (a tie at the top)
    warnings: list[str] = field(default_factory=list)  # other tasks the chosen lambda drops



def selection_key(select: str | None, tasks: list[str]) -> str:
    """mean | min | one of the tasks (case- and dash-insensitive); one task: that task."""
    sel = (select or "mean").strip().lower().replace("-", "_")
    if sel in ("mean", "min"):
        return tasks[0] if len(tasks) == 1 else sel
    if sel in tasks:
        return sel
    raise EvalError(f"--select {select!r}: choose mean, min or one of the swept tasks ({', '.join(tasks)})")


def criterion(scores: dict[str, float], selected_by: str) -> float:
    if selected_by == "mean":
        return sum(scores.values()) / len(scores)
    if selected_by == "min":
        return min(scores.values())
    return scores[selected_by]


def choose_lambda(scores: dict[float, dict[str, float]], selected_by: str,
                  warn_drop: float = DEFAULT_WARN_DROP) -> tuple[float | None, str | None, list[str]]:
    """(best lambda or None, why there is no signal, warnings) from lambda -> task -> score."""
    lambdas = list(scores)
    values = {lam: round(criterion(scores[lam], selected_by), 9) for lam in lambdas}
    top = max(values.values())
    tied = [lam for lam in lambdas if values[lam] == top]
    if len(tied) > 1:
        what = "every lambda" if len(tied) == len(lambdas) else "lambdas " + ", ".join(f"{x:g}" for x in tied)
        return None, f"no signal: {what} score{'s' if len(tied) == len(lambdas) else ''} {100 * top:.2f}% by {selected_by}", []
    best = tied[0]
    warnings = []
    for task in scores[best]:
        if task == selected_by:
            continue
        peak = max(lambdas, key=lambda lam: scores[lam][task])
        drop = scores[peak][task] - scores[best][task]
        if drop > warn_drop:
            warnings.append(f"λ = {best:g} (chosen by {selected_by}) scores {task} {100 * scores[best][task]:.2f}%, "
                            f"{100 * drop:.2f} points below its best ({100 * scores[peak][task]:.2f}% at λ = {peak:g})")
    return best, None, warnings


def parse_lambdas(text: str | list) -> list[float]:
    items = text if isinstance(text, list) else [x for x in str(text).replace(" ", "").split(",") if x]
    out = []
    for x in items:
        try:
            v = float(x)
        except (TypeError, ValueError):
            raise RecipeError(f"--lambdas: {x!r} is not a number (example: 0.5,0.6,0.7)") from None
        if not math.isfinite(v):
            raise RecipeError(f"--lambdas: {x!r} is not finite")
        out.append(v)
    if not out:
        raise RecipeError("--lambdas: give at least one value (example: 0.5,0.6,0.7)")
    if len(set(out)) != len(out):
        raise RecipeError("--lambdas: values repeat")
    return out


def lam_dir(lam: float) -> str:
    return f"lam-{lam:g}"


def recipe_key(recipe: Recipe) -> str:
    """Identifies the weights a recipe produces (a merge is deterministic in its recipe and sources)."""
    d = recipe.to_dict()
    srcs = d.pop("sources", None) or {}
    for k in ("output", "policy_used", "versions", "training", "eval_results", "name"):
        d.pop(k, None)
    pins = {r: {k: v for k, v in (s or {}).items() if k in ("revision", "files")} for r, s in srcs.items()}
    return "recipe:" + _sha({"recipe": d, "pins": pins})


def run_sweep(recipe: Recipe | str | os.PathLike, lambdas: list[float], tasks: list[str | Task], out: str | os.PathLike, *,
              source: str | None = None, limit: int | None = None, keep: bool = False,
              scratch: str | os.PathLike | None = None, device: str | None = None, merge_device: str = "cpu",
              batch_size: int = 8, max_new_tokens: int | None = None, progress: bool = True, workers: int = 2,
              write_recipe: str | os.PathLike | None = None, select: str | None = "mean",
              warn_drop: float = DEFAULT_WARN_DROP) -> SweepResult:
    from ..engine.merge import open_sources, run_merge
    from ..engine.methods import get_method

    t0 = time.perf_counter()
    base = recipe if isinstance(recipe, Recipe) else Recipe.load(recipe)
    if base.variant != "merged":
        raise RecipeError(f"a lambda sweep needs variant `merged` (the recipe says {base.variant!r})")
    tasks = [get_task(t) if isinstance(t, str) else t for t in tasks]
    if not tasks:
        raise EvalError("give at least one --task")
    selected_by = selection_key(select, [t.name for t in tasks])
    if write_recipe:  # before any merge: a wrong folder must not cost a whole sweep
        check_recipe_target(write_recipe, lambdas)
    recipes = {lam: dataclasses.replace(base, lam=lam, name=f"{base.name or 'viscodex'}-{lam_dir(lam)}").validate()
               for lam in lambdas}
    out = Path(out).expanduser().absolute()
    from .._util.atomic import check_not_overlapping
    from ..engine.sources import parse_spec

    check_not_overlapping(out, [parse_spec(s)[0] for s in (base.vlm, base.coder, base.base) if s])
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(scratch).expanduser().absolute() if scratch else out / ".merges"
    sources_by_need: dict[bool, dict] = {}

    def sources_for(r: Recipe) -> dict:
        need = get_method(r.method).needs_base(r.weights, r.params)
        if need not in sources_by_need:
            sources_by_need[need] = open_sources(r)
        return sources_by_need[need]

    reports: dict[float, list[dict]] = {}
    for lam in lambdas:
        r = recipes[lam]
        folder = scratch / lam_dir(lam)
        merged: list[Path] = []

        def prepare(r=r, folder=folder, merged=merged) -> Path:
            log.info("merging lambda=%g into %s", r.lam, folder)
            run_merge(r, folder, device=merge_device, force=True, progress=progress, hash_inputs=False,
                      sources=sources_for(r))
            merged.append(folder)
            return folder

        try:
            reports[lam] = evaluate_many(folder, tasks, source=source, limit=limit, cache_dir=out / lam_dir(lam),
                                         batch_size=batch_size, max_new_tokens=max_new_tokens, device=device,
                                         progress=progress, workers=workers, key=recipe_key(r), prepare=prepare)
        finally:
            if merged and not keep:
                shutil.rmtree(folder, ignore_errors=True)
        for rep in reports[lam]:
            rep["lambda"] = lam
            rep["model"] = str(folder) if keep else f"{r.name} (scratch merge, deleted)"
    if not keep:
        try:
            scratch.rmdir()
        except OSError:
            pass

    names = [t.name for t in tasks]
    scores = {lam: {rep["task"]: rep["score"] for rep in reports[lam]} for lam in lambdas}
    best, no_signal, warnings = choose_lambda(scores, selected_by, warn_drop)
    for w in warnings + ([no_signal] if no_signal else []):
        log.warning("%s", w)
    results = write_json(out / "results.json", {
        "recipe": base.to_dict(), "lambdas": lambdas, "tasks": names, "selected_by": selected_by, "best_lambda": best,
        "no_signal": no_signal, "warnings": warnings, "warn_drop": warn_drop,
        "scores": {f"{lam:g}": scores[lam] for lam in lambdas}, "reports": {f"{lam:g}": reports[lam] for lam in lambdas},
        "seconds": round(time.perf_counter() - t0, 1)})
    table = out / "table.md"
    table.write_text(render_table(lambdas, tasks, reports, best, selected_by=selected_by, no_signal=no_signal,
                                  warnings=warnings), encoding="utf-8")
    plot = write_plot(out / "plot.png", lambdas, tasks, scores, best)
    res = SweepResult(out, lambdas, names, scores, best, selected_by, reports, table, plot, results,
                      no_signal=no_signal, warnings=warnings)
    if write_recipe:
        res.recipe_written = record_sweep(write_recipe, res)
    return res


def render_table(lambdas: list[float], tasks: list[Task], reports: dict[float, list[dict]], best: float | None, *,
                 selected_by: str | None = None, no_signal: str | None = None, warnings: list[str] | None = None) -> str:
    head = ["λ"] + [f"{t.name} {t.metric_name or t.metric} (%)" for t in tasks]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for lam in lambdas:
        by = {r["task"]: r for r in reports[lam]}
        cells = [f"{lam:g}"] + [f"{100 * by[t.name]['score']:.2f}" for t in tasks]
        if lam == best:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    n = {t.name: reports[lambdas[0]][i]["n"] for i, t in enumerate(tasks)}
    selected_by = selected_by or tasks[0].name
    lines.append("")
    verdict = no_signal[0].upper() + no_signal[1:] if no_signal else f"Best λ = {best:g} by {selected_by}"
    lines.append(f"{verdict}; samples per task: " + ", ".join(f"{k} {v}" for k, v in n.items()) + "; greedy decoding.")
    lines += [f"Warning: {w}" for w in warnings or []]
    return "\n".join(lines) + "\n"


def write_plot(path: Path, lambdas: list[float], tasks: list[Task], scores: dict[float, dict[str, float]],
               best: float | None) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    xs = sorted(lambdas)
    for t in tasks:
        ax.plot(xs, [100 * scores[lam][t.name] for lam in xs], marker="o", label=f"{t.name} ({t.metric_name or t.metric})")
    if best is not None:
        ax.scatter([best], [100 * max(scores[best].values())], s=180, marker="*", color="gold", edgecolor="black",
                   zorder=5, label=f"best λ = {best:g}")
    ax.set_xlabel("λ (weight of the VLM's task vector)")
    ax.set_ylabel("score (%)")
    ax.set_title("viscodex lambda sweep")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def check_recipe_target(folder: str | os.PathLike, lambdas: list[float]) -> float:
    """The lambda of the merged folder whose recipe will get the results; refused (before any
    merge) when it is not a folder written by `viscodex merge` or its lambda is not swept."""
    from ..engine.recipe import RECIPE_FILE

    path = Path(folder).expanduser()
    if not (path / RECIPE_FILE).is_file():
        raise EvalError(f"--write-recipe {folder}: no {RECIPE_FILE} there (give a folder written by `viscodex merge`)")
    folder_recipe = Recipe.load(path)
    lam = next((x for x in lambdas if math.isclose(x, folder_recipe.lam, abs_tol=1e-9)), None)
    if lam is None:
        raise EvalError(f"--write-recipe {folder}: it was merged with lambda {folder_recipe.lam:g}, which the sweep does "
                        f"not evaluate ({', '.join(f'{x:g}' for x in lambdas)}); add it to --lambdas, or merge at the "
                        "best lambda after the sweep and record that folder")
    return lam


def record_sweep(folder: str | os.PathLike, res: SweepResult) -> Path:
    """Record, in a merged folder's recipe, the sweep's results for that folder's own lambda (a card
    shows numbers of the model it describes), with the sweep summary alongside."""
    lam = check_recipe_target(folder, res.lambdas)
    summary = {"lambdas": {f"{x:g}": round(100 * criterion(res.scores[x], res.selected_by), 2) for x in res.lambdas},
               "best_lambda": res.best_lambda, "selected_by": res.selected_by}
    if res.no_signal:
        summary["no_signal"] = res.no_signal
    first = res.selected_by if res.selected_by in res.tasks else res.tasks[0]
    entries = [e for rep in res.reports[lam]
               for e in card_entries(rep, {"lambda": lam, **({"sweep": summary} if rep["task"] == first else {})})]
    return write_to_recipe(folder, entries)


__all__ = ["run_sweep", "parse_lambdas", "SweepResult", "recipe_key", "render_table", "write_plot", "record_sweep",
           "choose_lambda", "selection_key", "check_recipe_target"]
