"""Publish (issue 16): no Space committed without its variables, one retry budget, timeouts, the
Hub's own error text, no empty public repo after a failed first publish, honest "nothing changed"."""
from __future__ import annotations

import collections
import time

import huggingface_hub.lfs
import pytest
from hub_server import unique  # the hub and hub_trio fixtures come from conftest.py (pytest_plugins)
from test_publish import FAST, app_dir, copy, merged, our_commits, repo_name, space_models  # noqa: F401
from typer.testing import CliRunner

from viscodex.cli import app
from viscodex.hub.publish import PublishError, RetryPolicy, publish
from viscodex.hub.space import SpaceError, publish_space


def test_space_variables_refused_means_no_app_committed(hub, space_models, app_dir):
    repo = f"{hub.user}/{unique('demo-403')}"
    hub.fail("variables", 403, 1)
    try:
        with pytest.raises(SpaceError, match="setting Space variable VISCODEX_MERGED failed: no write access"):
            publish_space(model=space_models["merged"], repo_id=repo, swapped=space_models["swapped"],
                          app_dir=app_dir, retry=FAST)
    finally:
        hub.clear_faults()
    r = hub.repo(repo, "space")
    assert not our_commits(hub, repo, "space")  # no app that would crash on start for want of its variables
    assert r.private  # and the half-made Space is not public


def test_an_always_failing_shard_is_not_sent_thirty_times(hub, merged, tmp_path, monkeypatch):
    real = huggingface_hub.lfs.http_backoff

    def quick(*a, **k):  # huggingface_hub's own retries, without its waits
        return real(*a, **{**k, "base_wait_time": 0.001, "max_wait_time": 0.001})

    monkeypatch.setattr(huggingface_hub.lfs, "http_backoff", quick)
    folder = copy(merged, tmp_path)
    rid = repo_name(hub)
    mark = hub.mark()
    hub.fail("lfs-put", 500, 10_000)
    try:
        with pytest.raises(PublishError) as e:
            publish(folder, rid, retry=RetryPolicy(attempts=5, base=0.01, cap=0.05))
    finally:
        hub.clear_faults()
    per_object = collections.Counter(r.path.split("?")[0] for r in hub.requests(mark, "lfs-put"))
    assert per_object and max(per_object.values()) <= 6, per_object  # huggingface_hub's 1 + 5, not 6 x 5
    msg = str(e.value)
    assert "uploading the folder failed: HTTP 500" in msg and "huggingface_hub retried that upload itself" in msg
    assert "re-run the same command to resume" in msg


def test_a_stalled_commit_times_out_with_a_clear_message(hub, merged, tmp_path, monkeypatch):
    monkeypatch.setenv("VISCODEX_HUB_TIMEOUT", "1")
    folder = copy(merged, tmp_path)
    rid = repo_name(hub)
    hub.stall("commit", 4, times=10)
    t0 = time.monotonic()
    try:
        with pytest.raises(PublishError, match=r"no answer from the Hub within 1s .*VISCODEX_HUB_TIMEOUT"):
            publish(folder, rid, retry=RetryPolicy(attempts=2, base=0.01, cap=0.05))
    finally:
        hub.clear_faults()
    assert time.monotonic() - t0 < 30


def test_a_409_keeps_the_hubs_words(hub, merged, tmp_path):
    folder = copy(merged, tmp_path)
    rid = repo_name(hub)
    hub.fail("commit", 409, 1, message="A commit has happened since. Please refresh and try again.")
    try:
        with pytest.raises(PublishError, match="HTTP 409: A commit has happened since. Please refresh and try again."):
            publish(folder, rid, retry=FAST)
    finally:
        hub.clear_faults()


def test_failed_first_publish_leaves_no_public_repo_and_resumes(hub, merged, tmp_path):
    folder = copy(merged, tmp_path)
    rid = repo_name(hub)
    hub.fail("commit", 400, 1)
    try:
        with pytest.raises(PublishError):
            publish(folder, rid, retry=FAST)
    finally:
        hub.clear_faults()
    assert hub.repo(rid).private and not our_commits(hub, rid)
    mark = hub.mark()
    publish(folder, rid, retry=FAST)
    assert not hub.repo(rid).private and len(our_commits(hub, rid)) == 1
    assert not hub.requests(mark, "lfs-put")  # resumed: the shards were already there


def test_republishing_unchanged_files_says_so(hub, merged, tmp_path):
    folder = copy(merged, tmp_path)
    rid = repo_name(hub)
    first = CliRunner().invoke(app, ["publish", str(folder), "--repo", rid])
    assert first.exit_code == 0 and first.stdout.startswith("published "), first.output
    again = CliRunner().invoke(app, ["publish", str(folder), "--repo", rid])
    assert again.exit_code == 0, again.output
    assert again.stdout.startswith("nothing changed: ") and "published" not in again.stdout


# ------------------------------------------------------------------ licences and cards
def test_card_license_is_kept_by_publish(hub, merged, tmp_path):
    from viscodex.hub.card import build_card

    folder = copy(merged, tmp_path)
    r = CliRunner().invoke(app, ["card", str(folder), "--license", "mit", "-q"])
    assert r.exit_code == 0, r.output
    assert build_card(folder).card.data.license == "mit"  # recorded in the recipe
    rid = repo_name(hub)
    publish(folder, rid, retry=FAST)
    assert "license: mit" in hub.file_bytes(rid, "README.md").decode()


def test_licence_texts_ship_with_the_weights_and_other_links_one(hub, hub_trio, trio, tmp_path):
    import shutil

    from hub_server import push_folder

    from viscodex.hub.card import build_card
    from viscodex.engine.merge import run_merge
    from viscodex.engine.recipe import Recipe

    coder_dir = tmp_path / "coder-src"
    shutil.copytree(trio["coder"], coder_dir)
    (coder_dir / "LICENSE").write_text("Creative Commons Attribution 4.0\n")
    coder = f"{hub.user}/{unique('tiny-coder-cc')}"
    push_folder(coder_dir, coder, license="cc-by-4.0")
    out = tmp_path / "merged"
    run_merge(Recipe(vlm=hub_trio["vlm"], coder=coder, base=hub_trio["base"]), out, progress=False)
    assert (out / "LICENSE-coder").read_text() == "Creative Commons Attribution 4.0\n"
    meta = build_card(out).card.data.to_dict()
    assert meta["license"] == "other" and meta["license_link"] == "LICENSE-coder"


def test_swapped_card_names_no_method_or_lambda(trio, tmp_path):
    from viscodex.hub.card import build_card
    from viscodex.engine.merge import run_merge
    from viscodex.engine.recipe import Recipe

    out = tmp_path / "swapped"
    run_merge(Recipe(vlm=str(trio["vlm"]), coder=str(trio["coder"]), variant="swapped"), out, progress=False)
    card = build_card(out).card
    text = str(card)
    assert "task_arithmetic" not in text and "λ = 0.7" not in text and "lambda: 0.7" not in text
    assert "coder-swapped" in text and "no merge method or λ applies" in text


# ------------------------------------------------------------------ Space build
def test_zerogpu_python_version_is_one_zerogpu_runs():
    from viscodex.hub.space import ZEROGPU_PYTHON, space_python

    assert ZEROGPU_PYTHON == ("3.12.12", "3.10.13")  # hub-docs, spaces-zerogpu.md, "Supported Versions"
    assert space_python("3.11", "zero-a10g") == "3.12.12"
    assert space_python("3.10", "zero-a10g") == "3.10.13" and space_python("3.12", "zero-a10g") == "3.12.12"
    assert space_python("3.11", "a10g-small") == "3.11"  # other hardware runs what the config says
    import yaml
    from pathlib import Path

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "space_config" / "space.yaml").read_text())
    assert cfg["python_version"] in ZEROGPU_PYTHON


def test_space_without_gradio_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    r = CliRunner().invoke(app, ["space", "--model", "me/merged", "--repo", "me/demo", "--base-vlm", "me/vlm",
                                 "--dry-run"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "`viscodex space` needs gradio" in r.output and "pip install 'viscodex[app]'" in r.output
