"""benchmarks/gpu/ keeps working between GPU runs: each script runs end to end on the tiny shape on
CPU (the numbers mean nothing here; what is checked is that the script runs viscodex's real paths
and writes the fields benchmarks/README.md reports). Nothing here needs or times a GPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "benchmarks" / "gpu"
pytestmark = pytest.mark.slow


def run(script: str, *args: str, tmp: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, str(GPU / script), *args], capture_output=True, text=True, cwd=tmp,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_sft_script_padded_and_packed(tmp_path):
    out = tmp_path / "sft.json"
    run("sft_7b.py", "--shape", "tiny", "--device", "cpu", "--steps", "2", "--warm", "1", "--records", "6",
        "--seq-len", "768", "--min-len", "256", "--optim", "adamw_torch", "--work", str(tmp_path / "w"),
        "--json", str(out), tmp=tmp_path)
    res = {r["mode"]: r for r in json.loads(out.read_text())}
    assert set(res) == {"padded", "packed"}
    assert res["packed"]["padding_fraction"] == 0.0 < res["padded"]["padding_fraction"]
    for r in res.values():
        assert r["tokens_per_s"] > 0 and r["timed_steps"] == 1 and len(r["losses"]) == 2
        assert r["params"]["vision"] > 0 and r["params"]["backbone"] > 0


def test_app_script_with_live_lambda(tmp_path):
    out = tmp_path / "app.json"
    run("app_7b.py", "--shape", "tiny", "--device", "cpu", "--max-new-tokens", "4", "--repeats", "1",
        "--work", str(tmp_path / "w"), "--json", str(out), tmp=tmp_path)
    res = json.loads(out.read_text())
    assert res["vision_groups"] == [["vlm", "swapped", "merged"]]  # one shared vision tower
    assert [r["variant"] for r in res["per_variant"]] == ["vlm", "swapped", "merged"]
    assert res["lambda_tensors"] > 0 and res["lambda_recompute_s"] > 0


def test_parity_script_finds_identical_outputs_identical(tmp_path):
    out = tmp_path / "parity.json"
    run("parity.py", "--shape", "tiny", "--layers", "1", "--devices", "cpu,cpu", "--methods", "task_arithmetic",
        "--scratch", str(tmp_path / "s"), "--json", str(out), tmp=tmp_path)
    (r,) = json.loads(out.read_text())
    assert r["same_names"] and r["tensors"] > 0 and r["tensors_differing"] == 0 and r["max_abs_diff"] == 0.0


def test_parity_compare_counts_differing_elements_and_ulps(tmp_path):
    """The comparison the GPU run reports: one bf16 element one ulp apart is found, and named."""
    import importlib.util

    import torch
    from safetensors.torch import save_file

    spec = importlib.util.spec_from_file_location("vx_parity", GPU / "parity.py")
    parity = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(parity)
    x = torch.randn(4, 8).to(torch.bfloat16)
    y = x.clone()
    y.view(torch.int16)[2, 3] += 1  # the next bf16 value
    for d, t in (("a", x), ("b", y)):
        (tmp_path / d).mkdir()
        save_file({"w": t, "same": torch.ones(3)}, str(tmp_path / d / "model.safetensors"))
    r = parity.compare(tmp_path / "a", tmp_path / "b")
    assert r["tensors_differing"] == 1 and r["examples"] == ["w"] and r["elements_differing"] == 1
    assert r["max_bf16_ulps"] == 1 and r["max_abs_diff"] == abs(float(x[2, 3]) - float(y[2, 3])) > 0
