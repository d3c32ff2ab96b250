"""Merge methods (issue 3) end to end: a tiny-trio merge with each method loads and generates,
records its method and parameters, follows the fallback policy, and reproduces its bytes."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from viscodex.engine import arch
from viscodex.cli import app
from viscodex.engine.merge import run_merge
from viscodex.engine.methods import get_method
from viscodex.engine.recipe import Recipe

LAM = 0.7
CASES = [
    ("task_arithmetic", {}),
    ("weight_average", {}),
    ("ties", {"density": 0.3}),
    ("dare", {"drop_rate": 0.3}),
    ("dare", {"combine": "ties", "drop_rate": 0.1}),
    ("tsv", {}),
    ("iso_c", {}),
    ("iso_cts", {}),
    ("wudi", {"steps": 50, "lr": 1e-3}),
    ("optmerge", {}),
    ("optmerge_closed_form", {}),
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def load_sd(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(f, "pt") as s:
            for k in s.keys():  # noqa: SIM118 (safe_open is not a dict)
                out[k] = s.get_tensor(k)
    layout = arch.detect_layout(out)
    return {arch.to_canonical(k, layout): v for k, v in out.items()}


@pytest.fixture(scope="module")
def sds(trio):
    return {k: load_sd(v) for k, v in trio.items()}


def merge(trio, out: Path, method: str, params: dict, seed: int = 0):
    r = Recipe(vlm=str(trio["vlm"]), coder=str(trio["coder"]), base=str(trio["base"]), method=method,
               lam=LAM, params=dict(params), seed=seed)
    return run_merge(r, out, progress=False, hash_inputs=False)


def generate(folder: Path) -> None:
    from PIL import Image
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder)
    proc = AutoProcessor.from_pretrained(folder)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "a small red circle"}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True)
    inputs = proc(text=[text], images=[Image.new("RGB", (56, 56), (200, 30, 30))], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def ta(sds, k):
    base, vlm, coder = (sds[r][k].float() for r in ("base", "vlm", "coder"))
    return base + LAM * (vlm - base) + (1 - LAM) * (coder - base)


@pytest.mark.parametrize("method,params", CASES, ids=[f"{m}-{i}" for i, (m, _) in enumerate(CASES)])
def test_merge_with_each_method_loads_generates_and_records(trio, sds, tmp_path, method, params):
    res = merge(trio, tmp_path / "out", method, params)
    generate(res.out)
    rec = Recipe.load(res.out)
    assert rec.method == method
    assert rec.params == get_method(method).validate_params(params)  # every parameter, defaults included
    out = load_sd(res.out)
    m = get_method(method)
    vision_rows = set(res.plan.vision_token_ids)
    changed_2d = 0
    for k, v in out.items():
        role = arch.role_of(k).role
        if role == "vision":
            assert torch.equal(v, sds["vlm"][k]), k
            continue
        want_ta = ta(sds, k)
        if role == "embedding":
            rows = [i for i in range(v.shape[0]) if i not in vision_rows]
            v, want_ta = v[rows], want_ta[rows]
        if m.matrix_only and not m.applies_to(k, v.shape):
            # documented fallback: task arithmetic with the recipe's weights
            torch.testing.assert_close(v.float(), want_ta, rtol=1e-5, atol=1e-6, msg=k)
        elif method != "task_arithmetic" and v.dim() == 2:
            changed_2d += not torch.allclose(v.float(), want_ta, rtol=1e-4, atol=1e-5)
    if method != "task_arithmetic":
        assert changed_2d > 0


def test_same_recipe_and_seed_reproduce_the_output_hashes(trio, tmp_path):
    a = merge(trio, tmp_path / "a", "dare", {"drop_rate": 0.3}, seed=1)
    b = merge(trio, tmp_path / "b", "dare", {"drop_rate": 0.3}, seed=1)
    c = merge(trio, tmp_path / "c", "dare", {"drop_rate": 0.3}, seed=2)
    assert a.files == b.files and a.files != c.files
    # a written recipe is itself a recipe: re-running it gives the same bytes
    d = run_merge(Recipe.load(a.out), tmp_path / "d", progress=False, hash_inputs=False)
    assert d.files == a.files
    e = merge(trio, tmp_path / "e", "optmerge", {"steps": 20})
    f = merge(trio, tmp_path / "f", "optmerge", {"steps": 20})
    assert e.files == f.files


def test_cli_method_and_params_reach_the_recipe(trio, tmp_path):
    out = tmp_path / "cli"
    r = CliRunner().invoke(app, ["merge", "--vlm", str(trio["vlm"]), "--coder", str(trio["coder"]), "--base",
                                 str(trio["base"]), "--method", "optmerge_closed_form", "-p", "rank_fraction=0.25",
                                 "-p", "center=true", "--out", str(out), "--no-hash"])
    assert r.exit_code == 0, r.output
    rec = Recipe.load(out)
    assert rec.method == "optmerge_closed_form"
    assert rec.params["rank_fraction"] == 0.25 and rec.params["center"] is True and rec.params["rcond"] == 1e-6
    bad = CliRunner().invoke(app, ["merge", "--vlm", str(trio["vlm"]), "--coder", str(trio["coder"]), "--base",
                                   str(trio["base"]), "--method", "ties", "-p", "density=2", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0
    assert "parameter 'density'=2.0 is outside [0.0, 1.0]" in bad.output
    assert not (tmp_path / "x").exists()


def test_ties_global_topk_end_to_end(trio, tmp_path):
    """topk=global: the engine's two-pass pre-pass finds one magnitude threshold per expert over all
    merged tensors; the output equals TIES applied with those thresholds, and the recipe records them."""
    from safetensors.torch import load_file

    from viscodex.engine.merge import run_merge
    from viscodex.engine.methods.ties import global_thresholds, ties
    from viscodex.engine.recipe import Recipe

    def sd(folder):
        out = {}
        for f in sorted(folder.glob("*.safetensors")):
            out.update(load_file(f))
        return out

    base, vlm, coder = sd(trio["base"]), sd(trio["vlm"]), sd(trio["coder"])
    r = Recipe(vlm=str(trio["vlm"]), coder=str(trio["coder"]), base=str(trio["base"]), lam=0.6, method="ties",
               params={"density": 0.3, "topk": "global"})
    res = run_merge(r, tmp_path / "o", progress=False)
    merged_names = [it.name for it in res.plan.items if it.policy == "merge" and it.params is None]
    assert "model.embed_tokens.weight" in merged_names and "model.layers.0.mlp.up_proj.weight" in merged_names
    n = res.plan.shared_rows
    rows = lambda k, t: t[:n] if k in ("model.embed_tokens.weight", "lm_head.weight") else t  # noqa: E731
    want = global_thresholds(lambda: ([rows(k, vlm[k]) - rows(k, base[k]), rows(k, coder[k]) - rows(k, base[k])]
                                      for k in merged_names), 2, 0.3)
    rec = Recipe.load(tmp_path / "o").records["policy_used"]["prepass"]
    assert rec["thresholds"] == pytest.approx(want, rel=0, abs=0)
    out = sd(tmp_path / "o")
    k = "model.layers.1.self_attn.q_proj.weight"
    exp = ties(base[k], [vlm[k], coder[k]], [0.6, 0.4], density=0.3, topk="global", thresholds=want)
    assert torch.equal(out[k], exp)
    per_tensor = ties(base[k], [vlm[k], coder[k]], [0.6, 0.4], density=0.3, topk="per_tensor")
    assert not torch.equal(out[k], per_tensor)


def test_a_failing_pre_pass_leaves_nothing_behind(trio, tmp_path, monkeypatch):
    """A read error during TIES' global pre-pass (a shard truncated after planning) stops the merge
    with the error naming the file, and leaves neither --out nor a hidden temporary folder."""
    import viscodex.engine.merge as m
    from viscodex.errors import SourceError
    from viscodex.engine.recipe import Recipe

    def fail(*a, **kw):
        raise SourceError("vlm/model-00001-of-00002.safetensors: truncated while reading at byte 1024")

    monkeypatch.setattr(m, "read_range", fail)
    r = Recipe(vlm=str(trio["vlm"]), coder=str(trio["coder"]), base=str(trio["base"]), lam=0.6, method="ties",
               params={"density": 0.3, "topk": "global"})
    with pytest.raises(SourceError, match="truncated while reading at byte 1024"):
        m.run_merge(r, tmp_path / "o", progress=False)
    assert list(tmp_path.iterdir()) == []
