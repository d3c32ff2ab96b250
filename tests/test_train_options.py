"""`viscodex train` options: --eval-split (fraction or file) with eval losses in the record,
--optim, --train-projector with its own learning rate (only the projector of the tower changes)."""
from __future__ import annotations

import pytest
import torch
from train_helpers import merged_fixture, small_config, tensors, toy_data_fixture
from typer.testing import CliRunner

from viscodex.engine.recipe import Recipe
from viscodex.training.toy_data import write_toy_dataset
from viscodex.training.trainer import run_train

config = small_config


merged = merged_fixture("opts")
data = toy_data_fixture(n=20, seed=6)


def test_eval_split_fraction_holds_records_out(merged, data, tmp_path):
    res = run_train(config(merged, data, tmp_path / "ft", eval_split="0.25", eval_steps=1))
    train_recs = set(res.trainer.train_dataset.index.valid)
    eval_recs = set(res.trainer.eval_dataset.index.valid)
    assert len(eval_recs) == 5 and len(train_recs) == 15 and not train_recs & eval_recs
    ev = Recipe.load(res.out).records["training"]["eval"]
    assert ev["records"] == 5 and ev["data"] == "0.25 of data.json"
    assert [s for s, _ in ev["loss_history"]] == [1, 2, 2]  # every step, then the final evaluation
    assert ev["final_loss"] == pytest.approx(ev["loss_history"][-1][1]) and ev["final_loss"] > 0
    # the eval loss is the model's loss on those records
    batch = res.trainer.data_collator([res.trainer.eval_dataset[i] for i in range(len(eval_recs))])
    from transformers import AutoModelForImageTextToText

    m = AutoModelForImageTextToText.from_pretrained(res.out, dtype=torch.float32).eval()
    with torch.no_grad():
        full = float(m(**batch).loss)
    assert abs(full - ev["final_loss"]) < 0.05  # per-batch means vs one batch: close, not equal


def test_eval_split_file_and_optim(merged, data, tmp_path):
    ev_file = write_toy_dataset(tmp_path / "ev", n=4, seed=9, layout="jsonl")
    res = run_train(config(merged, data, tmp_path / "ft", eval_split=str(ev_file), optim="adamw_torch_fused",
                           images=None))
    t = Recipe.load(res.out).records["training"]
    assert t["eval"]["data"] == "data.jsonl" and t["eval"]["records"] == 4
    assert t["hparams"]["optimizer"] == "adamw_torch_fused"
    assert res.trainer.optimizer.defaults.get("fused") is True
    assert t["data"]["used"] == 20  # nothing held out of --data


def test_train_projector_own_lr(merged, data, tmp_path):
    res = run_train(config(merged, data, tmp_path / "ft", train_projector=True, projector_lr=5e-3))
    a, b = tensors(merged), tensors(res.out)
    proj = {k for k in a if k.startswith("visual.merger.")}
    assert proj and all(not torch.equal(a[k], b[k]) for k in proj)
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("visual.") and k not in proj)
    groups = res.trainer.optimizer.param_groups
    names = {id(p): n for n, p in res.trainer.model.named_parameters()}
    pg = [g for g in groups if any(".visual.merger." in names[id(p)] for p in g["params"])]
    assert pg and all(g["initial_lr"] == 5e-3 and all(".visual.merger." in names[id(p)] for p in g["params"]) for g in pg)
    assert all(g["initial_lr"] == 1e-3 for g in groups if g not in pg)
    t = Recipe.load(res.out).records["training"]
    assert t["hparams"]["projector_lr"] == 5e-3
    assert t["frozen"]["modules"][0] == "visual encoder (the projector visual.merger trains)"


def test_option_errors(merged, data, tmp_path):
    from viscodex.cli import app

    def run(*extra):
        return CliRunner().invoke(app, ["train", str(merged), "--data", str(data), "--out", str(tmp_path / "o"), *extra])

    cases = [
        (["--eval-split", "1.5"], "--eval-split (eval_split=) '1.5': a fraction must be in (0, 1)"),
        (["--eval-split", "nope.json"], "neither a fraction in (0, 1) nor an existing data file"),
        (["--optim", "adam_wrong"], "unknown --optim (optim=) 'adam_wrong'"),
        (["--projector-lr", "1e-4"], "--projector-lr (projector_lr=) 0.0001: needs --train-projector"),
        (["--train-projector", "--lora-r", "4"],
         "--train-projector (train_projector=) with --lora-r (lora_r=) is not supported"),
    ]
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        cases.append((["--optim", "adamw_8bit"], "--optim (optim=) 'adamw_8bit' needs bitsandbytes"))
    for extra, msg in cases:
        r = run(*extra)
        assert r.exit_code == 2 and msg in r.output, (extra, r.output)
    assert not (tmp_path / "o").exists()
