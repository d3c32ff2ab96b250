"""The CLI flags of TrainConfig's fields where they are not --field-name: `viscodex train` is
derived with these (cli.py) and the library's errors name them, so the two cannot disagree."""
from __future__ import annotations

from .._util.flags import named

FLAG_NAMES: dict[str, tuple[str, ...]] = {
    "out": ("--out", "-o"),
    "learning_rate": ("--lr",),
    "extra_args": ("--extra-arg",),
    "workers": ("--loader-workers",),
}


def arg(field: str) -> str:
    """How an error names a train option: 'learning_rate' -> '--lr (learning_rate=)'."""
    return named(field, FLAG_NAMES)
