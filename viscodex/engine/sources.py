"""Sources: a local folder or a Hub repo (`org/name[@revision]`), opened lazily.

Opening reads only configs and safetensors headers; tensor bytes are read one at a time later.
Hub sources go through huggingface_hub's `snapshot_download` with only the files a merge needs, so
HF_ENDPOINT, HF_HUB_OFFLINE, the cache and revisions behave as everywhere else in the ecosystem.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import arch
from .._util.hubref import HUB_ID, HubRef
from ..errors import SourceError
from .safetensors_io import TensorInfo, read_header

LICENSE_GLOBS = ("LICENSE*", "LICENCE*", "COPYING*")  # licence texts, which ship with derived weights
META_PATTERNS = ["*.json", "*.jinja", "*.txt", "*.model", "*.tiktoken", "README.md", *LICENSE_GLOBS]


def parse_spec(spec: str) -> tuple[str, str | None]:
    """'org/name@rev' -> ('org/name', 'rev'); a path that exists is never split."""
    h = HubRef.parse(spec)
    return h.ref, h.revision


def display_name(spec: str) -> str:
    """What a recipe or card shows: the Hub id, or a local folder's name (never an absolute path)."""
    h = HubRef.parse(spec)
    p = Path(h.ref).expanduser()
    return p.resolve().name if p.exists() else str(h)


@dataclass
class Source:
    """One opened checkpoint. `tensors` maps canonical (legacy-layout) names to where they live."""

    spec: str
    role: str  # "vlm", "coder" or "base"
    path: Path
    repo_id: str | None
    revision: str | None  # resolved commit for Hub sources
    config: dict
    layout: str = "legacy"
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    tied: bool = False
    has_weights: bool = True

    @property
    def name(self) -> str:
        return self.repo_id or self.path.name

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", ""))

    @property
    def is_vlm(self) -> bool:
        return self.model_type in arch.VLM_MODEL_TYPES

    @property
    def text_config(self) -> dict:
        """The language model's settings (nested under text_config for VLMs)."""
        tc = self.config.get("text_config")
        if self.is_vlm and isinstance(tc, dict):
            merged = {k: v for k, v in self.config.items() if k != "text_config" and k != "vision_config"}
            merged.update(tc)
            return merged
        return self.config

    def info(self, name: str) -> TensorInfo:
        if name in self.tensors:
            return self.tensors[name]
        alias = arch.TIED_ALIAS.get(name)
        if self.tied and alias in self.tensors:
            return self.tensors[alias]
        raise KeyError(name)

    def has(self, name: str) -> bool:
        try:
            self.info(name)
            return True
        except KeyError:
            return False

    def weight_files(self) -> list[Path]:
        return sorted({t.file for t in self.tensors.values()})

    @property
    def license(self) -> str | None:
        """The licence declared in the source's model card (README.md front matter), if any."""
        readme = self.path / "README.md"
        if not readme.is_file():
            return None
        return license_of(front_matter(readme.read_text(errors="replace")))

    def file_hashes(self) -> dict[str, str]:
        """sha256 of each weight file. Hub blobs are stored under their sha256, so those are free."""
        out = {}
        for f in self.weight_files():
            real = Path(os.path.realpath(f))
            if self.repo_id and re.fullmatch(r"[0-9a-f]{64}", real.name):
                out[f.name] = real.name
            else:
                out[f.name] = sha256_file(real)
        return out

    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())


def front_matter(text: str) -> dict:
    """The YAML metadata block of a model card ({} when absent or invalid)."""
    m = re.match(r"^\s*---\r?\n(.*?)\r?\n---", text, re.S)
    if not m:
        return {}
    try:
        data = yaml.safe_load(m.group(1))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def license_of(meta: dict) -> str | None:
    """Hub licence id from card metadata ("other:<license_name>" for custom licences)."""
    lic = meta.get("license")
    if isinstance(lic, list):
        lic = lic[0] if len(lic) == 1 else None
    if not isinstance(lic, str) or not lic:
        return None
    if lic == "other" and meta.get("license_name"):
        return f"other:{meta['license_name']}"
    return lic


def sha256_file(path: Path, chunk: int = 16 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def _download(repo_id: str, revision: str | None, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except RepositoryNotFoundError as e:
        raise SourceError(f"{repo_id}: no such model repo on the Hub (or no access: log in with `hf auth login`)") from e
    except RevisionNotFoundError as e:
        raise SourceError(f"{repo_id}: revision {revision!r} not found") from e
    except GatedRepoError as e:
        raise SourceError(f"{repo_id}: gated repo, accept its licence on the Hub and log in") from e
    except LocalEntryNotFoundError as e:
        raise SourceError(
            f"{repo_id}: not in the local cache and the Hub cannot be reached (HF_HUB_OFFLINE set or no network)"
        ) from e


def _load_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise SourceError(f"{path}: missing {what}") from e
    except json.JSONDecodeError as e:
        raise SourceError(f"{path}: invalid JSON ({e})") from e


def open_source(spec: str, role: str, weights: bool = True) -> Source:
    """Open a source: resolve it (download from the Hub if needed) and read its config and headers.

    weights=False fetches only metadata files for a Hub source; tensor shapes then come from the
    Hub's safetensors-metadata endpoint (header ranges), so a base that a method does not read is
    still checked for shape compatibility without downloading gigabytes.
    """
    ref, rev = parse_spec(spec)
    local = Path(ref).expanduser()
    repo_id = None
    if local.exists():
        if not local.is_dir():
            raise SourceError(f"{ref}: {role} source must be a model folder, got a file")
        path = local.resolve()
        if rev:
            raise SourceError(f"{ref}: a local folder has no revisions (got @{rev})")
    elif HUB_ID.match(ref) and not ref.startswith("."):
        repo_id = ref
        patterns = META_PATTERNS + (["*.safetensors"] if weights else [])
        try:
            path = _download(ref, rev, patterns)
        except SourceError as e:
            # org/name is also how a relative path looks: say first that there is no such folder
            raise SourceError(f"{ref}: no such folder {local.absolute()} (check the path); as a Hub repo id: "
                              f"{str(e).split(': ', 1)[-1]}") from e
    else:
        raise SourceError(f"{ref}: no such folder {local.absolute()}, and not a Hub repo id (org/name) either; "
                          f"check the {role} path")

    config = _load_json(path / "config.json", "config.json (is this a transformers model folder?)")
    src = Source(spec=spec, role=role, path=path, repo_id=repo_id, config=config,
                 revision=path.name if repo_id else None, has_weights=True)
    if repo_id and not weights:
        src.has_weights = False
        src.tensors = _remote_headers(repo_id, src.revision, path)
    else:
        src.tensors = _local_headers(path)
    if not src.tensors:
        raise SourceError(f"{src.name}: no safetensors weights found (only .safetensors checkpoints are supported)")
    src.layout = arch.detect_layout(src.tensors)
    if src.layout != "legacy":
        src.tensors = {arch.to_canonical(k, src.layout): v for k, v in src.tensors.items()}
    tie = src.text_config.get("tie_word_embeddings", config.get("tie_word_embeddings", False))
    src.tied = bool(tie) and arch.LM_HEAD_KEY not in src.tensors
    return src


def _local_headers(path: Path) -> dict[str, TensorInfo]:
    index = path / "model.safetensors.index.json"
    tensors: dict[str, TensorInfo] = {}
    if index.exists():
        wm = _load_json(index, "index").get("weight_map")
        if not isinstance(wm, dict):
            raise SourceError(f"{index}: has no weight_map")
        by_file: dict[str, list[str]] = {}
        for k, f in wm.items():
            by_file.setdefault(f, []).append(k)
        for f, keys in sorted(by_file.items()):
            if not isinstance(f, str) or Path(f).is_absolute() or ".." in Path(f).parts:
                raise SourceError(f"{index}: shard path {f!r} lies outside the model folder; an index may only "
                                  f"name files inside it")
            fp = path / f
            if not fp.exists():
                raise SourceError(f"{fp}: missing shard listed in {index.name}")
            hdr, _ = read_header(fp)
            for k in keys:
                if k not in hdr:
                    raise SourceError(f"{fp}: tensor {k!r} listed in {index.name} is not in this shard")
                tensors[k] = hdr[k]
        return tensors
    for fp in sorted(path.glob("*.safetensors")):
        hdr, _ = read_header(fp)
        for k, v in hdr.items():
            if k in tensors:
                raise SourceError(f"{fp}: tensor {k!r} also appears in {tensors[k].file.name}")
            tensors[k] = v
    return tensors


def _remote_headers(repo_id: str, revision: str | None, path: Path) -> dict[str, TensorInfo]:
    from huggingface_hub import get_safetensors_metadata

    try:
        meta = get_safetensors_metadata(repo_id, revision=revision)
    except Exception as e:  # noqa: BLE001 - any failure here means "cannot check shapes remotely"
        raise SourceError(f"{repo_id}: cannot read safetensors headers from the Hub ({e})") from e
    out = {}
    for fname, fm in meta.files_metadata.items():
        for k, t in fm.tensors.items():
            b, e = t.data_offsets
            out[k] = TensorInfo(path / fname, t.dtype, tuple(t.shape), b, e - b)
    return out
