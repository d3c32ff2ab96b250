"""The toy world's tasks (toy/world.py) as an SFT dataset on disk, in the layouts `viscodex train`
reads (MCD: data.json + images/, or JSONL). `viscodex demo` fine-tunes its variants on such a
folder through `run_train`, and tests and benchmarks use it to try training without downloads:
one toy world serves the demo, the evaluation tasks and the training data.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from ..toy import world
from .data import IMAGE_PLACEHOLDER

# write_toy_dataset's default: image -> code (the SFT task), grounding, image -> code, text-only coding
DEFAULT_MIX = ("image_code", "grounding", "image_code", "coding")
LAYOUTS = ("mcd", "jsonl")


def _user_text(task: world.Task, sample: world.Sample) -> str:
    """The task's user turn as MCD text: each image entry becomes an `<image>` placeholder where
    the task puts it, so training sees the prompt evaluation sends (task.messages)."""
    (user,) = [m for m in task.messages(sample) if m["role"] == "user"]
    return "".join(IMAGE_PLACEHOLDER if c["type"] == "image" else c["text"] for c in user["content"])


def write_samples(folder: str | os.PathLike, samples: Sequence[tuple[world.Task, world.Sample]],
                  layout: str = "mcd") -> Path:
    """Write (task, sample) pairs as records (category = the task's name) with their images under
    `folder`/images; returns the data file's path."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: choose from {', '.join(LAYOUTS)}")
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i, (task, sample) in enumerate(samples):
        images = []
        if task.uses_image:
            rel = f"images/{i:05d}.png"
            sample.image.save(folder / rel)
            images.append(rel)
        records.append({"messages": [{"role": "user", "content": _user_text(task, sample)},
                                     {"role": "assistant", "content": sample.target}],
                        "images": images, "category": task.name})
    if layout == "jsonl":
        path = folder / "data.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path = folder / "data.json"
        path.write_text(json.dumps(records, indent=1))
    return path


def write_toy_dataset(folder: str | os.PathLike, n: int = 32, seed: int = 0, image_size: int = 56,
                      layout: str = "mcd", mix: Sequence[str] = DEFAULT_MIX) -> Path:
    """`n` records cycling through the tasks named in `mix` (toy/world.py's TASKS), each task's
    samples drawn by world.make_samples from `seed`; returns the data file's path."""
    unknown = [t for t in mix if t not in world.TASKS]
    if unknown or not mix:
        raise ValueError(f"mix {list(mix)!r}: tasks are {', '.join(world.TASKS)}")
    order = [mix[i % len(mix)] for i in range(n)]
    drawn = {t: iter(world.make_samples(world.TASKS[t], world.all_scenes(), order.count(t), f"toy-data-{seed}",
                                        image_size=image_size)) for t in set(order)}
    return write_samples(folder, [(world.TASKS[t], next(drawn[t])) for t in order], layout=layout)


__all__ = ["DEFAULT_MIX", "write_samples", "write_toy_dataset"]
