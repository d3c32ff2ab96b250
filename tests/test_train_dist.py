"""`viscodex train` under torchrun on CPU (gloo), 2 processes: FSDP2 sharding with ranks that
disagree on images in every step, and DDP against the same run in one process.

The data holds one image record and one text-only record, so with --batch-size 1 on 2 ranks every
step has one rank with an image and one without: the case that aborted ("collective mismatch")
when the text-only rank ran the vision tower after the language model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import free_port
from train_helpers import merged_fixture, tensors

from viscodex.engine.recipe import Recipe

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def torchrun(args: list[str], cwd: Path, launcher: list[str] | None = None, **env) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **env}
    launcher = launcher or ["torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port())]
    cmd = [sys.executable, "-m", *launcher, "-m", "viscodex", "train", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


merged = merged_fixture("dist")


@pytest.fixture(scope="module")
def mixed(merged):
    from viscodex.training.toy_data import write_toy_dataset

    root = merged.parent / "imgs"
    recs = json.loads(write_toy_dataset(root, n=4, seed=1).read_text())
    pair = [next(r for r in recs if r["images"]), next(r for r in recs if not r["images"])]
    path = merged.parent / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in pair))
    return path


def test_fsdp2_two_processes_with_text_only_and_image_ranks(merged, mixed):
    from transformers import Qwen2_5_VLForConditionalGeneration

    out = merged.parent / "FT"
    # the command docs/train.md shows, plus a free port and a log every step
    res = torchrun([str(merged), "--data", str(mixed), "--images", str(merged.parent / "imgs"), "--out", str(out),
                    "--fsdp", "--max-steps", "8", "--batch-size", "1", "--global-batch", "2", "--logging-steps", "1",
                    "--lr", "1e-3"], merged.parent)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "8 steps" in res.stdout
    # one temp folder for the two ranks, renamed into place; no lock file left
    assert [p.name for p in out.parent.glob(".FT.*")] == [] and out.joinpath(".viscodex-output").is_file()
    t = Recipe.load(out).records["training"]
    assert t["distributed"] == "FSDP" and t["hparams"]["processes"] == 2 and t["hparams"]["global_batch"] == 2
    losses = [v for _, v in t["loss_history"]]
    assert len(losses) == 8 and all(torch.isfinite(torch.tensor(losses)))
    a, b = tensors(merged), tensors(out)
    assert a.keys() == b.keys()
    vision = [k for k in a if k.startswith("visual.")]
    assert any(k.startswith("visual.merger.") for k in vision)
    assert all(torch.equal(a[k], b[k]) for k in vision)
    assert any(not torch.equal(a[k], b[k]) for k in a if k not in vision)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(out)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"


COMMON = ["--max-steps", "4", "--global-batch", "2", "--logging-steps", "1", "--lr", "1e-3", "--warmup-ratio", "0",
          "--seed", "0"]


@pytest.fixture(scope="module")
def one(merged, mixed):
    """The reference: one process, both records in each batch."""
    from viscodex.training.trainer import TrainConfig, run_train

    return run_train(TrainConfig(model=str(merged), data=str(mixed), out=str(merged.parent / "one"),
                                 images=str(merged.parent / "imgs"), batch_size=2, global_batch=2, max_steps=4,
                                 logging_steps=1, learning_rate=1e-3, warmup_ratio=0.0, seed=0, progress=False))


def test_ddp_two_processes_match_one_process(merged, mixed, one):
    """Same records per optimizer step (1 per rank x 2 vs 2 in one process): same losses and weights."""
    out2 = merged.parent / "ddp2"
    res = torchrun([str(merged), "--data", str(mixed), "--out", str(out2), "--batch-size", "1", *COMMON,
                    "--images", str(merged.parent / "imgs")], merged.parent)
    assert res.returncode == 0, res.stderr[-3000:]
    t2 = Recipe.load(out2).records["training"]
    assert t2["distributed"] == "MULTI_CPU" and t2["hparams"]["processes"] == 2
    l1 = [v for _, v in one.training["loss_history"]]
    l2 = [v for _, v in t2["loss_history"]]
    assert len(l1) == len(l2) == 4
    assert l1 == pytest.approx(l2, rel=1e-4, abs=1e-5)
    a, b = tensors(one.out), tensors(out2)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_fsdp2_packed_matches_one_process(merged, mixed, one):
    """--packing under FSDP2 on 2 ranks (the text-only rank's dummy image is a record of its own in
    its packed row): the same per-step losses as the padded one-process run."""
    out = merged.parent / "fsdp-packed"
    res = torchrun([str(merged), "--data", str(mixed), "--out", str(out), "--batch-size", "1", "--fsdp", "--packing",
                    *COMMON, "--images", str(merged.parent / "imgs")], merged.parent)
    assert res.returncode == 0, res.stderr[-3000:]
    t = Recipe.load(out).records["training"]
    assert t["distributed"] == "FSDP" and t["hparams"]["packing"] is True
    assert [v for _, v in t["loss_history"]] == pytest.approx([v for _, v in one.training["loss_history"]],
                                                                rel=1e-4, abs=1e-5)


def test_fsdp2_lora_merge(merged, mixed):
    """LoRA under FSDP2 on 2 ranks, merged on rank 0: exactly the backbone's linear weights change."""
    out = merged.parent / "fsdp-lora"
    res = torchrun([str(merged), "--data", str(mixed), "--out", str(out), "--batch-size", "1", "--fsdp", "--lora-r", "4",
                    "--merge-lora", *COMMON, "--lr", "1e-2", "--images", str(merged.parent / "imgs")], merged.parent)
    assert res.returncode == 0, res.stderr[-3000:]
    assert Recipe.load(out).records["training"]["distributed"] == "FSDP"
    assert not (out / ".viscodex-lora-adapter").exists() and [p.name for p in out.parent.glob(".fsdp-lora.*")] == []
    a, b = tensors(merged), tensors(out)
    linears = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert {k for k in a if not torch.equal(a[k], b[k])} == {
        k for k in a if k.startswith("model.layers.") and k.endswith(".weight") and k.split(".")[-2] in linears}


def test_deepspeed_zero3_two_cpu_processes(merged, mixed, one):
    """configs/deepspeed_zero3.yaml as shipped, on 2 CPU processes (DeepSpeed's CPU accelerator,
    gloo), ranks disagreeing on images every step: the losses of the one-process run, vision
    bitwise unchanged, output loads."""
    pytest.importorskip("deepspeed")
    from transformers import Qwen2_5_VLForConditionalGeneration

    out = merged.parent / "zero3"
    launcher = ["accelerate.commands.launch", "--config_file", "configs/deepspeed_zero3.yaml", "--num_processes", "2",
                "--main_process_port", str(free_port())]
    res = torchrun([str(merged), "--data", str(mixed), "--out", str(out), "--batch-size", "1", *COMMON,
                    "--images", str(merged.parent / "imgs")], ROOT, launcher, DS_ACCELERATOR="cpu")
    assert res.returncode == 0, res.stderr[-3000:]
    t = Recipe.load(out).records["training"]
    assert t["distributed"] == "DEEPSPEED" and t["hparams"]["processes"] == 2
    assert [v for _, v in t["loss_history"]] == pytest.approx([v for _, v in one.training["loss_history"]],
                                                                rel=1e-4, abs=1e-5)
    a, b = tensors(merged), tensors(out)
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("visual."))
    Qwen2_5_VLForConditionalGeneration.from_pretrained(out)
