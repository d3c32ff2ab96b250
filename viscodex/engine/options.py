"""How a merge runs, as opposed to what it merges (the Recipe): the typed options of `run_merge`.
The CLI's `merge` options are derived from these fields (viscodex.cli_options), and a test holds
the defaults equal to run_merge's, so the library and the command line cannot drift."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .._util.flags import named
from .._util.sizes import DEFAULT_SHARD_SIZE  # "5GB", transformers' default; engine.merge uses the same (checked by a test)

# CLI flags of the fields that are not --field-name: `viscodex merge` is derived with these (cli.py)
# and run_merge's errors name them, so the two cannot disagree.
FLAG_NAMES: dict[str, tuple[str, ...]] = {"threads": ("--read-threads",)}


def arg(field: str) -> str:
    """How an error names a merge option: 'threads' -> '--read-threads (threads=)'."""
    return named(field, FLAG_NAMES)


@dataclass
class MergeOptions:
    device: str = "cpu"  # where the math runs: cpu, cuda, cuda:1 ...
    shard_size: str | int = DEFAULT_SHARD_SIZE  # max bytes per output shard: 5GB, 500MB or a byte count
    threads: int = 4  # reader threads
    compute_threads: int | None = None  # torch threads for the math (default: what the pipeline leaves free)
    force: bool = False  # replace an existing output folder
    hash_inputs: bool = True  # sha256 of local input files, recorded in the recipe
    progress: bool = True  # a tqdm bar

    def kwargs(self) -> dict[str, Any]:
        """run_merge's keyword arguments."""
        return dataclasses.asdict(self)
