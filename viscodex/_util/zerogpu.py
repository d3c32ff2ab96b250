"""ZeroGPU sizing, shared by `viscodex space` (which picks the slice from the weights) and the app
(which asks for it per call): one threshold, one rule."""
from __future__ import annotations

import os

GIB = 1024**3
# Above this much CUDA memory a ZeroGPU call needs the `xlarge` slice (2x quota); spaces 0.51's
# configs.json sets 45097156608 B = 42 GiB for `large`.
XLARGE_THRESHOLD_GIB = 42.0


def zerogpu_slice(total_bytes: float, threshold_gib: float = XLARGE_THRESHOLD_GIB) -> str:
    """'large' up to the threshold, 'xlarge' above it."""
    return "xlarge" if total_bytes > threshold_gib * GIB else "large"


GPU_SIZE_ENV = "VISCODEX_GPU_SIZE"  # ZeroGPU slice (large/xlarge), set by `viscodex space`


# Decode speed of one column while all three stream at once: 7.5 tokens/s per column for three
# 7B-shape variants on a whole H200 (benchmarks/README.md, "GPU": decoding at batch 1 is bound by
# per-token kernel launches, and the three generate threads share them), so 7 with a margin.
COLUMN_TOKENS_PER_S = 7.0


def gpu_duration(max_new_tokens: int, pixels: int) -> int:
    """Seconds to ask ZeroGPU for: three 7B backbones decoding side by side at the measured
    per-column rate (+25%), one vision pass, plus start-up slack. Clamped to [20, 300]; a call
    that outruns its duration is killed, so this errs long."""
    est = 15 + int(max_new_tokens) / COLUMN_TOKENS_PER_S * 1.25 + pixels / 1e6 * 3
    return int(min(300, max(20, est)))


def zerogpu_size(total_bytes: int) -> str:
    """The ZeroGPU slice: VISCODEX_GPU_SIZE when set, else from the measured footprint."""
    size = os.environ.get(GPU_SIZE_ENV, "").strip().lower()
    if size:
        if size not in ("large", "xlarge"):
            from ..errors import AppError

            raise AppError(f"{GPU_SIZE_ENV}={size!r}: expected large or xlarge")
        return size
    return zerogpu_slice(total_bytes)
