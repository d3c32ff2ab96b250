"""The typed options of the comparison app, written once: `AppOptions` feeds run_app (`viscodex
app`). The CLI command is derived from these fields (viscodex.cli_options) and a test holds their
defaults equal to run_app's; the variant fields are the app's variants (sources.ENV_VARS).

Imports nothing heavy: the CLI builds its options from this class at start-up."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .sources import ENV_VARS


@dataclass
class AppOptions:
    vlm: str | None = None  # Base VLM: model id or folder (env VISCODEX_BASE_VLM).
    swapped: str | None = None  # Coder-swapped model (env VISCODEX_SWAPPED).
    merged: str | None = None  # Merged VisCodex model (env VISCODEX_MERGED).
    port: int | None = None  # Server port (default 7860).
    host: str | None = None  # Server address, e.g. 0.0.0.0 (default 127.0.0.1).
    recipe: str | None = None  # Serve a recipe's VLM and its swapped/merged variants, merged into the cache once (a path or a packaged name, e.g. viscodex-8b; env VISCODEX_RECIPE). Sizes are printed first.

    def variants(self) -> dict[str, str | None]:
        """run_app's first argument: the models by variant (unset ones keep the app's defaults)."""
        return {k: getattr(self, k) for k in ENV_VARS}

    def kwargs(self) -> dict[str, Any]:
        """run_app's keyword arguments."""
        return {"port": self.port, "host": self.host, "recipe": self.recipe}
