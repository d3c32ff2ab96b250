"""`viscodex publish` and `viscodex space` against the fake Hub, through the real huggingface_hub
client: byte-identical round trip, loadable from the Hub, retries, no duplicate commits, resumable
uploads, dry runs, loadability checks, and the token never leaving the Authorization header."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import gradio
import pytest
import torch
import yaml
from huggingface_hub import ModelCard, snapshot_download
from hub_server import push_folder, unique, validate_metadata
from typer.testing import CliRunner

from viscodex._util.atomic import MARKER
from viscodex.engine import arch
from viscodex.cli import app
from viscodex.engine.merge import run_merge
from viscodex.hub.publish import PublishError, RetryPolicy, check_loadable, publish
from viscodex.engine.recipe import RECIPE_FILE, Recipe
from viscodex.hub.space import SpaceError, build_space, footprint, publish_space

FAST = RetryPolicy(attempts=4, base=0.01, cap=0.05)
WRITE_KINDS = {"create", "preupload", "lfs-batch", "lfs-put", "lfs-verify", "commit", "branch", "variables"}


@pytest.fixture(scope="module")
def merged(hub_trio, tmp_path_factory):
    """A sharded merge of the Hub trio (pristine: copy before publishing, which writes README.md)."""
    out = tmp_path_factory.mktemp("pub") / "tiny-viscodex"
    run_merge(Recipe(vlm=hub_trio["vlm"], coder=hub_trio["coder"], base=hub_trio["base"], lam=0.7,
                     name="tiny-viscodex"), out, progress=False, shard_size="400KB")
    return out


def copy(folder: Path, tmp_path: Path, name: str | None = None) -> Path:
    dst = tmp_path / (name or folder.name)
    shutil.copytree(folder, dst)
    return dst


def repo_name(hub, stem="tiny-viscodex") -> str:
    return f"{hub.user}/{unique(stem)}"


def our_commits(hub, repo_id, repo_type="model", rev="main"):
    return [c for c in hub.repo(repo_id, repo_type).history(rev) if c.title.startswith(("Upload ", "Update demo"))]


# ---------------------------------------------------------------- round trip
def test_publish_round_trip_and_load(hub, hub_trio, merged, tmp_path):
    folder = copy(merged, tmp_path)
    rid = repo_name(hub)
    res = publish(folder, rid, retry=FAST)
    assert res.commit == hub.repo(rid).refs["main"]
    assert res.url.endswith(rid)
    [c] = our_commits(hub, rid)
    assert c.title == "Upload tiny-viscodex (viscodex recipe: task_arithmetic, lambda=0.7)"

    snap = Path(snapshot_download(rid))
    local = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MARKER)
    remote = sorted(p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file())
    assert remote == sorted(local + [".gitattributes"])
    assert "README.md" in local and len([f for f in local if f.endswith(".safetensors")]) > 1
    for f in local:
        assert (snap / f).read_bytes() == (folder / f).read_bytes(), f
    assert {f.path for f in res.files} == set(local)
    assert {f.path: f.size for f in res.files} == {f: (folder / f).stat().st_size for f in local}

    card = ModelCard.load(snap / "README.md")
    assert card.data.base_model == [hub_trio["vlm"], hub_trio["coder"], hub_trio["base"]]
    assert f'model_id = "{rid}"' in card.text

    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(rid)  # through the Hub download path
    proc = AutoProcessor.from_pretrained(rid)
    from safetensors.torch import load_file

    sd = model.state_dict()
    mem = {arch.to_canonical(k, arch.detect_layout(sd)): v for k, v in sd.items()}
    disk = {}
    for f in folder.glob("*.safetensors"):
        disk.update(load_file(f))
    assert set(disk) == set(mem)
    for k, v in disk.items():
        assert torch.equal(mem[k], v), k
    ids = proc.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                                   add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 3


def test_republish_is_a_noop_and_stale_shards_go(hub, merged, tmp_path):
    folder = copy(merged, tmp_path)
    rid = repo_name(hub)
    publish(folder, rid, retry=FAST)
    n = len(hub.repo(rid).commits)
    mark = hub.mark()
    publish(folder, rid, retry=FAST)  # nothing changed: no commit, no upload
    assert len(hub.repo(rid).commits) == n
    assert not hub.requests(mark, "lfs-put") and not hub.requests(mark, "commit")

    # re-merge with one shard: the old shards and the index must disappear from the Hub
    one = tmp_path / "one" / "tiny-viscodex"
    run_merge(Recipe.load(merged), one, progress=False, shard_size="50GB")
    publish(one, rid, retry=FAST)
    files = set(hub.repo(rid).resolve("main").files)
    assert {f for f in files if f.endswith(".safetensors") or f.endswith(".json") and "index" in f} == {"model.safetensors"}


def test_publish_to_a_branch(hub, merged, tmp_path):
    folder = copy(merged, tmp_path)
    rid = repo_name(hub)
    publish(folder, rid, revision="dev", retry=FAST)
    repo = hub.repo(rid)
    assert "model.safetensors.index.json" in repo.resolve("dev").files
    assert set(repo.resolve("main").files) == {".gitattributes"}


# ---------------------------------------------------------------- retries, duplicates, resuming
def test_transient_errors_are_retried(hub, merged, tmp_path, caplog):
    folder = copy(merged, tmp_path)
    rid = repo_name(hub)
    mark = hub.mark()
    hub.fail("create", 429, 2)
    hub.fail("info", 503, 1)
    hub.fail("preupload", 500, 1)  # retried by huggingface_hub itself
    hub.fail("lfs-put", 502, 1)  # idem
    hub.fail("commit", 500, 2)
    try:
        with caplog.at_level(logging.WARNING):
            # one budget for the whole publish: 5 failures of calls viscodex retries need 5 retries
            publish(folder, rid, retry=RetryPolicy(attempts=6, base=0.01, cap=0.05))
    finally:
        hub.clear_faults()
    got = [(r.kind, r.status) for r in hub.requests(mark)]
    for kind, status, n in (("create", 429, 2), ("info", 503, 1), ("preupload", 500, 1), ("lfs-put", 502, 1),
                            ("commit", 500, 2)):
        assert got.count((kind, status)) == n, kind
    assert ("create", 200) in got and ("commit", 200) in got
    assert len(our_commits(hub, rid)) == 1
    assert "transient Hub error (HTTP 429)" in caplog.text and "transient Hub error (HTTP 500)" in caplog.text


def test_lost_commit_response_is_not_duplicated(hub, merged, tmp_path):
    folder = copy(merged, tmp_path)
    rid = repo_name(hub)
    mark = hub.mark()
    hub.fail("commit", 500, 1, apply=True)  # the commit lands, the client sees a 500
    try:
        res = publish(folder, rid, retry=FAST)
    finally:
        hub.clear_faults()
    assert len(our_commits(hub, rid)) == 1
    assert len(hub.requests(mark, "commit")) == 1  # the retry found everything already there
    assert res.commit == hub.repo(rid).refs["main"]
    commit_lines = [json.loads(x) for x in hub.requests(mark, "commit")[0].body.splitlines()]
    assert commit_lines[0]["value"]["parentCommit"] == hub.repo(rid).history()[1].oid  # guarded by its parent


def test_failed_upload_resumes_without_resending(hub, merged, tmp_path):
    folder = copy(merged, tmp_path)
    rid = repo_name(hub)
    hub.fail("commit", 503, 10)
    try:
        with pytest.raises(PublishError, match="uploading the folder failed: HTTP 503"):
            publish(folder, rid, retry=RetryPolicy(attempts=2, base=0.01))
    finally:
        hub.clear_faults()
    assert not our_commits(hub, rid)
    mark = hub.mark()
    publish(folder, rid, retry=FAST)
    assert not hub.requests(mark, "lfs-put")  # the LFS objects were already on the server
    assert len(our_commits(hub, rid)) == 1


# ---------------------------------------------------------------- dry run, checks, token
def test_dry_run_uploads_nothing(hub, merged, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")  # no token needed
    folder = copy(merged, tmp_path)
    rid = repo_name(hub)
    mark = hub.mark()
    res = CliRunner().invoke(app, ["publish", str(folder), "--repo", rid, "--dry-run"])
    assert res.exit_code == 0, res.output
    reqs = hub.requests(mark)  # at most reads (the sources' licences), nothing written, no token needed
    assert all(r.method in ("GET", "HEAD") and r.kind not in WRITE_KINDS for r in reqs), [(r.method, r.kind) for r in reqs]
    assert not (folder / "README.md").exists()
    assert "nothing was uploaded" in res.stdout and "base_model_relation: merge" in res.stdout
    listed = {ln.split()[0]: ln.split()[1:] for ln in res.stdout.splitlines() if ln.startswith("  ")}
    for p in list(folder.iterdir()) + [folder / "README.md"]:  # README.md: the card that would be uploaded
        if p.name == MARKER:  # viscodex's own marker is never uploaded
            assert p.name not in listed
            continue
        assert p.name in listed, p.name
        assert listed[p.name][-1] in ("B", "KiB", "MiB", "GiB"), listed[p.name]  # one human_size
    assert "total" in listed


@pytest.mark.parametrize("damage,msg", [
    ("drop_shard", "listed in model.safetensors.index.json is missing"),
    ("truncate", "truncated"),
    ("nan", "NaN/Inf at training.final_loss"),
    ("no_config", "config.json is missing"),
    ("no_recipe", "viscodex_recipe.yaml is missing"),
])
def test_unloadable_folders_are_refused(hub, merged, tmp_path, damage, msg):
    folder = copy(merged, tmp_path)
    shards = sorted(folder.glob("*.safetensors"))
    if damage == "drop_shard":
        shards[1].unlink()
    elif damage == "truncate":
        data = shards[0].read_bytes()
        shards[0].write_bytes(data[:-100])
    elif damage == "nan":
        d = yaml.safe_load((folder / RECIPE_FILE).read_text())
        d["training"] = {"final_loss": float("nan")}
        (folder / RECIPE_FILE).write_text(yaml.safe_dump(d))
    elif damage == "no_config":
        (folder / "config.json").unlink()
    elif damage == "no_recipe":
        (folder / RECIPE_FILE).unlink()
    mark = hub.mark()
    with pytest.raises(PublishError, match="refusing to publish") as e:
        publish(folder, repo_name(hub))
    assert msg in str(e.value)
    assert str(tmp_path) not in str(e.value)
    assert hub.requests(mark) == []
    res = CliRunner().invoke(app, ["publish", str(folder), "--repo", repo_name(hub)])
    assert res.exit_code == 2 and msg in res.output


def test_check_loadable_accepts_a_merge(merged):
    check = check_loadable(merged)
    assert len(check.weight_files) == len(list(merged.glob("*.safetensors"))) > 1
    assert check.total_bytes == yaml.safe_load((merged / RECIPE_FILE).read_text())["output"]["total_bytes"]


def test_token_never_leaks(hub, merged, tmp_path, caplog, capsys):
    folder = copy(merged, tmp_path)
    rid = repo_name(hub)
    mark = hub.mark()
    hub.fail("commit", 500, 1)
    try:
        with caplog.at_level(logging.DEBUG):
            res = CliRunner().invoke(app, ["-v", "publish", str(folder), "--repo", rid])
    finally:
        hub.clear_faults()
    assert res.exit_code == 0, res.output
    token = hub.token.encode()
    reqs = hub.requests(mark)
    assert any(r.headers.get("authorization") == f"Bearer {hub.token}" for r in reqs)
    for r in reqs:
        assert token not in r.body, (r.kind, r.path)
        assert token.decode() not in r.path
        for k, v in r.headers.items():
            if k != "authorization":
                assert hub.token not in v, (r.kind, k)
        if r.kind in ("cdn", "lfs-put"):  # storage hosts never see it
            assert "authorization" not in r.headers
    for blob in hub.stored_bytes():
        assert token not in blob
    for p in folder.rglob("*"):
        if p.is_file():
            assert token not in p.read_bytes(), p
    out = capsys.readouterr()
    assert hub.token not in caplog.text + res.output + out.out + out.err


def test_missing_bad_or_embedded_token(hub, merged, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    assert HfApi().whoami()["name"] == hub.user  # HF_TOKEN is the logged-in user's
    folder = copy(merged, tmp_path)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(PublishError, match="no Hugging Face token"):
        publish(folder, repo_name(hub))
    with pytest.raises(PublishError, match="rejected the token") as e:
        publish(folder, repo_name(hub), token="hf_not_the_right_one", retry=FAST)
    assert "hf_not_the_right_one" not in str(e.value)
    (folder / "notes.json").write_text(json.dumps({"token": hub.token}))
    mark = hub.mark()
    with pytest.raises(PublishError, match="notes.json contains your Hub token") as e:
        publish(folder, repo_name(hub), token=hub.token)
    assert hub.token not in str(e.value) and hub.requests(mark) == []


# ---------------------------------------------------------------- the Space
@pytest.fixture(scope="module")
def space_models(hub, hub_trio, merged, tmp_path_factory):
    """merged + coder-swapped published to the fake Hub; the base VLM is the trio's."""
    tmp = tmp_path_factory.mktemp("space-models")
    rid = f"{hub.user}/{unique('tiny-viscodex')}"
    publish(copy(merged, tmp), rid, retry=FAST)
    sw = tmp / "tiny-swapped"
    run_merge(Recipe(vlm=hub_trio["vlm"], coder=hub_trio["coder"], variant="swapped"), sw, progress=False)
    swapped = f"{hub.user}/{unique('tiny-swapped')}"
    publish(sw, swapped, retry=FAST)
    return {"merged": rid, "base": hub_trio["vlm"], "swapped": swapped}


@pytest.fixture
def app_dir(tmp_path):
    d = tmp_path / "checkout"
    d.mkdir()
    (d / "app.py").write_text("import os\nMODEL = os.environ['VISCODEX_MERGED']\n")
    (d / "requirements.txt").write_text("transformers>=5\nspaces\n")
    (d / "packages.txt").write_text("libseccomp2\n")
    return d


def expected_footprint(folders: list[Path]) -> int:
    from viscodex.engine.sources import _local_headers

    def aligned(n):
        return n + (-n % 4096)

    total, vision = 0, 0
    for f in folders:
        h = _local_headers(f)
        v = sum(aligned(t.nbytes) for k, t in h.items() if k.startswith("visual."))
        total += sum(aligned(t.nbytes) for t in h.values()) - v
        vision = max(vision, v)
    return total + vision


def test_space_publish(hub, hub_trio, trio, merged, space_models, app_dir, tmp_path):
    repo = f"{hub.user}/{unique('viscodex-demo')}"
    keep = tmp_path / "space"
    plan = publish_space(model=space_models["merged"], repo_id=repo, swapped=space_models["swapped"],
                         app_dir=app_dir, retry=FAST, keep=keep)
    # folder contents
    files = {p.relative_to(keep).as_posix() for p in keep.rglob("*") if p.is_file()}
    assert {"app.py", "requirements.txt", "packages.txt", "README.md", "viscodex/__init__.py", "viscodex/hub/space.py",
            "viscodex/hub/templates/model_card.md.j2"} <= files
    assert not any("__pycache__" in f or f.endswith(".pyc") for f in files)
    assert (keep / "app.py").read_bytes() == (app_dir / "app.py").read_bytes()
    # README metadata
    meta = yaml.safe_load((keep / "README.md").read_text().split("---")[1])
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == gradio.__version__
    assert meta["app_file"] == "app.py" and meta["python_version"] == "3.12.12"
    assert meta["models"] == [space_models["merged"], hub_trio["vlm"], space_models["swapped"]]
    assert meta["suggested_hardware"] == "zero-a10g" and meta["license"] == "apache-2.0"
    assert meta["preload_from_hub"] == meta["models"] and "*id0" not in (keep / "README.md").read_text()
    assert 0 < len(meta["short_description"]) <= 60
    assert validate_metadata((keep / "README.md").read_text(), "space") == []
    # the footprint: real tensor bytes, one shared vision tower
    want = expected_footprint([merged, trio["vlm"], Path(snapshot_download(space_models["swapped"]))])
    assert plan.footprint.total == want and plan.footprint.slice == "large"
    # on the Hub: files, README, variables
    r = hub.repo(repo, "space")
    assert r.sdk == "gradio"
    assert {"app.py", "requirements.txt", "README.md", "viscodex/hub/card.py"} <= set(r.resolve("main").files)
    assert hub.file_bytes(repo, "README.md", repo_type="space") == (keep / "README.md").read_bytes()
    assert {k: v["value"] for k, v in r.variables.items()} == {
        "VISCODEX_MERGED": space_models["merged"], "VISCODEX_BASE_VLM": hub_trio["vlm"],
        "VISCODEX_SWAPPED": space_models["swapped"], "VISCODEX_GPU_SIZE": "large"}
    assert plan.variables == {k: v["value"] for k, v in r.variables.items()}


def test_space_dry_run_and_slice(hub, hub_trio, space_models, app_dir):
    mark = hub.mark()
    res = CliRunner().invoke(app, ["space", "--model", space_models["merged"], "--repo", f"{hub.user}/demo-dry",
                                   "--app-dir", str(app_dir), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert not [r for r in hub.requests(mark) if r.kind in WRITE_KINDS]
    assert "suggested_hardware: zero-a10g" in res.stdout and "VISCODEX_BASE_VLM=" + hub_trio["vlm"] in res.stdout
    assert "nothing was uploaded" in res.stdout and "app.py" in res.stdout
    sub = f"{hub.user}-demo-dry".lower().replace("_", "-").replace(".", "-")
    assert f"app https://{sub}.hf.space (an example: https://{sub}.hf.space/?example=bar_chart)" in res.stdout
    from viscodex.hub.space import direct_url

    assert direct_url("My_Org/Vis.Codex--Demo") == "https://my-org-vis-codex-demo.hf.space"

    models = {"merged": space_models["merged"], "base VLM": hub_trio["vlm"], "coder-swapped": space_models["swapped"]}
    fp = footprint(models, threshold_gib=42)
    assert fp.slice == "large"
    vision = fp.shared_vision
    assert 0 < vision < fp.total
    assert fp.total == sum(w.total for w in fp.models) - (len(fp.models) - 1) * vision
    tight = footprint(models, threshold_gib=(fp.total - 1) / 1024**3)
    assert tight.slice == "xlarge" and tight.total == fp.total


def test_space_errors(hub, space_models, app_dir, tmp_path):
    (app_dir / "requirements.txt").unlink()
    with pytest.raises(SpaceError, match="missing requirements.txt"):
        build_space(tmp_path / "s1", model=space_models["merged"], repo_id=f"{hub.user}/x", app_dir=app_dir)
    (app_dir / "requirements.txt").write_text("gradio\n")
    with pytest.raises(SpaceError, match="not a Space hardware flavor"):
        build_space(tmp_path / "s2", model=space_models["merged"], repo_id=f"{hub.user}/x", app_dir=app_dir,
                    hardware="quantum-9000")
    with pytest.raises(SpaceError, match="expected a Hub id"):
        build_space(tmp_path / "s3", model="./local-folder", repo_id=f"{hub.user}/x", app_dir=app_dir)
    plan = build_space(tmp_path / "s4", model=space_models["merged"], repo_id=f"{hub.user}/x", app_dir=app_dir,
                       hardware="a10g-small")
    assert plan.hardware == "a10g-small" and "VISCODEX_GPU_SIZE" not in plan.variables
    assert "VISCODEX_SWAPPED" not in plan.variables and plan.warnings


def test_space_from_the_checkout(hub, space_models, tmp_path):
    """The real app.py / requirements.txt of this checkout, with the whole package beside them."""
    from viscodex.hub.space import default_app_dir

    root = default_app_dir()
    if not (root / "app.py").exists() or not (root / "requirements.txt").exists():
        pytest.skip("app.py / requirements.txt not in this checkout")
    plan = build_space(tmp_path / "space", model=space_models["merged"], repo_id=f"{hub.user}/demo-checkout")
    for f in ("app.py", "requirements.txt", "packages.txt"):
        assert (plan.folder / f).read_bytes() == (root / f).read_bytes()
    pkg = Path(__import__("viscodex").__file__).parent
    want = {p.relative_to(pkg).as_posix() for p in pkg.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    got = {p.relative_to(plan.folder / "viscodex").as_posix() for p in (plan.folder / "viscodex").rglob("*") if p.is_file()}
    assert got == want
