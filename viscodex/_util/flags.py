"""How an error names an option: its CLI flag and its Python argument, "--lr (learning_rate=)",
so the message reads right whether the call came from `viscodex train --lr` or `viscodex.train(learning_rate=)`."""
from __future__ import annotations

from collections.abc import Mapping


def cli_flag(name: str, names: Mapping[str, tuple[str, ...]] | None = None) -> str:
    """The CLI flag of field `name`: its entry in `names` (first spelling), else --name-with-dashes."""
    spelled = (names or {}).get(name)
    return spelled[0] if spelled else "--" + name.replace("_", "-")


def named(name: str, names: Mapping[str, tuple[str, ...]] | None = None) -> str:
    """'learning_rate' -> '--lr (learning_rate=)' with names={'learning_rate': ('--lr',)}."""
    return f"{cli_flag(name, names)} ({name}=)"
