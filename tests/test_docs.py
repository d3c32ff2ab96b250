"""Repository hygiene the README promises: a LICENSE matching pyproject's licence, and no doc that
links to (or names as a doc) a file the repository does not have."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]


def test_license_file_matches_pyproject():
    licence = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    assert licence == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_relative_links_resolve():
    broken = []
    for doc in docs():
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            path = target.split("#")[0]
            if not path or re.match(r"^[a-z]+:", path) or path.endswith(".png") and doc.name == "eval.md":
                continue  # URLs; eval.md quotes MMCode's `![image](1.png)` markup, not a link of ours
            if not (doc.parent / path).exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_docs_name_only_files_that_exist():
    """`design.md`-style references to a markdown file of this repo must point at one that exists."""
    have = {p.name for p in ROOT.rglob("*.md") if ".git" not in p.parts}
    have |= {"results.md", "table.md"}  # what `viscodex demo` and `viscodex sweep` write, named in their docs
    missing = []
    for doc in docs():
        for name in re.findall(r"`([\w./-]+\.md)`", doc.read_text()):
            if Path(name).name not in have:
                missing.append(f"{doc.relative_to(ROOT)}: {name}")
    assert not missing, missing
