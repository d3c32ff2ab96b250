"""Merge-core sources given as Hub ids (`org/name`, `org/name@revision`), resolved through the real
huggingface_hub download path against the local fake Hub."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from huggingface_hub import HfApi, constants
from hub_server import push_folder, unique

from viscodex.errors import CompatibilityError, SourceError
from viscodex.engine.merge import run_merge
from viscodex.engine.recipe import RECIPE_FILE, Recipe
from viscodex.engine.sources import _local_headers, open_source


def weight_bytes(folder: Path) -> dict[str, bytes]:
    """Every weight file and the config, by name: what must match byte for byte."""
    names = sorted(p.name for p in folder.glob("*.safetensors"))
    names += [n for n in ("model.safetensors.index.json", "config.json") if (folder / n).exists()]
    return {n: (folder / n).read_bytes() for n in names}


@pytest.fixture(scope="module")
def local_merge(trio, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "merged"
    run_merge(Recipe(vlm=str(trio["vlm"]), coder=str(trio["coder"]), base=str(trio["base"]), lam=0.7),
              out, progress=False, shard_size="300KB")
    return out


def test_hub_ids_merge_like_local_folders(hub, hub_trio, local_merge, tmp_path):
    r = Recipe(vlm=hub_trio["vlm"], coder=hub_trio["coder"], base=hub_trio["base"], lam=0.7)
    out = tmp_path / "merged"
    run_merge(r, out, progress=False, shard_size="300KB")
    got, want = weight_bytes(out), weight_bytes(local_merge)
    assert len([n for n in got if n.endswith(".safetensors")]) > 1  # sharded: the index is compared too
    assert got.keys() == want.keys()
    for name in want:
        assert got[name] == want[name], name

    rec = yaml.safe_load((out / RECIPE_FILE).read_text())["sources"]
    for role in ("vlm", "coder", "base"):
        assert rec[role]["repo_id"] == hub_trio[role]
        assert rec[role]["revision"] == hub_trio["revisions"][role] == hub.repo(hub_trio[role]).refs["main"]
    assert rec["vlm"]["license"] == rec["coder"]["license"] == "apache-2.0"  # from the repos' model cards
    # Hub blobs are stored under their sha256: the recorded hashes are the LFS oids on the server
    vlm_files = hub.repo(hub_trio["vlm"]).resolve("main").files
    assert rec["vlm"]["files"] == {n: vlm_files[n].sha256 for n in rec["vlm"]["files"]}
    assert rec["base"]["read"] is False  # task arithmetic with lam + (1 - lam) = 1 never reads the base


def test_revision_pins_a_commit(hub, hub_trio, trio, local_merge, tmp_path):
    coder = f"{hub.user}/{unique('tiny-coder-revs')}"
    first = push_folder(trio["coder"], coder)
    # a later commit that breaks the coder: only the pinned revision can merge
    HfApi().upload_file(path_or_fileobj=b'{"model_type": "llama"}', path_in_repo="config.json",
                        repo_id=coder, commit_message="break it")
    assert hub.repo(coder).refs["main"] != first

    out = tmp_path / "pinned"
    run_merge(Recipe(vlm=hub_trio["vlm"], coder=f"{coder}@{first}", base=hub_trio["base"], lam=0.7),
              out, progress=False, shard_size="300KB")
    assert weight_bytes(out) == weight_bytes(local_merge)
    rec = yaml.safe_load((out / RECIPE_FILE).read_text())["sources"]["coder"]
    assert rec["revision"] == first and rec["repo_id"] == coder

    # re-running the written recipe pins the same revision even though `coder` names no revision
    again = Recipe.load(out)
    again.coder = coder
    run_merge(again, tmp_path / "again", progress=False, shard_size="300KB")
    assert weight_bytes(tmp_path / "again") == weight_bytes(local_merge)

    with pytest.raises(CompatibilityError, match="llama"):
        run_merge(Recipe(vlm=hub_trio["vlm"], coder=coder, base=hub_trio["base"]), tmp_path / "head", progress=False)


def test_base_without_weights_reads_shapes_by_range(hub, hub_trio, trio, tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))  # nothing cached yet
    mark = hub.mark()
    src = open_source(hub_trio["base"], "base", weights=False)
    assert not src.has_weights
    local = _local_headers(trio["base"])
    assert {k: (t.dtype, t.shape) for k, t in src.tensors.items()} == {k: (t.dtype, t.shape) for k, t in local.items()}
    assert not list(src.path.glob("*.safetensors"))  # only metadata files were downloaded
    assert src.revision == hub_trio["revisions"]["base"]

    base_objects = {e.sha256 for p, e in hub.repo(hub_trio["base"]).resolve("main").files.items() if e.lfs}
    cdn = [r for r in hub.requests(mark, kind="cdn") if r.path.split("/")[-1].split("?")[0] in base_objects]
    assert cdn, "headers must be read from the weight files"
    assert all(r.headers.get("range", "").startswith("bytes=") for r in cdn)  # never a full download
    assert all("authorization" not in r.headers for r in cdn)  # the token stays on the Hub host


def test_hub_errors_are_clear(hub, hub_trio):
    with pytest.raises(SourceError, match="no such model repo"):
        open_source(f"{hub.user}/does-not-exist", "vlm")
    with pytest.raises(SourceError, match="revision 'nope' not found"):
        open_source(f"{hub_trio['coder']}@nope", "coder")


def test_index_of_hub_source_matches_local(hub_trio, trio):
    src = open_source(hub_trio["vlm"], "vlm")
    local = json.loads((trio["vlm"] / "model.safetensors.index.json").read_text())["weight_map"]
    assert {k for k in local} == set(src.tensors)  # canonical names == legacy names on disk
    assert all(Path(t.file).exists() for t in src.tensors.values())


def test_paginated_tree_listing_is_followed(hub, hub_trio, tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "page_size", 2)  # the client must follow the Link header
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    mark = hub.mark()
    src = open_source(hub_trio["coder"], "coder")
    pages = hub.requests(mark, kind="tree")
    assert len(pages) > 2 and any("cursor=" in r.path for r in pages)
    files = set(hub.repo(hub_trio["coder"]).resolve("main").files)
    assert {p.name for p in src.path.iterdir()} == {f for f in files if f.endswith((".json", ".jinja", ".txt")) or f == "README.md"} | {
        f for f in files if f.endswith(".safetensors")}
