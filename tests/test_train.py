"""`viscodex train` on a tiny merged model and a PIL-drawn image->code dataset: the loss goes down,
vision/projector tensors stay bitwise identical, the backbone changes, frozen parameters get no
optimizer state, bad records are counted, resume continues exactly, the output loads and generates."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from train_helpers import merged_fixture, tensors
from typer.testing import CliRunner

from viscodex.engine.recipe import Recipe
from viscodex.training.data import IGNORE_INDEX
from viscodex.training.toy_data import write_toy_dataset
from viscodex.engine.arch import param_role
from viscodex.training.trainer import TrainConfig, run_train

STEPS = 6


def role(name: str) -> str:
    from viscodex.engine import arch

    return arch.role_of(name).role


merged = merged_fixture("train")


@pytest.fixture(scope="module")
def data(merged):
    root = merged.parent / "toy"
    path = write_toy_dataset(root, n=24, seed=3)
    recs = json.loads(path.read_text())
    (root / "images" / "broken.png").write_bytes(b"not a png")
    recs += [
        {"messages": [{"role": "user", "content": "<image> hi"}, {"role": "assistant", "content": "x"}],
         "images": ["images/absent.png"]},
        {"messages": [{"role": "user", "content": "<image> hi"}, {"role": "assistant", "content": "x"}],
         "images": ["images/broken.png"]},
        {"messages": [{"role": "user", "content": "only a question"}]},
    ]
    path.write_text(json.dumps(recs))
    return path


def config(merged, data, out, **kw) -> TrainConfig:
    base = dict(model=str(merged), data=str(data), out=str(out), global_batch=4, batch_size=2, max_steps=STEPS,
                learning_rate=3e-3, warmup_ratio=0.0, save_steps=2, save_total_limit=None, logging_steps=1,
                seed=0, progress=False)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def run(merged, data):
    return run_train(config(merged, data, merged.parent / "ft"))


def batch_loss(model_dir, batch) -> float:
    from transformers import AutoModelForImageTextToText

    m = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return float(m(**batch).loss)


def test_loss_goes_down(run, merged):
    batch = next(iter(run.trainer.get_train_dataloader()))
    assert "pixel_values" in batch or batch["input_ids"].shape[0] == 2
    before, after = batch_loss(merged, batch), batch_loss(run.out, batch)
    assert after < before - 0.05, (before, after)
    hist = [loss for _, loss in run.training["loss_history"]]
    assert len(hist) == STEPS and min(hist[-2:]) < hist[0]
    assert run.final_loss == pytest.approx(hist[-1], abs=1e-6)


def test_vision_bitwise_unchanged_backbone_changed(run, merged):
    a, b = tensors(merged), tensors(run.out)
    assert a.keys() == b.keys()
    changed = {k: not torch.equal(a[k], b[k]) for k in a}
    vision = [k for k in a if role(k) == "vision"]
    assert vision and any(k.startswith("visual.merger.") for k in vision)
    assert not any(changed[k] for k in vision)
    assert all(changed[k] for k in a if role(k) == "backbone")
    assert all(changed[k] for k in a if role(k) == "embedding")
    assert all(b[k].dtype == a[k].dtype for k in a)


def test_frozen_parameters_have_no_optimizer_state(run):
    model, opt = run.trainer.model, run.trainer.optimizer
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        frozen = param_role(name) == "vision"
        assert p.requires_grad is not frozen, name
        assert (id(p) in in_opt) is not frozen, name
    state_ids = {id(p) for p in opt.state}
    assert state_ids and state_ids <= {id(p) for _, p in model.named_parameters() if p.requires_grad}


def test_recipe_records_training(run, merged):
    r = Recipe.load(run.out)
    src = Recipe.load(merged)
    assert (r.vlm, r.coder, r.base, r.lam) == (src.vlm, src.coder, src.base, src.lam)
    t = r.records["training"]
    assert t["model"] == "merged" and t["steps"] == STEPS
    d = t["data"]
    assert d["name"] == "data.json" and "/" not in d["name"]
    assert d["records"] == 27 and d["used"] == 24
    assert d["skipped"] == {"no_assistant_turn": 1, "missing_image": 1, "unreadable_image": 1}
    assert d["categories"] == {"coding": 6, "grounding": 6, "image_code": 12}
    h = t["hparams"]
    assert (h["global_batch"], h["per_device_batch"], h["grad_accumulation"]) == (4, 2, 2)
    assert h["learning_rate"] == 3e-3 and h["bf16"] is False
    assert t["frozen"]["modules"] == ["visual (vision encoder and projector)"]
    assert t["final_loss"] == run.final_loss and t["tokens_seen"] > 0
    files = r.records["output"]["files"]
    assert set(files) == {f.name for f in run.out.glob("*.safetensors")}
    assert not (run.out / "training_args.bin").exists()


def test_output_loads_and_generates(run):
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    proc = AutoProcessor.from_pretrained(run.out)
    model = AutoModelForImageTextToText.from_pretrained(run.out).eval()
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Write the SVG for this picture."}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    inputs = proc(text=[text], images=[Image.new("RGB", (56, 56), (220, 30, 30))], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_resume_continues_from_checkpoint(run, merged, data, tmp_path):
    ckpts = merged.parent / "ft-checkpoints"
    assert sorted(p.name for p in ckpts.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    # resume from step 4 (a copy, so the first run's folder stays as it was) through the CLI
    work = tmp_path / "ck"
    work.mkdir()
    shutil.copytree(ckpts / "checkpoint-4", work / "checkpoint-4")
    from viscodex.cli import app

    out = tmp_path / "resumed"
    res = CliRunner().invoke(app, [
        "train", str(merged), "--data", str(data), "--out", str(out), "--global-batch", "4", "--batch-size", "2",
        "--max-steps", str(STEPS), "--lr", "3e-3", "--warmup-ratio", "0", "--save-steps", "2",
        "--logging-steps", "1", "--seed", "0", "--checkpoint-dir", str(work), "--resume", "auto"])
    assert res.exit_code == 0, res.output
    assert f"{STEPS} steps" in res.output
    t = Recipe.load(out).records["training"]
    assert t["resumed_from"] == "checkpoint-4" and t["steps"] == STEPS
    assert [s for s, _ in t["loss_history"]] == [5, 6]
    # same data order, optimizer and scheduler state: the resumed run ends where the straight one did
    a, b = tensors(run.out), tensors(out)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert t["loss_history"][-1][1] == pytest.approx(run.training["loss_history"][-1][1], abs=1e-5)


def test_bf16_model_frozen_embeddings(trio, data, tmp_path):
    """A bfloat16 checkpoint trains with fp32 master weights and comes back bfloat16; vision and
    (with --freeze-embeddings) embeddings bitwise identical."""
    from viscodex.engine.merge import run_merge

    m = run_merge(Recipe(vlm=str(trio["vlm"]), coder=str(trio["coder"]), base=str(trio["base"]), dtype="bfloat16"),
                  tmp_path / "m16", progress=False).out
    res = run_train(config(m, data, tmp_path / "ft16", max_steps=2, save_steps=100, freeze_embeddings=True,
                           max_records=12))
    a, b = tensors(m), tensors(res.out)
    assert {t.dtype for t in b.values()} == {torch.bfloat16}
    for k in a:
        same = torch.equal(a[k], b[k])
        assert same if role(k) in ("vision", "embedding") else not same, k
    t = res.training
    assert t["data"]["records"] == 12 and t["output_dtype"] == "bfloat16"
    assert "embeddings (embed_tokens, lm_head)" in t["frozen"]["modules"]
    assert json.loads((res.out / "config.json").read_text())["dtype"] == "bfloat16"


def test_labels_in_a_trainer_batch(run):
    tok = run.trainer.train_dataset.encoder.tokenizer
    batch = next(iter(run.trainer.get_train_dataloader()))
    for ids, labels in zip(batch["input_ids"], batch["labels"]):
        text = tok.decode(ids[labels != IGNORE_INDEX])
        full = tok.decode(ids[ids != tok.pad_token_id])
        assert text.endswith("<|im_end|>") and "<|im_start|>" not in text and "<|image_pad|>" not in text
        answer = full.split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0]
        assert text == answer + "<|im_end|>"


def test_errors_are_clear(run, merged, data, trio, tmp_path):
    from viscodex.cli import app

    cli = CliRunner()
    r = cli.invoke(app, ["train", str(merged), "--data", str(data), "--out", str(run.out)])
    assert r.exit_code == 2 and "already exists" in r.output
    r = cli.invoke(app, ["train", str(trio["coder"]), "--data", str(data), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "not a vision-language model" in r.output
    r = cli.invoke(app, ["train", str(merged), "--data", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "no such file" in r.output
    r = cli.invoke(app, ["train", str(merged), "--data", str(data), "--out", str(tmp_path / "o"),
                         "--checkpoint-dir", str(tmp_path / "empty"), "--resume", "auto"])
    assert r.exit_code == 2 and "no checkpoint" in r.output
    r = cli.invoke(app, ["train", str(merged), "--data", str(data), "--out", str(tmp_path / "o"), "--truncation", "cut"])
    assert r.exit_code == 2 and "--truncation" in r.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"messages": [{"role": "user", "content": "q"}]}]))
    r = cli.invoke(app, ["train", str(merged), "--data", str(bad), "--out", str(tmp_path / "o"),
                         "--checkpoint-dir", str(tmp_path / "ck2")])
    assert r.exit_code == 2 and "no usable records" in r.output and "no_assistant_turn 1" in r.output
    assert not (tmp_path / "o").exists()


def test_accelerate_configs_name_real_modules(run):
    """The shipped FSDP / ZeRO-3 configs parse with accelerate and wrap classes this model has."""
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file

    root = Path(__file__).resolve().parents[1] / "configs"
    fsdp = load_config_from_file(str(root / "fsdp.yaml"))
    assert fsdp.distributed_type == "FSDP" and fsdp.fsdp_config["fsdp_version"] == 2
    classes = {type(m).__name__ for m in run.trainer.model.modules()}
    assert set(fsdp.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(",")) <= classes
    assert not fsdp.fsdp_config["fsdp_activation_checkpointing"]  # the Trainer's is used
    ds = load_config_from_file(str(root / "deepspeed_zero3.yaml"))
    assert ds.distributed_type == "DEEPSPEED"
    ds_json = json.loads((root.parent / ds.deepspeed_config["deepspeed_config_file"]).read_text())
    assert ds_json["zero_optimization"]["stage"] == 3
    assert ds_json["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_every_trainer_batch_holds_an_image(run):
    """Text-only batches carry the in-batch dummy image (so sharded ranks run the vision tower
    first whatever they hold), masked: one image token, attention mask 0, label -100."""
    image_token = run.trainer.train_dataset.encoder.image_token_id
    seen_dummy = 0
    loader = torch.utils.data.DataLoader(run.trainer.train_dataset, batch_size=1, collate_fn=run.trainer.data_collator)
    for batch in loader:
        assert "pixel_values" in batch and "image_grid_thw" in batch
        dummy = batch["image_grid_thw"].tolist() == [[1, 2, 2]] and int((batch["input_ids"] == image_token).sum()) == 1
        if dummy:
            seen_dummy += 1
            at = batch["input_ids"] == image_token
            assert not batch["attention_mask"][at].any() and (batch["labels"][at] == IGNORE_INDEX).all()
    assert seen_dummy == 6  # the toy data's text-only records


def test_packing_trains_like_padding(run, merged, data, tmp_path):
    """--packing: same records per step, same token-weighted loss, so the same run to float precision."""
    res = run_train(config(merged, data, tmp_path / "packed", packing=True))
    t = res.training
    assert t["hparams"]["packing"] is True
    a = [v for _, v in run.training["loss_history"]]
    b = [v for _, v in t["loss_history"]]
    assert b == pytest.approx(a, rel=1e-4, abs=1e-5)
    assert t["tokens_seen"] < run.training["tokens_seen"] + 24  # no padding counted (a dummy token at most per batch)
    batch = res.trainer.data_collator([res.trainer.train_dataset[i] for i in range(3)])
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
