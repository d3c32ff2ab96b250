"""`namespace/name[@revision]`: the one parser of a Hub reference with an optional revision."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class HubRef:
    """A model/dataset reference: `ref` is a Hub id or a local path, `revision` a branch, tag or commit."""

    ref: str
    revision: str | None = None

    @classmethod
    def parse(cls, spec: str) -> "HubRef":
        """'org/name@rev' -> HubRef('org/name', 'rev'); a path that exists is never split (folders
        may contain '@'), and an empty revision ('org/name@') means none."""
        if Path(spec).expanduser().exists() or "@" not in spec:
            return cls(spec, None)
        ref, rev = spec.rsplit("@", 1)
        return cls(ref, rev or None)

    def pinned(self, revision: str | None) -> "HubRef":
        """This reference at `revision` unless it already names one (or is a local path, which has
        no revisions): how re-running a written recipe pins the revisions it resolved."""
        if self.revision or not revision or Path(self.ref).expanduser().exists():
            return self
        return HubRef(self.ref, revision)

    @property
    def is_hub_id(self) -> bool:
        """Whether `ref` looks like a Hub id (namespace/name) rather than a local path."""
        return bool(HUB_ID.match(self.ref)) and not Path(self.ref).expanduser().exists()

    def __str__(self) -> str:
        return self.ref + (f"@{self.revision}" if self.revision else "")
