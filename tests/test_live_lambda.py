"""Live λ (issue 19): the merged column recomputed in place from the resident VLM and coder-swapped
backbones is bit for bit what `viscodex merge --lam λ` writes, and answers the same."""
from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from viscodex.app import sources
from viscodex.app.live_lambda import live_lambda
from viscodex.app.variants import COMPARE_KEY, StreamStats, load_variants
from viscodex.engine.recipe import RECIPE_FILE
from viscodex.errors import AppError

LAMS = (0.15, 0.5, 0.95)
MAX_NEW = 10
INSTRUCTION = "Write the HTML"


@pytest.fixture(scope="module")
def trio_paths(tmp_path_factory) -> dict[str, Path]:
    return sources.default_variants(cache=tmp_path_factory.mktemp("live-cache"))


@pytest.fixture(scope="module")
def vs(trio_paths):
    return load_variants({k: str(v) for k, v in trio_paths.items()}, device="cpu")


@pytest.fixture(scope="module")
def cli_merges(trio_paths, tmp_path_factory) -> dict[float, Path]:
    """`viscodex merge <the merged model's recipe> --lam λ --out ...` at each λ."""
    from viscodex.cli import app as cli

    out = {}
    d = tmp_path_factory.mktemp("cli-merges")
    for lam in LAMS:
        out[lam] = d / f"lam-{lam}"
        r = CliRunner().invoke(cli, ["merge", str(trio_paths["merged"] / RECIPE_FILE), "--lam", str(lam),
                                     "--out", str(out[lam])])
        assert r.exit_code == 0, r.output
    return out


def image() -> Image.Image:
    from viscodex.app.assets import ASSETS_DIR

    return Image.open(ASSETS_DIR / "bar_chart.png").convert("RGB")


def load_model(path: Path, dtype=torch.float32):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(path, dtype=dtype).eval()


def test_live_lambda_is_on_for_the_tiny_trio_and_knows_its_tensors(vs):
    live = vs.live
    assert live.enabled and live.reason == "" and live.recipe_lam == sources.DEMO_LAMBDA
    names = {t.name for t in live.targets}
    assert "model.embed_tokens.weight" in names and "lm_head.weight" in names
    assert not any(n.startswith("visual.") for n in names)  # the vision tower is the VLM's at every λ
    emb = next(t for t in live.targets if t.name == "model.embed_tokens.weight")
    # the vision special tokens' rows stay the VLM's: the ids its tokenizer gives those tokens
    tok = vs.variants["vlm"].processor.tokenizer
    want = sorted(tok.convert_tokens_to_ids(t) for t in ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                                                          "<|video_pad|>"))
    assert emb.keep == tuple(want) and len(set(want)) == 4


@pytest.mark.parametrize("lam", LAMS)
def test_recomputed_weights_equal_viscodex_merge_bit_for_bit_and_answer_the_same(vs, cli_merges, lam):
    ref = load_model(cli_merges[lam])
    stats = StreamStats()
    last = list(vs.stream(image(), INSTRUCTION, max_new_tokens=MAX_NEW, lam=lam, stats=stats))[-1]
    assert vs.live.current == lam and [r.lam for r in stats.recomputes] == [lam]
    got = dict(vs.variants["merged"].model.named_parameters())
    want = dict(ref.named_parameters())
    assert got.keys() == want.keys()
    differ = [k for k in want if not torch.equal(got[k], want[k])]
    assert differ == []
    # and the answers: the app's merged column == a plain generate of the merged model on disk
    v = vs.variants["merged"]
    original = v.model
    v.model = ref
    try:
        plain, ids = vs.generate_plain("merged", image(), INSTRUCTION, max_new_tokens=MAX_NEW)
    finally:
        v.model = original
    assert last[vs.names.index("merged")] == plain and len(ids) > 0


def test_compare_mode_runs_the_merged_column_at_two_lambdas(vs, cli_merges):
    lo, hi = LAMS[0], LAMS[2]
    last = list(vs.stream(image(), INSTRUCTION, max_new_tokens=MAX_NEW, lam=lo, lam_b=hi))[-1]
    assert len(last) == len(vs.names) + 1
    expect = {}
    for lam in (lo, hi):
        v = vs.variants["merged"]
        original, v.model = v.model, load_model(cli_merges[lam])
        try:
            expect[lam] = vs.generate_plain("merged", image(), INSTRUCTION, max_new_tokens=MAX_NEW)[0]
        finally:
            v.model = original
    assert last[vs.names.index("merged")] == expect[lo] and last[-1] == expect[hi]
    assert expect[lo] != expect[hi]  # the two λ give different answers on the tiny trio
    # the other columns are untouched by λ
    assert last[0] == vs.generate_plain("vlm", image(), INSTRUCTION, max_new_tokens=MAX_NEW)[0]


def test_the_recipes_lambda_restores_the_loaded_weights(vs, trio_paths):
    vs.set_lambda(0.3)
    list(vs.stream(image(), INSTRUCTION, max_new_tokens=2))  # lam=None: the recipe's λ again
    assert vs.live.current == sources.DEMO_LAMBDA
    ref = load_model(trio_paths["merged"])
    got = dict(vs.variants["merged"].model.named_parameters())
    assert all(torch.equal(got[k], p) for k, p in ref.named_parameters())


def test_set_lambda_reports_time_and_memory(vs):
    s = vs.set_lambda(0.6)
    rec = vs.live.last
    assert s == rec.seconds > 0 and rec.lam == 0.6 and not rec.measured_peak
    merged_bytes = sum(t.rows * t.merged[:1].numel() * t.merged.element_size() for t in vs.live.targets)
    assert rec.traffic_bytes == 3 * merged_bytes
    assert 0 < rec.peak_extra_bytes <= max(t.merged.numel() * 4 * 3 for t in vs.live.targets)
    assert "λ recompute:" in rec.line() and "λ=0.6" in rec.line()


def test_requests_at_different_lambdas_take_turns(vs):
    live = vs.live
    order = []

    def second():
        with live.at(0.8):
            order.append(("b", live.current))

    with live.at(0.2):
        t = threading.Thread(target=second)  # must wait for the first request to finish with 0.2
        t.start()
        t.join(0.3)
        assert t.is_alive() and live.current == 0.2
        order.append(("a", live.current))
    t.join(5)
    assert order == [("a", 0.2), ("b", 0.8)]


def test_on_zerogpu_every_call_recomputes(trio_paths, monkeypatch):
    monkeypatch.setenv("SPACES_ZERO_GPU", "1")
    vs = load_variants({k: str(v) for k, v in trio_paths.items()}, device="cpu")
    assert not vs.live.persistent
    vs.live.forget()  # what the GPU function does first: the weights in this worker are not known
    with vs.live.at(sources.DEMO_LAMBDA) as recomputed:
        assert recomputed is not None and recomputed.lam == sources.DEMO_LAMBDA


def _variant_copy(src: Path, dst: Path, **recipe_changes) -> Path:
    shutil.copytree(src, dst)
    rec = yaml.safe_load((dst / RECIPE_FILE).read_text())
    rec.update(recipe_changes)
    (dst / RECIPE_FILE).write_text(yaml.safe_dump(rec))
    return dst


@pytest.mark.parametrize("change, reason", [
    (dict(method="ties"), "it was merged with ties, whose weights are precomputed"),
    (dict(training={"steps": 10}), "fine-tuned after merging (its recipe has a training record)"),
])
def test_slider_is_off_with_the_reason(trio_paths, tmp_path, change, reason):
    merged = _variant_copy(trio_paths["merged"], tmp_path / "m", **change)
    vs = load_variants({"vlm": str(trio_paths["vlm"]), "swapped": str(trio_paths["swapped"]), "merged": str(merged)},
                       device="cpu")
    assert not vs.live.enabled and reason in vs.live.reason
    with pytest.raises(AppError, match="λ cannot be changed: .*" + reason.split(" (")[0]):
        next(vs.stream(image(), INSTRUCTION, max_new_tokens=2, lam=0.2))
    assert len(list(vs.stream(image(), INSTRUCTION, max_new_tokens=2))[-1]) == 3  # the recipe's λ still runs


def test_slider_is_off_without_the_swapped_model_or_when_weights_do_not_reproduce(trio_paths, tmp_path):
    vs = load_variants({"vlm": str(trio_paths["vlm"]), "merged": str(trio_paths["merged"])}, device="cpu")
    assert "needs the base VLM and the coder-swapped model loaded (missing: swapped)" in vs.live.reason
    # a merged model whose weights were changed after merging: the load-time check catches it
    from safetensors.torch import load_file, save_file

    merged = _variant_copy(trio_paths["merged"], tmp_path / "m")
    w = load_file(merged / "model.safetensors")
    w["model.layers.1.mlp.down_proj.weight"][3, 5] += 1e-3
    save_file(w, merged / "model.safetensors", metadata={"format": "pt"})
    vs = load_variants({"vlm": str(trio_paths["vlm"]), "swapped": str(trio_paths["swapped"]), "merged": str(merged)},
                       device="cpu")
    assert "does not reproduce the merged model (model.layers.1.mlp.down_proj.weight rows" in vs.live.reason
    assert live_lambda({"vlm": vs.variants["vlm"]}).reason == "no merged variant is loaded"


def test_an_unreadable_recipe_turns_the_slider_off_not_the_app(trio_paths, tmp_path):
    merged = _variant_copy(trio_paths["merged"], tmp_path / "m")
    (merged / RECIPE_FILE).write_text("lambda: [unclosed\n")
    vs = load_variants({"vlm": str(trio_paths["vlm"]), "swapped": str(trio_paths["swapped"]), "merged": str(merged)},
                       device="cpu")
    assert vs.live.reason.startswith(f"its {RECIPE_FILE} cannot be read (")
    assert len(list(vs.stream(image(), INSTRUCTION, max_new_tokens=2))[-1]) == 3
