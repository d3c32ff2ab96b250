"""One way to print a byte count, so the same number reads the same in every command."""
from __future__ import annotations

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
