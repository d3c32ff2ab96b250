"""Byte sizes: one way to print them (human_size) and one way to read them (parse_size), so the
same number reads the same in every command. Decimal and binary units mean what they say, as in
transformers' `max_shard_size`: 5GB = 5 * 10**9 bytes, 5GiB = 5 * 2**30 bytes."""
from __future__ import annotations

import math
import re

from ..errors import RecipeError

UNITS = ("KiB", "MiB", "GiB", "TiB")


def human_size(n: float) -> str:
    """Binary units with two decimals: 512 B, 1.50 KiB, 5.00 GiB (a shard limit of 5 GiB prints as one)."""
    if n < 1024:
        return f"{n:.0f} B"
    for unit in UNITS:
        n /= 1024
        if n < 1024 or unit == UNITS[-1]:
            break
    return f"{n:.2f} {unit}"


PARSE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
         "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMGT]?I?B?)\s*$", re.I)

# One default for the library and the CLI (transformers' save_pretrained default too).
DEFAULT_SHARD_SIZE = "5GB"


def parse_size(s: str | int, flag: str = "--shard-size (shard_size=)") -> int:
    """A positive, finite byte count from 5GB / 5GiB / 500MB / 1048576. Raises RecipeError naming `flag`."""
    if isinstance(s, bool):
        raise RecipeError(f"{flag} {s!r}: expected a size such as 5GB, 5GiB or 500MB")
    if isinstance(s, int):
        n = s
    else:
        m = _SIZE.match(str(s))
        unit = m and m.group(2).upper()
        if not m or unit not in PARSE_UNITS:
            raise RecipeError(f"{flag} {s!r}: not a size; write e.g. 5GB (5*10^9 bytes), 5GiB (5*2^30) or 500MB")
        x = float(m.group(1)) * PARSE_UNITS[unit]
        if not math.isfinite(x) or x >= 2**63:
            raise RecipeError(f"{flag} {s!r}: too large; write e.g. 5GB")
        n = int(x)
    if n <= 0:
        raise RecipeError(f"{flag} {s!r}: must be a positive size, e.g. 5GB")
    return n
