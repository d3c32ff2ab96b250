"""The built-in tasks by name. A module of its own so that the task modules can import the
interface (tasks.py) while the lookup imports them: the dependency points one way."""
from __future__ import annotations

import re

from . import chartmimic, design2code, mmcode, toy  # noqa: F401  (they register themselves)
from .tasks import ALIASES, TASKS, EvalError, Task


def get_task(name: str) -> Task:
    """A task by name (case- and dash/underscore-insensitive)."""
    key = re.sub(r"[-\s]", "_", name.strip().lower())
    key = ALIASES.get(key, key)
    if key not in TASKS:
        raise EvalError(f"unknown task {name!r}; choose from {', '.join(task_names())}")
    return TASKS[key]()


def task_names() -> list[str]:
    return sorted(TASKS)
