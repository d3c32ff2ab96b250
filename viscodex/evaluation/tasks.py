"""The evaluation task interface and its registry.

A task knows four things: where its samples come from (the Hub, a local copy, or the tiny sample
the package ships), how to pose a sample to a chat model (messages in the processor's format plus
the images), how to score one answer, and how to describe itself in a model card (`model-index`).

Scores are dicts of floats; every task puts its headline number in `score` (in [0, 1]), so a
sweep can rank lambdas by any task. Generated code is never run here: scorers use the subprocess
sandbox (`viscodex.sandbox`) or a separate headless browser process.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import EvalError

SAMPLES_DIR = Path(__file__).parent / "samples"
SAMPLE_SOURCE = "sample"  # --source value selecting the tiny offline sample shipped with the package


@dataclass
class EvalSample:
    """One benchmark item: a stable id, the instruction text, its images and what scoring needs."""

    id: str
    prompt: str
    images: list = field(default_factory=list)  # PIL images, in the order the prompt refers to them
    reference: dict[str, Any] = field(default_factory=dict)  # task-specific (tests, reference image, html)


Score = dict[str, Any]  # floats (means are reported) plus an optional "message" string


class Task:
    """Base class. Subclasses set the class attributes and implement `load` and `score`."""

    name: str = ""
    title: str = ""
    dataset_id: str | None = None  # Hub id of the real benchmark (model-index dataset.type)
    dataset_name: str = ""  # display name (model-index dataset.name)
    split: str = "test"
    metric: str = "score"  # model-index metric.type of the headline `score`
    metric_name: str = ""  # human label of the headline metric
    official: bool = False  # True only when `score` is computed the way the benchmark's own code computes it
    max_new_tokens: int = 1024
    uses_images: bool = True
    version: int = 1  # bump when prompts or scoring change: invalidates cached per-sample results
    generated: bool = False  # samples are generated locally (no benchmark to download)

    def load(self, source: str | None = None, limit: int | None = None) -> list[EvalSample]:
        """Samples from `source`: None = the real benchmark on the Hub, "sample" = the tiny copy
        shipped with viscodex, else a local file or folder in the benchmark's own format."""
        raise NotImplementedError

    def messages(self, sample: EvalSample) -> list[dict]:
        """A single user turn: one image entry per image, then the instruction (Qwen2.5-VL order)."""
        content: list[dict] = [{"type": "image"} for _ in sample.images]
        content.append({"type": "text", "text": sample.prompt})
        return [{"role": "user", "content": content}]

    def score(self, output: str, sample: EvalSample) -> Score:
        raise NotImplementedError

    @contextlib.contextmanager
    def scorer(self) -> Iterator[Callable[[str, EvalSample], Score]]:
        """A scoring function for one run (tasks holding a resource, like a browser, override this)."""
        yield self.score

    # scoring may run in a few threads (each call starts its own sandboxed subprocess)
    parallel_scoring: bool = True

    def cache_settings(self) -> dict[str, Any]:
        """Scoring settings that change per-sample results (part of the resume cache's key)."""
        return {}

    def describe(self) -> dict[str, Any]:
        return {"task": self.name, "title": self.title, "dataset": self.dataset_id, "dataset_name": self.dataset_name,
                "split": self.split, "metric": self.metric, "metric_name": self.metric_name or self.metric,
                "official": self.official}


TASKS: dict[str, Callable[[], Task]] = {}
ALIASES: dict[str, str] = {}


def register(factory: Callable[[], Task], name: str, *aliases: str) -> None:
    TASKS[name] = factory
    for a in aliases:
        ALIASES[a] = name


# ---------------------------------------------------------------- shared helpers
_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def extract_code(text: str, language: str) -> str:
    """The code to run from a model answer: the first fenced block tagged `language`, else the
    first fenced block, else the whole answer (models often answer with bare code)."""
    aliases = {"py": "python", "python3": "python", "htm": "html", "xhtml": "html"}
    blocks = [(aliases.get(m.group(1).lower(), m.group(1).lower()), m.group(2)) for m in _FENCE.finditer(text)]
    for lang, code in blocks:
        if lang == language:
            return code.strip("\n")
    if blocks:
        return blocks[0][1].strip("\n")
    return text.strip()


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, object) for every non-blank line of a JSONL file (.gz read as gzip); a line
    that is not JSON is an error naming the file and line."""
    import gzip
    import json

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except ValueError as e:
                raise EvalError(f"{path}:{n}: not JSON ({e})") from None


def set_on(tasks: list[Task], kind: type, flag: str, **attrs) -> list[Task]:
    """Give the tasks of class `kind` a setting from a command-line flag; a flag for a task that is
    not run is an error saying which --task it needs."""
    if not any(isinstance(t, kind) for t in tasks):
        raise EvalError(f"{flag} applies to {kind.name} only; add --task {kind.name}")
    for t in tasks:
        if isinstance(t, kind):
            for k, v in attrs.items():
                setattr(t, k, v)
    return list(tasks)


def limited(items: list, limit: int | None) -> list:
    return items if limit is None or limit <= 0 else items[:limit]


__all__ = ["Task", "EvalSample", "EvalError", "Score", "TASKS", "register",
           "extract_code", "iter_jsonl", "set_on", "SAMPLE_SOURCE", "SAMPLES_DIR"]
