"""LoRA through peft: adapters only on the language backbone's linear layers, only they get
gradients, --merge-lora writes a full checkpoint that loads and differs from the input exactly in
the backbone's linear weights; without it the adapter folder merges to the same weights."""
from __future__ import annotations

import pytest
import torch
from train_helpers import merged_fixture, small_config, tensors, toy_data_fixture
from typer.testing import CliRunner

from viscodex.engine.recipe import Recipe
from viscodex.training.trainer import run_train

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


merged = merged_fixture("lora")
data = toy_data_fixture(n=12, seed=4)


def config(merged, data, out, **kw):
    return small_config(merged, data, out, **{"max_steps": 3, "learning_rate": 1e-2, "lora_r": 4, **kw})


@pytest.fixture(scope="module")
def merged_run(merged, data):
    return run_train(config(merged, data, merged.parent / "ft-merged", merge_lora=True))


def test_only_adapters_get_gradients(merged_run):
    model = merged_run.trainer.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert all(".language_model.layers." in n for n in trainable)  # never the vision tower or projector
    targets = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    assert targets == set(LINEARS)
    opt = {id(p) for g in merged_run.trainer.optimizer.param_groups for p in g["params"]}
    assert opt == {id(p) for n, p in model.named_parameters() if n in trainable}
    batch = merged_run.trainer.data_collator([merged_run.trainer.train_dataset[i] for i in range(2)])
    model.zero_grad(set_to_none=True)
    model.train()
    merged_run.trainer.compute_loss(model, dict(batch)).backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None}
    assert got == trainable
    assert all(torch.count_nonzero(p.grad) for n, p in model.named_parameters() if n in got)
    model.zero_grad(set_to_none=True)


def test_merge_lora_output_is_full_and_differs_only_in_backbone_linears(merged_run, merged):
    from transformers import Qwen2_5_VLForConditionalGeneration

    a, b = tensors(merged), tensors(merged_run.out)
    assert a.keys() == b.keys() and not (merged_run.out / "adapter_config.json").exists()
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    want = {k for k in a if k.startswith("model.layers.") and k.endswith(".weight")
            and k.split(".")[-2] in LINEARS}
    assert changed == want
    Qwen2_5_VLForConditionalGeneration.from_pretrained(merged_run.out)
    t = Recipe.load(merged_run.out).records["training"]
    assert t["output_kind"] == "full" and t["frozen"]["lora"]["r"] == 4 and t["frozen"]["lora"]["alpha"] == 8


def test_adapter_output_merges_to_the_same_weights(merged_run, merged, data, tmp_path):
    from viscodex.training.lora import merge_adapter

    res = run_train(config(merged, data, tmp_path / "adapter"))
    files = {p.name for p in res.out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "viscodex_recipe.yaml"} <= files
    assert not any(f.startswith("model") and f.endswith(".safetensors") for f in files)
    assert Recipe.load(res.out).records["training"]["output_kind"] == "lora-adapter"
    merge_adapter(merged, res.out, tmp_path / "full")
    a, b = tensors(merged_run.out), tensors(tmp_path / "full")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_lora_flag_errors(merged, data, tmp_path):
    from viscodex.cli import app

    r = CliRunner().invoke(app, ["train", str(merged), "--data", str(data), "--out", str(tmp_path / "o"), "--merge-lora"])
    assert r.exit_code == 2 and "--merge-lora (merge_lora=) needs --lora-r (lora_r=)" in r.output
    r = CliRunner().invoke(app, ["train", str(merged), "--data", str(data), "--out", str(tmp_path / "o"), "--lora-r", "0"])
    assert r.exit_code == 2 and "--lora-r (lora_r=) 0: must be at least 1" in r.output
    if not torch.cuda.is_available():
        r = CliRunner().invoke(app, ["train", str(merged), "--data", str(data), "--out", str(tmp_path / "o"),
                                     "--lora-r", "4", "--qlora", "--checkpoint-dir", str(tmp_path / "ck")])
        assert r.exit_code == 2 and "--qlora (qlora=) needs a CUDA GPU" in r.output
    assert not (tmp_path / "o").exists()
