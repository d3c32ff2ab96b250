"""Merge core (issue 2): math, roles, layouts, output loadability, errors, atomicity, recipes."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

from viscodex.engine import arch
from viscodex.cli import app
from viscodex.errors import CompatibilityError, MergeError, RecipeError, SourceError, ViscodexError
from viscodex.engine.merge import run_merge
from viscodex.engine.recipe import RECIPE_FILE, Recipe


def load_sd(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder, canonicalised to the legacy layout."""
    out = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(f, "pt") as s:
            for k in s.keys():
                out[k] = s.get_tensor(k)
    layout = arch.detect_layout(out)
    return {arch.to_canonical(k, layout): v for k, v in out.items()}


def edited_copy(src: Path, dst: Path, edit) -> Path:
    """Copy a checkpoint folder, apply `edit` to its state dict, and store it as one safetensors file."""
    shutil.copytree(src, dst)
    sd = load_sd(dst)
    for f in dst.glob("*.safetensors"):
        f.unlink()
    (dst / "model.safetensors.index.json").unlink()
    edit(sd)
    save_file(sd, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def merge(trio, tmp_path, name="out", **kw) -> tuple[Path, dict]:
    r = Recipe(vlm=str(trio["vlm"]), coder=str(trio["coder"]), base=str(trio["base"]), **kw)
    out = tmp_path / name
    run_merge(r, out, progress=False, shard_size="300KB")
    return out, load_sd(out)


@pytest.fixture(scope="module")
def sds(trio):
    return {k: load_sd(v) for k, v in trio.items()}


def vision_ids(trio) -> list[int]:
    cfg = json.loads((trio["vlm"] / "config.json").read_text())
    return sorted({cfg[f] for f in arch.VISION_TOKEN_ID_FIELDS if f in cfg})


# ---------------------------------------------------------------- math
@pytest.mark.parametrize("lam,expert", [(1.0, "vlm"), (0.0, "coder")])
def test_endpoints_give_an_expert_exactly(trio, sds, tmp_path, lam, expert):
    _, out = merge(trio, tmp_path, lam=lam)
    ids = vision_ids(trio)
    for k, v in out.items():
        role = arch.role_of(k).role
        if role == "backbone":
            assert torch.equal(v, sds[expert][k]), k
        elif role == "embedding":
            rows = [i for i in range(v.shape[0]) if i not in ids]
            assert torch.equal(v[rows], sds[expert][k][rows]), k


def test_lambda_07_matches_formula(trio, sds, tmp_path):
    lam = 0.7
    _, out = merge(trio, tmp_path, lam=lam)
    base, vlm, coder = sds["base"], sds["vlm"], sds["coder"]
    n_backbone = 0
    for k, v in out.items():
        if arch.role_of(k).role != "backbone":
            continue
        want = base[k] + lam * (vlm[k] - base[k]) + (1 - lam) * (coder[k] - base[k])
        torch.testing.assert_close(v, want, rtol=1e-5, atol=1e-6)
        assert not torch.equal(v, vlm[k]) and not torch.equal(v, coder[k])
        n_backbone += 1
    assert n_backbone == 2 * 12 + 1  # 2 layers x 12 tensors + final norm


def test_scale_not_one_uses_base(trio, sds, tmp_path):
    """With task-vector weights that do not sum to 1 the base no longer cancels."""
    _, out = merge(trio, tmp_path, lam=0.7, params={"scale": 0.5})
    k = "model.layers.0.mlp.up_proj.weight"
    base, vlm, coder = sds["base"][k], sds["vlm"][k], sds["coder"][k]
    want = base + 0.5 * (0.7 * (vlm - base) + 0.3 * (coder - base))
    torch.testing.assert_close(out[k], want, rtol=1e-5, atol=1e-6)
    rec = Recipe.load(tmp_path / "out")
    assert rec.records["sources"]["base"]["read"] is True


def test_vision_and_projector_bitwise_and_vision_token_rows(trio, sds, tmp_path):
    _, out = merge(trio, tmp_path, lam=0.7)
    vis = [k for k in sds["vlm"] if k.startswith("visual.")]
    assert any(k.startswith("visual.merger.") for k in vis)
    for k in vis:
        assert out[k].dtype == sds["vlm"][k].dtype
        assert torch.equal(out[k], sds["vlm"][k]), k
    ids = vision_ids(trio)
    assert len(ids) == 4
    for k in ("model.embed_tokens.weight", "lm_head.weight"):
        assert torch.equal(out[k][ids], sds["vlm"][k][ids])
        other = [i for i in range(10)]
        assert not torch.equal(out[k][other], sds["vlm"][k][other])  # ordinary rows are merged


def test_rows_past_shared_vocab_come_from_vlm(trio, tmp_path):
    """A coder with fewer (padding) embedding rows: shared rows merged, the rest from the VLM."""
    n = load_sd(trio["coder"])["model.embed_tokens.weight"].shape[0] - 32

    def edit(sd):
        sd["model.embed_tokens.weight"] = sd["model.embed_tokens.weight"][:n].clone()
        sd["lm_head.weight"] = sd["lm_head.weight"][:n].clone()

    coder = edited_copy(trio["coder"], tmp_path / "coder_small", edit)
    sd = load_sd(coder)
    r = Recipe(vlm=str(trio["vlm"]), coder=str(coder), base=str(trio["base"]), lam=0.5)
    res = run_merge(r, tmp_path / "o", progress=False)
    out, vlm = load_sd(tmp_path / "o"), load_sd(trio["vlm"])
    k = "model.embed_tokens.weight"
    assert out[k].shape == vlm[k].shape
    assert torch.equal(out[k][n:], vlm[k][n:])
    torch.testing.assert_close(out[k][:10], 0.5 * vlm[k][:10] + 0.5 * sd[k][:10])
    assert res.plan.shared_rows == n


def test_swapped_variant_is_vlm_with_coder_backbone(trio, sds, tmp_path):
    _, out = merge(trio, tmp_path, variant="swapped")
    ids = vision_ids(trio)
    for k, v in out.items():
        role = arch.role_of(k).role
        if role == "vision":
            assert torch.equal(v, sds["vlm"][k])
        elif role == "backbone":
            assert torch.equal(v, sds["coder"][k])
        else:
            rows = [i for i in range(v.shape[0]) if i not in ids]
            assert torch.equal(v[rows], sds["coder"][k][rows])
            assert torch.equal(v[ids], sds["vlm"][k][ids])
    assert set(out) == set(sds["vlm"])


def test_dtype_option_casts_everything(trio, sds, tmp_path):
    _, out = merge(trio, tmp_path, lam=0.7, dtype="bfloat16")
    assert {v.dtype for v in out.values()} == {torch.bfloat16}
    k = "visual.merger.mlp.0.weight"
    assert torch.equal(out[k], sds["vlm"][k].to(torch.bfloat16))


# ---------------------------------------------------------------- layouts and tying
def _relayout(src: Path, dst: Path) -> None:
    """Rewrite a legacy VLM checkpoint into the model.language_model.* / model.visual.* layout."""
    shutil.copytree(src, dst)
    idx = json.loads((dst / "model.safetensors.index.json").read_text())
    new_map = {}
    for f in sorted(set(idx["weight_map"].values())):
        with safe_open(dst / f, "pt") as s:
            tensors = {k: s.get_tensor(k) for k in s.keys()}
        renamed = {}
        for k, v in tensors.items():
            nk = "model.language_model." + k[6:] if k.startswith("model.") else ("model." + k if k.startswith("visual.") else k)
            renamed[nk] = v
            new_map[nk] = f
        save_file(renamed, str(dst / f), metadata={"format": "pt"})
    idx["weight_map"] = new_map
    (dst / "model.safetensors.index.json").write_text(json.dumps(idx))


def test_language_model_layout_gives_identical_result(trio, tmp_path):
    new = tmp_path / "vlm_new_layout"
    _relayout(trio["vlm"], new)
    r1 = Recipe(vlm=str(trio["vlm"]), coder=str(trio["coder"]), base=str(trio["base"]), lam=0.7)
    r2 = Recipe(vlm=str(new), coder=str(trio["coder"]), base=str(trio["base"]), lam=0.7)
    a = run_merge(r1, tmp_path / "a", progress=False)
    b = run_merge(r2, tmp_path / "b", progress=False)
    assert b.recipe.records["sources"]["vlm"]["layout"] == "language_model"
    assert a.files == b.files  # identical bytes, legacy names written in both cases
    with safe_open(next((tmp_path / "b").glob("*.safetensors")), "pt") as s:
        assert all(not k.startswith("model.language_model.") for k in s.keys())


def test_tied_embeddings(tied_trio, tmp_path):
    sds = {k: load_sd(v) for k, v in tied_trio.items()}
    assert "lm_head.weight" not in sds["vlm"]
    out_dir, out = merge(tied_trio, tmp_path, lam=0.7)
    assert "lm_head.weight" not in out
    k = "model.embed_tokens.weight"
    ids = vision_ids(tied_trio)
    rows = [i for i in range(out[k].shape[0]) if i not in ids]
    torch.testing.assert_close(out[k][rows], 0.7 * sds["vlm"][k][rows] + 0.3 * sds["coder"][k][rows])
    _load_and_generate(out_dir)


def test_untied_coder_into_tied_vlm_is_noted(tied_trio, tmp_path):
    """The VLM ties embeddings; an untied coder's own lm_head cannot be used, and the plan says so."""
    def edit(sd):
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"] + 1.0

    coder = edited_copy(tied_trio["coder"], tmp_path / "coder_untied", edit)
    cfg = json.loads((coder / "config.json").read_text())
    cfg["tie_word_embeddings"] = False
    (coder / "config.json").write_text(json.dumps(cfg))
    r = Recipe(vlm=str(tied_trio["vlm"]), coder=str(coder), base=str(tied_trio["base"]))
    res = run_merge(r, tmp_path / "o", progress=False)
    assert res.plan.sources["vlm"].tied
    assert any("has its own lm_head but the vlm ties embeddings" in n for n in res.plan.notes)
    assert "lm_head.weight" not in load_sd(tmp_path / "o")


# ---------------------------------------------------------------- loadability
def _load_and_generate(folder: Path, caplog=None) -> str:
    from PIL import Image
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder)
    proc = AutoProcessor.from_pretrained(folder)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "a small red circle"}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True)
    inputs = proc(text=[text], images=[Image.new("RGB", (56, 56), (200, 30, 30))], return_tensors="pt")
    assert (inputs["input_ids"] == model.config.image_token_id).sum() == 4
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    return proc.batch_decode(out[:, inputs["input_ids"].shape[1]:])[0]


def test_output_loads_without_missing_weights_and_generates(trio, tmp_path, capfd):
    from transformers import Qwen2_5_VLForConditionalGeneration
    from transformers.utils import logging as hf_logging

    out, _ = merge(trio, tmp_path, lam=0.7)
    hf_logging.set_verbosity_warning()
    _, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    _load_and_generate(out)
    err = capfd.readouterr().err
    assert "newly initialized" not in err and "not used" not in err and "MISSING" not in err
    files = sorted(p.name for p in out.iterdir())
    for f in ("config.json", "tokenizer.json", "chat_template.jinja", "generation_config.json", RECIPE_FILE,
              "model.safetensors.index.json"):
        assert f in files
    idx = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(idx["weight_map"].values()) == {f for f in files if f.endswith(".safetensors")}


def test_missing_processor_is_a_warning(trio, tmp_path, caplog):
    vlm = tmp_path / "vlm_noproc"
    shutil.copytree(trio["vlm"], vlm)
    for f in ("processor_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (vlm / f).unlink()
    r = Recipe(vlm=str(vlm), coder=str(trio["coder"]), base=str(trio["base"]))
    with caplog.at_level(logging.WARNING, logger="viscodex"):
        run_merge(r, tmp_path / "o", progress=False)
    assert "has no preprocessor_config.json, tokenizer_config.json, tokenizer.json" in caplog.text
    assert (tmp_path / "o" / "config.json").exists()


# ---------------------------------------------------------------- errors write nothing
def _expect_error(recipe: Recipe, out: Path, exc, *needles):
    with pytest.raises(exc) as ei:
        run_merge(recipe, out, progress=False)
    msg = str(ei.value)
    for n in needles:
        assert n in msg, msg
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.viscodex-tmp-*"))
    return msg


def test_error_missing_shard(trio, tmp_path):
    vlm = tmp_path / "vlm"
    shutil.copytree(trio["vlm"], vlm)
    shard = sorted(vlm.glob("*.safetensors"))[1]
    shard.unlink()
    r = Recipe(vlm=str(vlm), coder=str(trio["coder"]), base=str(trio["base"]))
    _expect_error(r, tmp_path / "o", SourceError, shard.name, "missing shard")


def test_error_missing_folder(trio, tmp_path):
    r = Recipe(vlm=str(tmp_path / "nope"), coder=str(trio["coder"]))
    _expect_error(r, tmp_path / "o", SourceError, "nope", "and not a Hub repo id (org/name) either")


def test_error_truncated_safetensors(trio, tmp_path):
    coder = tmp_path / "coder"
    shutil.copytree(trio["coder"], coder)
    f = sorted(coder.glob("*.safetensors"))[-1]
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 100])
    r = Recipe(vlm=str(trio["vlm"]), coder=str(coder), base=str(trio["base"]))
    _expect_error(r, tmp_path / "o", SourceError, f.name, "truncated")


def test_error_corrupt_header(trio, tmp_path):
    coder = tmp_path / "coder"
    shutil.copytree(trio["coder"], coder)
    f = sorted(coder.glob("*.safetensors"))[0]
    data = bytearray(f.read_bytes())
    data[10:20] = b"\xff" * 10
    f.write_bytes(bytes(data))
    r = Recipe(vlm=str(trio["vlm"]), coder=str(coder), base=str(trio["base"]))
    _expect_error(r, tmp_path / "o", SourceError, f.name, "corrupt")


def test_error_vlm_not_qwen_vl(trio, tmp_path):
    r = Recipe(vlm=str(trio["coder"]), coder=str(trio["coder"]), base=str(trio["base"]))
    _expect_error(r, tmp_path / "o", CompatibilityError, "model_type 'qwen2' is not a Qwen2-VL/Qwen2.5-VL model")


def retyped_copy(src: Path, dst: Path, model_type: str) -> Path:
    """A copy of a checkpoint folder whose config.json claims another model_type."""
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["model_type"] = model_type
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_error_coder_not_qwen2(trio, tmp_path):
    coder = retyped_copy(trio["coder"], tmp_path / "coder", "llama")
    r = Recipe(vlm=str(trio["vlm"]), coder=str(coder), base=str(trio["base"]))
    _expect_error(r, tmp_path / "o", CompatibilityError, "coder coder: model_type 'llama' is not a Qwen2-family causal LM")


def test_error_shape_and_config_mismatch_lists_every_problem(trio, tmp_path):
    from viscodex.toy.models import TinyConfig, build_tokenizer, new_base

    cfg = TinyConfig(intermediate_size=96)
    tok = build_tokenizer(cfg)
    coder = tmp_path / "coder"
    model = new_base(cfg, tok)
    model.save_pretrained(coder)
    tok.save_pretrained(coder)
    r = Recipe(vlm=str(trio["vlm"]), coder=str(coder), base=str(trio["base"]))
    msg = _expect_error(r, tmp_path / "o", CompatibilityError, "config intermediate_size: vlm vlm has 128, coder coder has 96",
                        "shape mismatch for model.layers.0.mlp.up_proj.weight: vlm [128, 64] vs coder coder [96, 64]",
                        "model.layers.1.mlp.down_proj.weight")
    assert msg.count("shape mismatch") == 6  # gate/up/down x 2 layers


def test_error_missing_and_extra_tensors(trio, tmp_path):
    def edit(sd):
        sd.pop("model.layers.1.self_attn.q_proj.bias")
        sd["model.layers.2.mlp.up_proj.weight"] = torch.zeros(128, 64)

    coder = edited_copy(trio["coder"], tmp_path / "coder", edit)
    r = Recipe(vlm=str(trio["vlm"]), coder=str(coder), base=str(trio["base"]))
    _expect_error(r, tmp_path / "o", CompatibilityError,
                  "coder coder is missing tensor model.layers.1.self_attn.q_proj.bias (vlm shape [64])",
                  "coder coder has extra tensor model.layers.2.mlp.up_proj.weight [128, 64]")


def test_error_vocab_mismatch(trio, tmp_path):
    coder = tmp_path / "coder"
    shutil.copytree(trio["coder"], coder)
    tj = json.loads((coder / "tokenizer.json").read_text())
    vocab = tj["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[300:302]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (coder / "tokenizer.json").write_text(json.dumps(tj))
    r = Recipe(vlm=str(trio["vlm"]), coder=str(coder), base=str(trio["base"]))
    _expect_error(r, tmp_path / "o", CompatibilityError, "vocab mismatch: token id 300", "(2 ids differ)")


def test_error_unknown_method_and_lambda(trio, tmp_path):
    r = Recipe(vlm=str(trio["vlm"]), coder=str(trio["coder"]), base=str(trio["base"]), method="magic")
    _expect_error(r, tmp_path / "o", RecipeError, "unknown merge method 'magic'", "task_arithmetic")
    r = Recipe(vlm=str(trio["vlm"]), coder=str(trio["coder"]), base=str(trio["base"]), lam=1.3)
    _expect_error(r, tmp_path / "o", RecipeError, "lambda 1.3 is outside [0, 1]", "--allow-extrapolation")
    r = Recipe(vlm=str(trio["vlm"]), coder=str(trio["coder"]), base=str(trio["base"]), lam=1.3, allow_extrapolation=True)
    run_merge(r, tmp_path / "o", progress=False)
    assert (tmp_path / "o" / "config.json").exists()


def test_error_nan_names_tensor(trio, tmp_path):
    def edit(sd):
        sd["model.layers.1.mlp.gate_proj.weight"][3, 4] = float("nan")

    coder = edited_copy(trio["coder"], tmp_path / "coder", edit)
    r = Recipe(vlm=str(trio["vlm"]), coder=str(coder), base=str(trio["base"]))
    _expect_error(r, tmp_path / "o", MergeError, "output tensor model.layers.1.mlp.gate_proj.weight has 1 NaN/Inf")


def test_refuses_to_overwrite_without_force(trio, tmp_path):
    out = tmp_path / "o"
    r = Recipe(vlm=str(trio["vlm"]), coder=str(trio["coder"]), base=str(trio["base"]))
    run_merge(r, out, progress=False)
    (out / "note.txt").write_text("mine")  # a previous viscodex output, edited by hand
    with pytest.raises(ViscodexError, match="already exists; pass --force"):
        run_merge(r, out, progress=False)
    assert (out / "note.txt").read_text() == "mine"
    run_merge(r, out, progress=False, force=True)
    assert not (out / "note.txt").exists() and (out / RECIPE_FILE).exists()


def test_failure_midway_leaves_nothing(trio, tmp_path, monkeypatch):
    import viscodex.engine.merge as m

    real = m.compute_chunk
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(m, "compute_chunk", flaky)
    r = Recipe(vlm=str(trio["vlm"]), coder=str(trio["coder"]), base=str(trio["base"]))
    with pytest.raises(KeyboardInterrupt):
        run_merge(r, tmp_path / "o", progress=False, shard_size="100KB")
    assert sorted(os.listdir(tmp_path)) == []


def test_killed_merge_leaves_no_output_folder(trio, tmp_path):
    """SIGKILL in the middle of writing: nothing at --out (only a hidden temp folder may remain)."""
    script = textwrap.dedent(f"""
        import time, viscodex.engine.merge as m
        from viscodex.engine.recipe import Recipe
        real = m.compute_chunk
        def slow(*a, **k):
            time.sleep(0.2)
            return real(*a, **k)
        m.compute_chunk = slow
        r = Recipe(vlm={str(trio['vlm'])!r}, coder={str(trio['coder'])!r}, base={str(trio['base'])!r})
        m.run_merge(r, {str(tmp_path / 'o')!r}, progress=False, shard_size="100KB")
    """)
    p = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 60
    while time.time() < deadline:
        tmps = list(tmp_path.glob(".o.viscodex-tmp-*"))
        if tmps and list(tmps[0].glob("*.safetensors")):
            break
        time.sleep(0.05)
    else:
        p.kill()
        pytest.fail("merge never started writing")
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- recipes and CLI
def test_recipe_round_trip_reproduces_hashes(trio, tmp_path):
    r = Recipe(vlm=str(trio["vlm"]), coder=str(trio["coder"]), base=str(trio["base"]), lam=0.6, dtype="bfloat16")
    a = run_merge(r, tmp_path / "a", progress=False)
    written = Recipe.load(tmp_path / "a" / RECIPE_FILE)
    assert written.lam == 0.6 and written.method == "task_arithmetic" and written.params == {"scale": 1.0}
    assert written.records["output"]["files"] == a.files
    assert set(written.records["sources"]) == {"vlm", "coder", "base"}
    assert len(written.records["sources"]["vlm"]["files"]) == len(list(trio["vlm"].glob("*.safetensors"))) > 1
    assert written.records["sources"]["vlm"]["read"] and written.records["sources"]["coder"]["read"]
    b = run_merge(written, tmp_path / "b", progress=False)
    assert b.files == a.files
    assert Recipe.load(tmp_path / "b").records["output"]["files"] == a.files


def test_row_chunking_gives_identical_bytes(trio, tmp_path, caplog):
    """Big tensors are streamed in row chunks; chunk size must not change a single output byte, nor
    must the reuse of read buffers (small chunks: every read comes from a handful of pooled blocks
    while the hasher and the writer still hold others)."""
    import re

    r = Recipe(vlm=str(trio["vlm"]), coder=str(trio["coder"]), base=str(trio["base"]), lam=0.7, params={"scale": 0.9})
    whole = run_merge(r, tmp_path / "whole", progress=False, shard_size="300KB")
    with caplog.at_level(logging.DEBUG, logger="viscodex"):
        small = run_merge(r, tmp_path / "small", progress=False, shard_size="300KB", chunk_bytes=3000, window_bytes=10_000)
    assert whole.files == small.files
    assert Recipe.load(tmp_path / "whole").records["sources"] == Recipe.load(tmp_path / "small").records["sources"]
    lent, blocks = map(int, re.search(r"read buffers: (\d+) from the pool \((\d+) blocks\)", caplog.text).groups())
    assert blocks <= 10_000 // 3000 + 12 and lent > 20 * blocks  # each block reused many times
    import viscodex.engine.merge as m

    chunks = m.chunks_of(small.plan.items, 3000)
    assert len(chunks) > 3 * len(small.plan.items)  # really chunked (embeddings, lm_head, MLPs, vision)


def test_buffer_pool_reuses_a_block_only_once_nothing_views_it():
    from viscodex.engine.safetensors_io import BufferPool

    pool = BufferPool(1024, max_blocks=2, min_bytes=100)
    a = pool.take(1000)
    a.fill_(7)
    view = a[10:20].view(torch.int16)
    del a
    b = pool.take(1000)  # the first block is still viewed: a second one
    assert b.data_ptr() != view.data_ptr() - 10
    c = pool.take(500)  # both blocks out: fresh memory
    assert pool.fresh == 1 and len(pool.blocks) == 2
    first = view.data_ptr() - 10
    del view
    d = pool.take(600)  # the first block is free again
    assert d.data_ptr() == first and d.numel() == 600 and pool.lent == 3
    assert pool.take(50).numel() == 50 and pool.take(2000).numel() == 2000  # too small / too large: fresh
    assert pool.fresh == 3 and len(pool.blocks) == 2
    del b, c, d


def test_merge_math_runs_on_the_compute_threads_and_restores_torchs(trio, tmp_path, monkeypatch):
    import viscodex.engine.merge as m

    seen = set()
    check = m.nonfinite_count
    monkeypatch.setattr(m, "nonfinite_count", lambda t: (seen.add(torch.get_num_threads()), check(t))[1])
    before = torch.get_num_threads()
    r = Recipe(vlm=str(trio["vlm"]), coder=str(trio["coder"]), base=str(trio["base"]), lam=0.7)
    run_merge(r, tmp_path / "a", progress=False, compute_threads=3)
    assert seen == {3} and torch.get_num_threads() == before
    seen.clear()
    run_merge(r, tmp_path / "b", progress=False)
    assert seen == {m.default_compute_threads(elementwise=True)} and torch.get_num_threads() == before
    seen.clear()
    run_merge(dataclasses.replace(r, method="tsv"), tmp_path / "c", progress=False)  # SVDs: compute-bound
    assert seen == {m.default_compute_threads(elementwise=False)} and torch.get_num_threads() == before
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert m.default_compute_threads(True) == 1 and m.default_compute_threads(False) == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert m.default_compute_threads(True) == 13 and m.default_compute_threads(False) == 16


def test_input_hashes_are_file_sha256(trio, tmp_path):
    from viscodex.engine.sources import sha256_file

    r = Recipe(vlm=str(trio["vlm"]), coder=str(trio["coder"]), base=str(trio["base"]), lam=0.7)
    run_merge(r, tmp_path / "o", progress=False, chunk_bytes=5000)
    srcs = Recipe.load(tmp_path / "o").records["sources"]
    for role in ("vlm", "coder"):
        want = {f.name: sha256_file(f) for f in sorted(trio[role].glob("*.safetensors"))}
        assert srcs[role]["files"] == want
    assert srcs["base"]["read"] is False and "files" not in srcs["base"]  # the base cancels: never read


def test_source_licences_are_recorded(trio, tmp_path):
    vlm = tmp_path / "vlm"
    shutil.copytree(trio["vlm"], vlm)
    (vlm / "README.md").write_text("---\nlicense: apache-2.0\ntags: [x]\n---\n# card\n")
    r = Recipe(vlm=str(vlm), coder=str(trio["coder"]), base=str(trio["base"]))
    run_merge(r, tmp_path / "o", progress=False)
    srcs = Recipe.load(tmp_path / "o").records["sources"]
    assert srcs["vlm"]["license"] == "apache-2.0" and srcs["coder"]["license"] is None
    assert not (tmp_path / "o" / "README.md").exists()  # the VLM's card is not the merged model's card


def test_recipe_validation_messages(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("vlm: a\ncoder: b\nlambda: 0.5\nfoo: 1\n")
    with pytest.raises(RecipeError, match="unknown recipe field"):
        Recipe.load(p)
    p.write_text("vlm: a\ncoder: b\npolicy:\n  tensors:\n    - {pattern: 'model\\.norm', policy: maybe}\n")
    with pytest.raises(RecipeError, match=r"`policy.tensors.0.policy` .*: Input should be 'merge', 'vlm', 'coder' or 'base' \(got 'maybe'\)"):
        Recipe.load(p)
    with pytest.raises(RecipeError, match="unknown parameter"):
        Recipe(vlm="a", coder="b", params={"density": 0.2}).validate()
    with pytest.raises(RecipeError, match="recipe file not found"):
        Recipe.load(tmp_path / "missing.yaml")


def test_policy_override_per_tensor(trio, sds, tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(textwrap.dedent(f"""
        vlm: {trio['vlm']}
        coder: {trio['coder']}
        base: {trio['base']}
        lambda: 0.7
        policy:
          tensors:
            - pattern: '^model\\.layers\\.0\\.'
              policy: vlm
          roles:
            embedding: vlm
    """))
    run_merge(Recipe.load(p), tmp_path / "o", progress=False)
    out = load_sd(tmp_path / "o")
    assert torch.equal(out["model.layers.0.mlp.up_proj.weight"], sds["vlm"]["model.layers.0.mlp.up_proj.weight"])
    assert not torch.equal(out["model.layers.1.mlp.up_proj.weight"], sds["vlm"]["model.layers.1.mlp.up_proj.weight"])
    assert torch.equal(out["lm_head.weight"], sds["vlm"]["lm_head.weight"])
    used = Recipe.load(tmp_path / "o").records["policy_used"]
    assert used["roles"]["embedding"] == "vlm" and used["tensor_rules"][0]["policy"] == "vlm"


def test_shipped_recipes_are_valid():
    root = Path(__file__).resolve().parents[1] / "recipes"
    r8, r33 = Recipe.load(root / "viscodex-8b.yaml").validate(), Recipe.load(root / "viscodex-33b.yaml").validate()
    assert (r8.vlm, r8.coder, r8.base, r8.lam) == ("Qwen/Qwen2.5-VL-7B-Instruct", "nvidia/OpenCodeReasoning-Nemotron-1.1-7B", "Qwen/Qwen2.5-7B", 0.7)
    assert (r33.vlm, r33.lam) == ("Qwen/Qwen2.5-VL-32B-Instruct", 0.85)


def test_cli_merge_recipe_with_overrides_and_inspect(trio, sds, tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(f"vlm: {trio['vlm']}\ncoder: {trio['coder']}\nbase: {trio['base']}\nlambda: 0.9\n")
    runner = CliRunner()
    res = runner.invoke(app, ["merge", str(p), "--variant", "swapped", "--out", str(tmp_path / "sw"), "--shard-size", "1MB"])
    assert res.exit_code == 0, res.output
    out = load_sd(tmp_path / "sw")
    k = "model.layers.0.self_attn.k_proj.weight"
    assert torch.equal(out[k], sds["coder"][k])
    res = runner.invoke(app, ["merge", str(p), "--lam", "0.25", "--out", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    assert Recipe.load(tmp_path / "m").lam == 0.25
    res = runner.invoke(app, ["merge", str(p), "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "already exists; pass --force" in res.output
    res = runner.invoke(app, ["merge", str(p), "--lam", "2", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "outside [0, 1]" in res.output and not (tmp_path / "x").exists()
    res = runner.invoke(app, ["inspect", str(trio["vlm"]), str(trio["coder"]), str(trio["base"])])
    assert res.exit_code == 0, res.output
    assert "Qwen2_5_VLForConditionalGeneration (qwen2_5_vl, vlm)" in res.output
    assert "2 layers, hidden 64, mlp 128, heads 4/2 kv" in res.output
    assert "trio: compatible - 27 tensors merged, 30 copied from the vlm" in res.output
    res = runner.invoke(app, ["inspect", str(trio["vlm"]), str(trio["vlm"])])
    assert "trio: NOT compatible" in res.output and "is not a Qwen2-family causal LM" in res.output


def test_cli_flags_only(trio, tmp_path):
    res = CliRunner().invoke(app, ["merge", "--vlm", str(trio["vlm"]), "--coder", str(trio["coder"]), "--base",
                                   str(trio["base"]), "--lam", "0.7", "--out", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and (tmp_path / "m" / RECIPE_FILE).exists()
