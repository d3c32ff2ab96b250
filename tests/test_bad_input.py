"""Errors instead of tracebacks (issue 16): each bad input is one line naming the problem and the
fix, exit code 2, and nothing written."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from viscodex.cli import app
from viscodex.errors import RecipeError, SourceError
from viscodex.engine.recipe import Recipe
from viscodex.engine.safetensors_io import read_header
from viscodex._util.sizes import DEFAULT_SHARD_SIZE, parse_size


def run_cli(*args) -> tuple[int, str]:
    r = CliRunner().invoke(app, [str(a) for a in args])
    return r.exit_code, r.output


def one_line_error(code: int, out: str, *needles: str) -> None:
    assert code == 2, out
    assert "Traceback" not in out and len(out.strip().splitlines()) == 1, out
    for n in needles:
        assert n in out, out


# ------------------------------------------------------------------ recipes (a schema, not hand checks)
BAD_RECIPES = [
    ("", "the recipe is empty: it needs at least `vlm` and `coder`"),
    ("vlm: a\n", "recipe field `coder` (CLI --coder): is required"),
    ("vlm: a\ncoder: b\npolicy: merge\n", "recipe field `policy`"),
    ("vlm: a\ncoder: b\npolicy:\n  tensors:\n    - {pattern: 'mlp'}\n", "`policy.tensors.0.policy`"),
    ("vlm: a\ncoder: b\nseed: abc\n", "recipe field `seed` (CLI --seed): Input should be a valid integer (got 'abc')"),
    ("vlm: a\ncoder: b\nmethod: [ties]\n", "recipe field `method` (CLI --method): Input should be a valid string"),
    ("vlm: a\ncoder: b\nparams: [1, 2]\n", "recipe field `params` (CLI --param): Input should be a valid dictionary"),
    ("vlm: 123\ncoder: b\n", "recipe field `vlm` (CLI --vlm): Input should be a valid string (got 123)"),
    ("vlm: a\ncoder: b\nallow_extrapolation: 'no'\n",
     "recipe field `allow_extrapolation` (CLI --allow-extrapolation): Input should be a valid boolean (got 'no')"),
    ("vlm: a\ncoder: b\nlambda: .nan\n", "recipe field `lambda` (Python: Recipe(lam=...), CLI --lambda)"),
    ("- vlm: a\n", "a recipe must be a YAML mapping of fields"),
]


@pytest.mark.parametrize("text,needle", BAD_RECIPES, ids=[n[:30] for _, n in BAD_RECIPES])
def test_recipe_of_the_wrong_shape(tmp_path, text, needle):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    with pytest.raises(RecipeError) as e:
        Recipe.load(p)
    assert needle in str(e.value) and "\n" not in str(e.value)
    code, out = run_cli("merge", p, "--out", tmp_path / "o")
    one_line_error(code, out, needle)
    assert not (tmp_path / "o").exists()


def test_python_recipe_is_validated_not_mutated():
    r = Recipe(vlm="a", coder="b", lam=1, params={})
    v = r.validate()
    assert v.lam == 1.0 and v.params == {"scale": 1.0}
    assert r.params == {} and r.lam == 1  # the caller's object is untouched
    with pytest.raises(RecipeError, match=r"`allow_extrapolation` .*valid boolean \(got 'no'\)"):
        Recipe(vlm="a", coder="b", allow_extrapolation="no").validate()
    with pytest.raises(RecipeError, match=r"`seed` \(CLI --seed\)"):
        Recipe(vlm="a", coder="b", seed="abc").validate()


# ------------------------------------------------------------------ sizes and options
def test_sizes_mean_what_they_say():
    assert parse_size("5GiB") == 5 * 2**30 and parse_size("5GB") == 5 * 10**9
    assert parse_size("500MiB") == 500 * 2**20 and parse_size("1.5KB") == 1500 and parse_size("1048576") == 2**20
    assert parse_size(DEFAULT_SHARD_SIZE) == 5 * 10**9
    from viscodex import cli
    from viscodex.engine import merge

    import inspect
    lib = inspect.signature(merge.run_merge).parameters["shard_size"].default
    flag = inspect.signature(cli.merge).parameters["shard_size"].default
    assert lib == flag == DEFAULT_SHARD_SIZE


@pytest.mark.parametrize("args,needle", [
    (["--shard-size", "-5GB"], "--shard-size (shard_size=) '-5GB': not a size"),
    (["--shard-size", "0"], "--shard-size (shard_size=) '0': must be a positive size"),
    (["--shard-size", "infGB"], "--shard-size (shard_size=) 'infGB': not a size"),
    (["--shard-size", "1e400GB"], "--shard-size (shard_size=) '1e400GB': too large"),
    (["--read-threads", "0"], "--read-threads (threads=) 0: give the number of reader threads, at least 1"),
    (["--read-threads", "-1"], "--read-threads (threads=) -1"),
    (["--compute-threads", "-1"], "--compute-threads (compute_threads=) -1: give at least 1"),
    (["--device", "tpu9"], "--device (device=) 'tpu9': not a torch device"),
    (["--device", "meta"], "--device (device=) 'meta': merges run on cpu, cuda or mps"),
    (["--device", "cuda:99"], "--device (device=) 'cuda:99': "),  # no CUDA here, or too few devices
])
def test_bad_merge_options(trio, tmp_path, args, needle):
    code, out = run_cli("merge", "--vlm", trio["vlm"], "--coder", trio["coder"], "--base", trio["base"],
                        "--out", tmp_path / "o", *args)
    one_line_error(code, out, needle)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("fields,needle", [
    ({"learning_rate": 0}, "--lr (learning_rate=) 0: must be positive"),
    ({"batch_size": 0}, "--batch-size (batch_size=) 0: must be at least 1"),
    ({"lora_r": 0}, "--lora-r (lora_r=) 0: must be at least 1"),
    ({"merge_lora": True}, "--merge-lora (merge_lora=) needs --lora-r (lora_r=)"),
    ({"warmup_ratio": 1.0}, "--warmup-ratio (warmup_ratio=) 1.0: must be in [0, 1)"),
    ({"truncation": "cut"}, "--truncation (truncation=) 'cut': must be one of"),
    ({"projector_lr": 1e-4}, "--projector-lr (projector_lr=) 0.0001: needs --train-projector (train_projector=)"),
    ({"eval_split": "1.5"}, "--eval-split (eval_split=) '1.5': a fraction must be in (0, 1)"),
    ({"optim": "adam_wrong"}, "unknown --optim (optim=) 'adam_wrong'"),
    ({"lr_scheduler": "zigzag"}, "unknown --lr-scheduler (lr_scheduler=) 'zigzag'"),
    ({"packing": True, "attn_implementation": "paged_attention"},
     "--packing (packing=) needs an attention implementation that separates packed records"),
])
def test_train_config_errors_name_the_flag_and_the_argument(fields, needle):
    """TrainConfig.validate is the library's check (viscodex.train(...) and `viscodex train` both
    run it): its errors name the CLI flag and the Python argument, as the recipe's errors do."""
    from viscodex.errors import ViscodexError
    from viscodex.training.trainer import TrainConfig

    with pytest.raises(ViscodexError) as e:
        TrainConfig("model", "data.jsonl", "out", **fields).validate()
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_train_flag_names_are_the_cli_flags():
    """The names errors use (training.flags) are the ones `viscodex train --help` offers."""
    from viscodex.training.flags import FLAG_NAMES

    out = CliRunner().invoke(app, ["train", "--help"], terminal_width=200).output
    for spellings in FLAG_NAMES.values():
        assert all(s in out for s in spellings), spellings


# ------------------------------------------------------------------ safetensors headers and indexes
def _st(path: Path, header) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 64)
    return path


@pytest.mark.parametrize("header,needle", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, "overlap"),
    ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, "negative dimension"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0.0, 8.5]}}, "corrupt header entry for tensor 'a'"),
    ([1, 2], "header is not a JSON object"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, "gap"),
])
def test_safetensors_headers_as_strict_as_safe_open(tmp_path, header, needle):
    p = _st(tmp_path / "m.safetensors", header)
    with pytest.raises(SourceError, match=needle):
        read_header(p)
    from safetensors import safe_open

    with pytest.raises(Exception):  # the reference rejects each of these too
        with safe_open(str(p), "pt") as f:
            list(f.keys())


def test_index_path_escaping_the_folder_is_refused(trio, tmp_path):
    import shutil

    vlm = tmp_path / "vlm"
    shutil.copytree(trio["vlm"], vlm)
    idx = json.loads((vlm / "model.safetensors.index.json").read_text())
    k = next(iter(idx["weight_map"]))
    shutil.copyfile(vlm / idx["weight_map"][k], tmp_path / "outside.safetensors")
    idx["weight_map"][k] = "../outside.safetensors"
    (vlm / "model.safetensors.index.json").write_text(json.dumps(idx))
    code, out = run_cli("merge", "--vlm", vlm, "--coder", trio["coder"], "--out", tmp_path / "o")
    one_line_error(code, out, "'../outside.safetensors' lies outside the model folder")


def test_mistyped_relative_path_is_not_a_network_problem(trio, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out = run_cli("merge", "--vlm", "mdels/vlm", "--coder", trio["coder"], "--out", tmp_path / "o")
    one_line_error(code, out, "mdels/vlm: no such folder", "(check the path)")
    assert out.startswith(f"error: mdels/vlm: no such folder {tmp_path / 'mdels' / 'vlm'}")


# ------------------------------------------------------------------ eval
def test_eval_missing_folder(tmp_path):
    code, out = run_cli("eval", tmp_path / "nope", "-t", "toy_coding", "-o", tmp_path / "r.json")
    one_line_error(code, out, f"{tmp_path / 'nope'}: no such model folder; check the path")


def test_eval_hub_benchmark_offline_suggests_local_sources(trio, tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-m", "viscodex", "eval", str(trio["vlm"]), "-t", "mmcode", "--limit", "1",
                        "-o", str(tmp_path / "r.json")], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "mmcode: cannot fetch the benchmark from the Hub (LocalEntryNotFoundError" in r.stderr
    assert "--source sample" in r.stderr and "--source PATH" in r.stderr


# ------------------------------------------------------------------ space offline
def test_space_dry_run_offline_names_the_network(monkeypatch, tmp_path):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*a, **k):
        raise LocalEntryNotFoundError("cannot find the requested files in the local cache")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    code, out = run_cli("space", "--model", "me/merged", "--repo", "me/demo", "--dry-run")
    one_line_error(code, out, "the Hub cannot be reached", "connect and retry")
    assert "pass --base-vlm" not in out


def test_hub_retry_lines_are_logged_once():
    import subprocess
    import sys

    code = ("from viscodex.cli import _setup_logging; _setup_logging(False); "
            "from huggingface_hub.utils import logging as l; l.get_logger('huggingface_hub.utils._http').warning('Retrying in 1s'); "
            "import logging; logging.getLogger('httpx2').info('HTTP Request: GET https://huggingface.co')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PATH": "/usr/bin:/bin"})
    assert r.stderr.count("Retrying in 1s") == 1, r.stderr
    assert "HTTP Request" not in r.stderr
