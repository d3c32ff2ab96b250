"""ZeroGPU sizing, shared by `viscodex space` (which picks the slice from the weights) and the app
(which asks for it per call): one threshold, one rule."""
from __future__ import annotations

GIB = 1024**3
# Above this much CUDA memory a ZeroGPU call needs the `xlarge` slice (2x quota); spaces 0.51's
# configs.json sets 45097156608 B = 42 GiB for `large`.
XLARGE_THRESHOLD_GIB = 42.0


def zerogpu_slice(total_bytes: float, threshold_gib: float = XLARGE_THRESHOLD_GIB) -> str:
    """'large' up to the threshold, 'xlarge' above it."""
    return "xlarge" if total_bytes > threshold_gib * GIB else "large"
