"""benchmarks/merge_bench.py keeps working: its shapes are the real checkpoints', its disk estimate
matches what it builds, the linked backbone it hands mergekit reads as the VLM's own tensors, and
one tiny end-to-end run produces a row. Nothing here is timed."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "merge_bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("merge_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


@pytest.mark.parametrize("shape, layers, llm_params, vlm_params", [
    ("7b", 28, 7_615_616_512, 8_292_166_656),  # Qwen/Qwen2.5-7B, Qwen/Qwen2.5-VL-7B-Instruct
    ("3b", 36, 3_085_938_688, 3_754_622_976),  # Qwen/Qwen2.5-3B (tied), Qwen/Qwen2.5-VL-3B-Instruct
])
def test_shapes_have_the_real_checkpoints_parameter_counts(bench, shape, layers, llm_params, vlm_params):
    sh = bench.SHAPES[shape]
    assert sh.real_layers == layers
    llm = bench.llm_shapes(sh, layers)
    assert bench.nbytes(llm) == 2 * llm_params
    assert bench.nbytes(llm + bench.vision_shapes(sh)) == 2 * vlm_params
    assert ("lm_head.weight" in dict(llm)) == (not sh.tied)


def _folder_bytes(d: Path) -> int:
    return sum(f.stat().st_size for f in d.glob("*.safetensors") if not f.is_symlink())


def test_built_inputs_match_the_disk_estimate_and_link_the_vlm_backbone(bench, tmp_path):
    paths = bench.build_inputs(tmp_path, "tiny", 3)
    sh = bench.SHAPES["tiny"]
    built = sum(_folder_bytes(paths[r]) for r in ("vlm", "coder", "base", "vlm_backbone"))
    inputs = bench.disk_needed("tiny", 3, built=False, mergekit=False) - bench.disk_needed("tiny", 3, built=True, mergekit=False)
    assert 0 <= built - inputs < 3 * 64 * 1024  # what the estimate leaves out is the safetensors headers
    assert bench.disk_needed("tiny", 3, built=True, mergekit=True) == (
        bench.nbytes(bench.llm_shapes(sh, 3) + bench.vision_shapes(sh)) + bench.nbytes(bench.llm_shapes(sh, 3)))
    # what mergekit reads as "the VLM's backbone": exactly the VLM's non-vision tensors, same bytes
    index = json.loads((paths["vlm_backbone"] / "model.safetensors.index.json").read_text())["weight_map"]
    with safe_open(paths["vlm"] / "model.safetensors", "pt") as vlm:
        assert set(index) == {k for k in vlm.keys() if not k.startswith("visual.")}
        assert set(index) == {n for n, _ in bench.llm_shapes(sh, 3)}
        with safe_open(paths["vlm_backbone"] / index["model.layers.2.mlp.up_proj.weight"], "pt") as bb:
            assert bb.get_tensor("model.layers.2.mlp.up_proj.weight").equal(vlm.get_tensor("model.layers.2.mlp.up_proj.weight"))
    assert (paths["vlm_backbone"] / "model.safetensors").is_symlink()
    assert not (paths["vlm_backbone"] / "model.safetensors").readlink().is_absolute()


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_tiny_run_prints_and_records_a_row(tmp_path):
    r = _run("--shape", "tiny", "--layers", "2", "--no-mergekit", "--discard-inputs", "--scratch", str(tmp_path / "s"),
             "--json", str(tmp_path / "r.json"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (row,) = json.loads((tmp_path / "r.json").read_text())
    assert row["shape"] == "tiny" and row["layers"] == 2 and row["device"] == "cpu"
    assert row["floor_s"] > 0 and row["viscodex_s"] > 0 and row["viscodex_rss"] > 0
    assert row["viscodex_gpu"] is None and "mergekit_s" not in row
    assert "synthetic Qwen2.5-VL-TINY layout" in r.stdout and "vis/floor" in r.stdout
    assert not (tmp_path / "s" / "qwen25vltiny-L2").exists()  # --discard-inputs


@pytest.mark.slow
def test_missing_mergekit_and_short_disk_are_named(tmp_path):
    r = _run("--shape", "tiny", "--layers", "2", "--mergekit", str(tmp_path / "nope"), "--scratch", str(tmp_path), cwd=tmp_path)
    assert r.returncode != 0 and f"mergekit-yaml not found at {tmp_path / 'nope'}" in r.stderr
    r = _run("--shape", "7b", "--layers", "100000", "--no-mergekit", "--scratch", str(tmp_path), cwd=tmp_path)
    assert r.returncode != 0 and "7b at 100000 layers needs" in r.stderr and "GB free" in r.stderr
    assert not list(tmp_path.glob("qwen25vl*"))  # refused before building anything


def test_toy_copy_probe_runs_on_a_trio(trio):
    """benchmarks/toy_copy_probe.py (docs/demo.md's design notes) keeps working: rates for every
    context it probes, the image contexts and attention shares for the VLM only."""
    spec = importlib.util.spec_from_file_location("toy_copy_probe", ROOT / "benchmarks" / "toy_copy_probe.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from viscodex.toy.world import Scene

    assert mod._prefix(Scene("red", "circle", "small")) == 'a small red circle: <svg><circle style="fill:'
    text = mod.probe(trio["base"], n=3)
    assert set(text) == {"text", "bare", "conflict: caption", "conflict: prompt"}
    vl = mod.probe(trio["vlm"], n=3, attention=True)
    assert set(vl) == set(text) | {"image", "image≠: caption", "image≠: image", "attention"}
    assert all(0.0 <= v <= 1.0 for k, v in vl.items() if k != "attention")
    layers = 2  # TinyConfig's
    assert len(vl["attention"]["image"]) == layers and len(vl["attention"]["image"][0]) == 4  # heads
    assert all(0.0 <= x <= 1.0 for row in vl["attention"]["image"] for x in row)


@pytest.mark.slow
def test_toy_trio_experiment_prints_the_zero_shot_claims(tmp_path, monkeypatch, capsys):
    """benchmarks/toy_trio_experiment.py (how docs/demo.md's design variants were measured) trains a
    trio with the settings given, and decides the five zero-shot claims with the demo's own claims
    code, lambda 1 standing for the VLM and lambda 0 for coder-swapped."""
    spec = importlib.util.spec_from_file_location("toy_trio_experiment", ROOT / "benchmarks" / "toy_trio_experiment.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from viscodex.toy.claims import paper_claims

    out = tmp_path / "rows.jsonl"
    monkeypatch.setenv("VISCODEX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "argv", ["toy_trio_experiment.py", "--seeds", "3", "--lambdas", "0", "0.7", "1",
                                      "--set", "pretrain_steps=2", "--set", "coder_steps=2", "--set", "vlm_steps=2",
                                      "--set", "eval_samples=4", "--set", "vlm_replay_coding=0.5", "--json", str(out)])
    mod.main()
    row = json.loads(out.read_text())
    assert row["seed"] == 3 and row["set"]["vlm_replay_coding"] == 0.5
    zero_shot = [c.claim for c in paper_claims("merged-lam0.7") if not (c.x_sft or c.y_sft)]
    assert [c["claim"] for c in row["claims"]] == zero_shot and len(zero_shot) == 5
    lam = row["lam"]
    for c in row["claims"]:
        assert c["verdict"] in ("holds", "does not hold", "inconclusive") and c["n"] == 4
    swap = row["claims"][0]  # vlm - swapped on grounding: lambda 1's and lambda 0's scores
    assert swap["values"] == [round(lam["merged-lam1"]["grounding"]["attr_acc"], 4),
                              round(lam["merged-lam0"]["grounding"]["attr_acc"], 4)]
    printed = capsys.readouterr().out
    assert f"{row['claims'][2]['verdict']:13s} " in printed and "merging adds the coder's skill" in printed
