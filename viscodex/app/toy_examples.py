"""Example rows for the tiny demo models: toy-world scenes (viscodex.toy.world) posed the way the demo
trio is trained on them, so `viscodex demo`'s trained trio answers them meaningfully (the untrained
offline trio answers noise; the page says so)."""
from __future__ import annotations

import random
from pathlib import Path

from .._util.cache import cache_root
from ..toy import world

# The scenes shown (colour, shape, size) and the toy tasks asked about each.
SCENES = (("red", "circle", "large"), ("blue", "square", "small"), ("green", "triangle", "large"),
          ("purple", "star", "small"))
TOY_TASKS = (world.GROUNDING, world.IMAGE_CODE)
IMAGE_PX = 224  # drawn larger than the 56 px the trio trains on: the processor resizes, people can see it
# Models smaller than this are the toy trio (real VLMs are gigabytes), whatever their folder.
TOY_MODEL_BYTES = 64 * 1024**2


def example_dir() -> Path:
    return cache_root() / "app-toy-examples"


def toy_examples(free_text_task: str) -> list[list]:
    """[image path, task, instruction] rows, images drawn once into the cache."""
    d = example_dir()
    d.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (color, shape, size) in enumerate(SCENES):
        scene = world.Scene(color, shape, size)
        path = d / f"{size}-{color}-{shape}.png"
        if not path.exists():
            tmp = path.with_suffix(".tmp.png")
            world.render(scene, IMAGE_PX, random.Random(i)).save(tmp)
            tmp.replace(path)  # a concurrent start never sees half a file
        task = TOY_TASKS[i % len(TOY_TASKS)]
        rows.append([str(path), free_text_task, task.prompt(scene)])
    return rows
