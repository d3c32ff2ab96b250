"""The typed options of evaluation, written once: `EvalOptions` feeds evaluate_many and
score_predictions (`viscodex eval`), `SweepOptions` feeds run_sweep (`viscodex sweep`). The CLI
commands are derived from these fields (viscodex.cli_options) and tests hold their defaults equal
to the library functions', so the command line and the library cannot drift.

Imports nothing heavy: the CLI builds its options from these classes at start-up."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .tasks import Task

DEFAULT_WARN_DROP = 0.05  # 5 points: the sweep warns when the chosen lambda costs another task this much


@dataclass
class GenerationOptions:
    """What eval and sweep share: which samples, and how answers are generated and scored."""

    source: str | None = None  # Omit for the Hub, 'sample' for the tiny offline sample, or a local copy.
    limit: int | None = None  # Evaluate only the first N samples of each task.
    batch_size: int = 8  # Prompts per generate() call (halved on CUDA OOM).
    max_new_tokens: int | None = None  # Tokens to generate per answer (default: per task).
    device: str | None = None  # Where generation runs: cuda, cuda:1, cpu (default: cuda when available).
    workers: int = 2  # Threads scoring in the sandbox while generation goes on.
    progress: bool = True  # A tqdm bar per task.

    def kwargs(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class EvalOptions(GenerationOptions):
    """evaluate_many's options, plus the settings of the tasks that take any (the ChartMimic judge,
    Design2Code's CLIP model)."""

    cache_dir: Path | None = None  # Per-sample results for resuming.
    resume: bool = True  # Reuse per-sample results of an earlier run.
    judge_url: str | None = None  # ChartMimic's high-level score: an OpenAI-compatible endpoint (e.g. http://localhost:8000/v1) that judges the drawn chart; off by default.
    judge_model: str | None = None  # The judge model's name at --judge-url (the benchmark used GPT-4o).
    judge_key_env: str = "OPENAI_API_KEY"  # Environment variable holding the judge's API key (sent as a Bearer token, never printed).
    clip_model: str | None = None  # Design2Code's CLIP score: a CLIP checkpoint (folder or Hub id, e.g. openai/clip-vit-base-patch32); skipped when absent.

    TASK_SETTINGS = ("judge_url", "judge_model", "judge_key_env", "clip_model")

    def tasks(self, names: list[str | Task]) -> list[Task]:
        """The tasks by name, given the judge and the CLIP model where set."""
        from .catalog import get_task
        from .chartmimic import with_judge
        from .design2code import with_clip

        tasks = [get_task(t) if isinstance(t, str) else t for t in names]
        return with_clip(with_judge(tasks, self.judge_url, self.judge_model, self.judge_key_env), self.clip_model)

    def kwargs(self) -> dict[str, Any]:
        """evaluate_many's keyword arguments."""
        return {k: v for k, v in super().kwargs().items() if k not in self.TASK_SETTINGS}

    def score_kwargs(self) -> dict[str, Any]:
        """score_predictions' keyword arguments (no model: nothing is generated or cached)."""
        return {k: getattr(self, k) for k in ("source", "limit", "workers")}


@dataclass
class SweepOptions(GenerationOptions):
    """run_sweep's options: the evaluation's, plus where and how the merges are made and judged."""

    merge_device: str = "cpu"  # Where the merge math runs.
    scratch: Path | None = None  # Folder for the temporary merges (default: <out>/.merges).
    keep: bool = False  # Keep each lambda's merged folder.
    write_recipe: Path | None = None  # Merged folder whose viscodex_recipe.yaml gets the results for its lambda.
    select: str = "mean"  # How the best lambda is picked: mean (of the tasks' scores), min, or a task name.
    warn_drop: float = DEFAULT_WARN_DROP  # Warn when the chosen lambda scores another task this much (0.05 = 5 points) below its best.
