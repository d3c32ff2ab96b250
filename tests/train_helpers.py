"""Helpers shared by the `viscodex train` tests: a merged tiny model and reading its tensors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open


def tensors(folder) -> dict[str, torch.Tensor]:
    """Every tensor of a model folder's safetensors files, by name."""
    out = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(f), "pt") as sf:
            out.update({k: sf.get_tensor(k) for k in sf.keys()})
    return out


def merge_tiny(trio: dict, folder: Path, lam: float = 0.7) -> Path:
    """The tiny trio merged into `folder`/merged (a Qwen2.5-VL model with a recipe)."""
    from viscodex.engine.merge import run_merge
    from viscodex.engine.recipe import Recipe

    r = Recipe(vlm=str(trio["vlm"]), coder=str(trio["coder"]), base=str(trio["base"]), lam=lam)
    return run_merge(r, Path(folder) / "merged", progress=False).out


def small_config(merged, data, out, **kw):
    """A TrainConfig for a few quick steps on the tiny model; `kw` overrides."""
    from viscodex.training.trainer import TrainConfig

    base = dict(model=str(merged), data=str(data), out=str(out), global_batch=2, batch_size=2, max_steps=2,
                learning_rate=1e-3, warmup_ratio=0.0, save_steps=100, logging_steps=1, seed=0, progress=False)
    return TrainConfig(**{**base, **kw})


def merged_fixture(folder: str):
    """A module-scoped `merged` fixture: the tiny trio merged once per test module, under `folder`."""
    @pytest.fixture(scope="module")
    def merged(trio, tmp_path_factory) -> Path:
        return merge_tiny(trio, tmp_path_factory.mktemp(folder))

    return merged


def toy_data_fixture(n: int, seed: int):
    """A module-scoped `data` fixture: `n` toy image->code records next to the `merged` model."""
    @pytest.fixture(scope="module")
    def data(merged) -> Path:
        from viscodex.training.toy_data import write_toy_dataset

        return write_toy_dataset(merged.parent / "toy", n=n, seed=seed)

    return data
