"""Model cards generated from viscodex_recipe.yaml: metadata parsed back, licence reconciliation,
model-tree relation, no local paths, Hub validation, and a usage snippet that runs."""
from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
import yaml
from huggingface_hub import ModelCard, ModelCardData
from hub_server import push_folder, unique
from typer.testing import CliRunner

from viscodex.hub.card import (
    MIXED_LICENSE_NAME,
    CardError,
    SourceLicense,
    build_card,
    reconcile_license,
    validate_card,
    write_card,
)
from viscodex.cli import app
from viscodex.engine.merge import run_merge
from viscodex.engine.recipe import RECIPE_FILE, Recipe

TAGS = ["merge", "viscodex", "task_arithmetic", "multimodal", "code"]


@pytest.fixture(scope="module")
def hub_merged(hub_trio, tmp_path_factory):
    """A merge of the Hub trio (all apache-2.0), written locally."""
    out = tmp_path_factory.mktemp("hubmerge") / "tiny-viscodex"
    run_merge(Recipe(vlm=hub_trio["vlm"], coder=hub_trio["coder"], base=hub_trio["base"], lam=0.7,
                     name="tiny-viscodex"), out, progress=False)
    return out


@pytest.fixture(scope="module")
def local_merged(trio, tmp_path_factory):
    out = tmp_path_factory.mktemp("localmerge") / "tiny-local"
    run_merge(Recipe(vlm=str(trio["vlm"]), coder=str(trio["coder"]), base=str(trio["base"]), lam=0.6), out,
              progress=False, shard_size="300KB")
    return out


def copy(folder, tmp_path, name=None):
    dst = tmp_path / (name or folder.name)
    shutil.copytree(folder, dst)
    return dst


def edit_recipe(folder, **sections):
    d = yaml.safe_load((folder / RECIPE_FILE).read_text())
    d.update(sections)
    (folder / RECIPE_FILE).write_text(yaml.safe_dump(d, sort_keys=False))


def yaml_blocks(text: str) -> list[dict]:
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]


def test_card_metadata_from_hub_sources(hub, hub_trio, hub_merged, tmp_path):
    folder = copy(hub_merged, tmp_path)
    path, build = write_card(folder, repo_id="someone/tiny-viscodex")
    card = ModelCard.load(path)  # parsed back from the file
    meta = card.data.to_dict()
    assert meta["base_model"] == [hub_trio["vlm"], hub_trio["coder"], hub_trio["base"]]
    assert meta["base_model_relation"] == "merge"
    assert meta["license"] == "apache-2.0"
    assert meta["pipeline_tag"] == "image-text-to-text"
    assert meta["library_name"] == "transformers"
    assert meta["tags"] == TAGS
    assert "datasets" not in meta and "model-index" not in meta
    card.validate()  # the Hub's /api/validate-yaml (here: the fake Hub's rules)

    recipe = yaml_blocks(card.text)[0]
    assert recipe["method"] == "task_arithmetic" and recipe["lambda"] == 0.7
    assert recipe["vlm"] == hub_trio["vlm"] and recipe["coder"] == hub_trio["coder"]
    for role in ("vlm", "coder", "base"):
        assert recipe["sources"][role]["revision"] == hub_trio["revisions"][role]
    assert recipe["policy_used"]["roles"] == {"backbone": "merge", "embedding": "merge", "vision": "vlm"}
    assert 'model_id = "someone/tiny-viscodex"' in card.text
    assert "arXiv:2508.09945" in card.text and "2505.19892" not in card.text  # no OptMerge method used
    assert str(tmp_path) not in card.text


def test_local_sources_show_names_never_paths(trio, local_merged, tmp_path):
    folder = copy(local_merged, tmp_path)
    build = build_card(folder)
    text = str(build.card)
    assert str(trio["vlm"].parent) not in text and str(tmp_path) not in text
    assert "/" not in yaml_blocks(text)[0]["vlm"]  # folder name only
    assert yaml_blocks(text)[0]["vlm"] == "vlm"
    meta = build.card.data.to_dict()
    assert "base_model" not in meta and "base_model_relation" not in meta  # local folders have no Hub ids
    assert "license" not in meta  # unknown licences are not guessed
    assert any("licence of the vlm" in w for w in build.warnings)
    assert 'model_id = "tiny-local"' in text  # runnable next to the folder


def test_licence_conflict_is_reported_not_resolved(hub, hub_trio, trio, tmp_path, caplog):
    coder = f"{hub.user}/{unique('tiny-coder-ccby')}"
    push_folder(trio["coder"], coder, license="cc-by-4.0")
    folder = tmp_path / "conflict"
    run_merge(Recipe(vlm=hub_trio["vlm"], coder=coder, base=hub_trio["base"]), folder, progress=False)
    with caplog.at_level(logging.WARNING, logger="viscodex"):
        build = build_card(folder)
    meta = build.card.data.to_dict()
    assert meta["license"] == "other" and meta["license_name"] == MIXED_LICENSE_NAME
    assert "conflict" in caplog.text and "cc-by-4.0" in caplog.text and "apache-2.0" in caplog.text
    lic_section = build.card.text.split("## Licence")[1].split("##")[0]
    assert "cc-by-4.0" in lic_section and "apache-2.0" in lic_section
    build.card.validate()

    chosen = build_card(folder, license="apache-2.0")  # an explicit decision
    assert chosen.card.data.license == "apache-2.0"
    assert any("differs from source licence(s) cc-by-4.0" in w for w in chosen.warnings)


@pytest.mark.parametrize("licenses,override,want", [
    (["apache-2.0", "apache-2.0"], None, ("apache-2.0", None)),
    (["apache-2.0", None], None, ("apache-2.0", None)),
    (["apache-2.0", "mit"], None, ("other", MIXED_LICENSE_NAME)),
    (["other:qwen-research", "other:qwen-research"], None, ("other", "qwen-research")),
    ([None, None], None, (None, None)),
    (["apache-2.0", "mit"], "mit", ("mit", None)),
])
def test_reconcile_license(licenses, override, want):
    srcs = [SourceLicense(r, r, lic, "test") for r, lic in zip(("vlm", "coder"), licenses)]
    d = reconcile_license(srcs, override)
    assert (d.license, d.license_name) == want
    n_unknown = sum(lic is None for lic in licenses)
    assert sum("unknown" in w for w in d.warnings) == n_unknown
    if len({x for x in licenses if x}) > 1:
        assert d.warnings, "a conflict is never silent"


def test_finetuned_card_relation_datasets_and_evals(hub, hub_trio, hub_merged, tmp_path):
    folder = copy(hub_merged, tmp_path, "tiny-sft")
    merged_id = f"{hub.user}/tiny-viscodex-merged"
    edit_recipe(folder, training={
        "model": merged_id,
        "data": {"name": "lingjie23/MultimodalCodingDataset", "revision": "abc123", "format": "json",
                 "records": 10, "used": 9},
        "frozen": {"modules": ["visual (vision encoder and projector)"], "trainable_params": 1, "frozen_params": 2},
        "steps": 12, "epochs": 2.0,
        "hparams": {"learning_rate": 1e-5, "global_batch": 128, "max_len": 8192},
        "final_loss": 0.5, "loss_history": [[1, 0.9], [2, 0.8]],
        "output_dir": str(tmp_path / "run"),
    }, eval_results=[
        {"benchmark": "ChartMimic", "metric": "score", "value": 74.8},
        {"benchmark": "MMCode", "metric": "pass@1", "value": 11.0, "split": "test"},
        {"benchmark": "MMCode", "metric": "pass@1", "value": 6.8, "variant": "swapped"},  # another model
    ])
    build = build_card(folder, license="apache-2.0")
    meta = build.card.data.to_dict()
    assert meta["base_model"] == [merged_id] and meta["base_model_relation"] == "finetune"
    assert meta["datasets"] == ["lingjie23/MultimodalCodingDataset"]
    assert "sft" in meta["tags"]
    parsed = ModelCardData(**meta)  # model-index parsed back into EvalResults
    assert parsed.model_name == "tiny-viscodex"
    assert [(e.dataset_name, e.metric_type, e.metric_value, e.dataset_split) for e in parsed.eval_results] == [
        ("ChartMimic", "score", 74.8, None), ("MMCode", "pass@1", 11.0, "test")]
    build.card.validate()
    training = yaml_blocks(build.card.text)[1]
    assert training["hparams"]["learning_rate"] == 1e-5 and training["steps"] == 12
    assert "loss_history" not in training and training["output_dir"] == "run"  # path shown as a name
    assert "visual (vision encoder and projector)" in build.card.text
    assert str(tmp_path) not in build.card.text


def test_finetune_from_local_merge_lists_merge_parents(hub_trio, hub_merged, tmp_path):
    folder = copy(hub_merged, tmp_path, "tiny-sft-local")
    edit_recipe(folder, training={"model": "tiny-viscodex", "data": {"name": "mcd_sample.jsonl"}, "steps": 3})
    meta = build_card(folder).card.data.to_dict()
    assert meta["base_model_relation"] == "finetune"
    assert meta["base_model"] == [hub_trio["vlm"], hub_trio["coder"], hub_trio["base"]]
    assert "datasets" not in meta  # a local file is not a Hub dataset


def test_optmerge_methods_are_cited(hub_merged, tmp_path):
    folder = copy(hub_merged, tmp_path, "tiny-ties")
    edit_recipe(folder, method="ties", params={})
    card = build_card(folder).card
    assert "arXiv:2505.19892" in card.text and "arXiv:2508.09945" in card.text
    assert "ties" in card.data.tags


def test_nan_marker_and_bad_metadata(hub_merged, tmp_path):
    from viscodex.hub.card import find_nan_markers

    assert find_nan_markers({"training": {"final_loss": float("nan"), "ok": 1.0}}) == ["training.final_loss"]
    assert find_nan_markers({"eval_results": [{"nan_detected": True}]}) == ["eval_results[0].nan_detected"]
    assert find_nan_markers({"training": {"final_loss": 0.3, "nan_detected": False}}) == []

    card = build_card(hub_merged).card
    card.data.license = "not-a-licence"
    with pytest.raises(CardError, match="license"):
        validate_card(ModelCard(str(card)), remote=True)
    card.data.base_model_relation = "grafted"
    with pytest.raises(CardError, match="base_model_relation"):
        validate_card(ModelCard(str(card)))


def test_cli_card_writes_and_prints(hub_merged, tmp_path):
    folder = copy(hub_merged, tmp_path)
    res = CliRunner().invoke(app, ["card", str(folder), "--validate"])
    assert res.exit_code == 0, res.output
    readme = (folder / "README.md").read_text()
    assert readme.strip() in res.stdout
    assert ModelCard(readme).data.base_model_relation == "merge"
    res = CliRunner().invoke(app, ["card", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "viscodex_recipe.yaml" in res.output


@pytest.mark.slow
def test_usage_snippet_runs(local_merged, tmp_path):
    """The card's snippet, executed as written, with only the model path, the image and the token
    budget substituted."""
    from PIL import Image

    card = build_card(local_merged, repo_id="me/VisCodex-8B").card
    code = re.search(r"## How to use.*?```python\n(.*?)```", card.text, re.S).group(1)
    assert 'model_id = "me/VisCodex-8B"' in code and 'Image.open("screenshot.png")' in code
    Image.new("RGB", (56, 56), (220, 30, 30)).save(tmp_path / "screenshot.png")
    code = code.replace('"me/VisCodex-8B"', repr(str(local_merged))).replace("max_new_tokens=1024", "max_new_tokens=4")
    script = tmp_path / "snippet.py"
    script.write_text(code + textwrap.dedent("""
        assert inputs["pixel_values"].shape[0] > 0 and output.shape[1] > inputs["input_ids"].shape[1]
        print("SNIPPET-OK")
    """))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    p = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "SNIPPET-OK" in p.stdout
