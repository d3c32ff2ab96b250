"""torch's CPU thread count, set for a block and restored after it."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with `n` torch threads (None: leave torch's setting)."""
    import torch

    prev = torch.get_num_threads()
    if n:
        if n < 1:
            raise ValueError(f"torch_threads: the thread count must be >= 1, got {n}")
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)
