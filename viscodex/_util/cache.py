"""Where viscodex keeps what it builds once and reuses (demo trios, merged variants, datasets)."""
from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "VISCODEX_CACHE"


def cache_root() -> Path:
    """$VISCODEX_CACHE, else the user cache dir (~/.cache/viscodex on Linux)."""
    import platformdirs

    return Path(os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("viscodex"))
