"""The typed options of the Hub commands, written once: `CardOptions` feeds build_card/write_card
(`viscodex card`), `PublishOptions` feeds publish (`viscodex publish`), `SpaceOptions` feeds
publish_space (`viscodex space`). The CLI commands are derived from these fields
(viscodex.cli_options) and tests hold their defaults equal to the library functions'.

Imports nothing heavy: the CLI builds its options from these classes at start-up."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class CardOptions:
    repo_id: str | None = None  # Hub id the usage snippet loads (default: the folder's name).
    license: str | None = None  # Licence id to declare (decides a conflict between the sources' licences).

    def kwargs(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class PublishOptions:
    private: bool = False  # Create the repo private.
    revision: str = "main"  # Branch to commit to (created if needed).
    license: str | None = None  # Licence id to declare in the card.
    dry_run: bool = False  # Print the card and the files with sizes; upload nothing.

    def kwargs(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# CLI flags of the Space's fields that are not --field-name
SPACE_FLAGS: dict[str, tuple[str, ...]] = {"repo_id": ("--repo",), "keep": ("--out",)}


@dataclass
class SpaceOptions:
    model: str  # Hub id of the merged model the demo shows.
    repo_id: str  # Hub id of the Space, namespace/name (created if needed).
    base_vlm: str | None = None  # Hub id of the VLM it was merged from (default: read from the model's recipe).
    swapped: str | None = None  # Hub id of the coder-swapped baseline, if published.
    hardware: str | None = None  # zerogpu (default) or a Space hardware flavor.
    app_dir: Path | None = None  # Folder with app.py and requirements.txt (default: the checkout's, else the one in the package).
    keep: Path | None = None  # Also keep the assembled Space folder here.
    private: bool = False  # Create the Space private.
    dry_run: bool = False  # Print the Space README, files and variables; upload nothing.

    def kwargs(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
