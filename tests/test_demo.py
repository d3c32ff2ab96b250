"""The embedded default: the tiny trio (untrained fast path and trained), the toy tasks' scoring, and
`viscodex demo --no-app --fast` end to end, with the paper's claims decided on several seeds.

The claims (toy.claims: paired bootstrap intervals against margins fixed there) were measured on
FAST seeds 0-9 (docs/demo.md has every interval and the skills' ranges). Asserted here, on seeds
0, 1 and 2 (the seeds these tests have trained since before this design), per seed:
  SKILL_FLOORS  the parents have the skills to merge and the merged model has both: the coder codes
                (0.92-1.00), the VLM grounds (0.55-0.85; chance 0.29), the merged model grounds
                (0.51-0.81), codes (0.48-0.96) and writes code for images zero-shot (0.31-0.67);
                each floor about the width of a 64-sample interval below the minimum of the ten
                seeds, the last one at chance;
  MUST_HOLD     both halves: the swap loses grounding (holds on all ten seeds), the merge adds the
                coder's skill and writes code for images zero-shot better than the VLM (hold on 9
                of 10, inconclusive on seed 4, whose VLM kept the base's coding: 0.93; on seeds 0-2
                their intervals start at +0.26 or higher against a +0.05 margin);
  NOT_REFUTED   held on some seeds, inconclusive on others: the merge keeps grounding (holds on 4
                of 10, never "does not hold") and writes code for images zero-shot better than
                coder-swapped (holds on 8, inconclusive on seed 1, does not hold on seed 7, which
                these tests do not run); asserted as "not shown false".
The fake merges are shown false: the VLM's coding and image -> code equal the VLM's on every sample
(a difference of exactly 0 cannot clear a +0.05 margin), the coder backbone's and the swapped
model's grounding lie 0.23-0.50 below the VLM's.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from viscodex.toy import world as tt
from viscodex.toy.models import TinyConfig, build_tokenizer, build_trio

# trains tiny models and runs the demo end to end: minutes on two cores
pytestmark = pytest.mark.slow

SEEDS = (0, 1, 2)
# (model, task, floor on its attribute accuracy): the skills the merge combines, and the merged
# model (lambda 0.7) doing both
SKILL_FLOORS = (("coder", "coding", 0.80), ("vlm", "grounding", 0.45), ("merged-lam0.7", "grounding", 0.42),
                ("merged-lam0.7", "coding", 0.40), ("merged-lam0.7", "image_code", 0.30))
MUST_HOLD = ("swapping the backbone loses visual grounding", "merging adds the coder's skill",
             "merged writes code for images zero-shot better than the base VLM")
NOT_REFUTED = ("merging keeps visual grounding (within 0.10 of the base VLM)",
               "merged writes code for images zero-shot better than coder-swapped")


def tensor_hashes(folder: Path) -> dict[str, str]:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        for k, t in load_file(f).items():
            out[k] = hashlib.sha256(t.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()
    assert out, f"no tensors in {folder}"
    return out


def trio_hashes(paths: dict[str, Path]) -> dict[str, dict[str, str]]:
    return {role: tensor_hashes(p) for role, p in paths.items()}


# ---------------------------------------------------------------- the untrained fast path (test fixtures)
def test_untrained_build_is_deterministic(trio, tmp_path):
    same = build_trio(tmp_path / "a", TinyConfig(seed=0))
    other = build_trio(tmp_path / "b", TinyConfig(seed=1))
    h0, h_same, h_other = trio_hashes(trio), trio_hashes(same), trio_hashes(other)
    assert h_same == h0
    for role in ("base", "coder", "vlm"):
        assert h_other[role].keys() == h0[role].keys()
        differ = [k for k in h0[role] if h0[role][k] != h_other[role][k]]
        assert len(differ) > len(h0[role]) // 2, role
    for name in ("tokenizer.json", "chat_template.jinja", "preprocessor_config.json"):
        if (trio["vlm"] / name).exists():
            assert (trio["vlm"] / name).read_bytes() == (same["vlm"] / name).read_bytes(), name


def test_tokenizer_on_disk_tokenises_like_the_one_built(tmp_path):
    """transformers re-creates Qwen2's pre-tokeniser on load: the built tokenizer must already use it,
    or a model trained with it would read different ids after save/load (digits, here)."""
    from transformers import AutoTokenizer

    tok = build_tokenizer(TinyConfig())
    tok.save_pretrained(tmp_path)
    back = AutoTokenizer.from_pretrained(tmp_path)
    texts = [s.svg() for s in tt.all_scenes()] + [tt.CODING.prompt(s) for s in tt.all_scenes()[:5]]
    for t in texts:
        assert tok(t)["input_ids"] == back(t)["input_ids"], t
    digits = tok.convert_ids_to_tokens(tok('r="24"')["input_ids"])
    assert "2" in digits and "4" in digits  # Qwen2 splits numbers into single digits
    for special in ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"):
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1, special


def test_processor_expands_an_image_to_four_tokens(trio):
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(trio["vlm"])
    s = tt.make_samples(tt.GROUNDING, tt.all_scenes(), 1, 0)[0]
    text = proc.apply_chat_template(tt.GROUNDING.messages(s), tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    b = proc(text=[text], images=[s.image], return_tensors="pt")
    pad = proc.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((b["input_ids"] == pad).sum()) == 4
    assert b["image_grid_thw"].tolist() == [[1, 4, 4]]


# ---------------------------------------------------------------- toy tasks
def test_canonical_svg_reads_back_as_its_scene():
    for s in tt.all_scenes():
        assert tt.read_svg(s.svg()) == s.attrs, s.svg()
        assert tt.read_description(s.description()) == s.attrs
        for task in tt.TASKS.values():
            sample = tt.Sample(s, None, task.target(s))
            assert task.score(sample.target, sample) == {"attr_acc": 1.0, "exact": 1.0, "valid": 1.0,
                                                         "size": 1.0, "color": 1.0, "shape": 1.0}


@pytest.mark.parametrize("output, expect", [
    ('<svg><circle fill="red" cx="32" cy="32" r="24"/></svg>', {"size": 0.0, "color": 1.0, "shape": 1.0}),
    ('<svg><rect fill="blue" x="22" y="22" width="20" height="20"/></svg>', {"size": 1.0, "color": 0.0, "shape": 0.0}),
    ('<svg><rect fill="red" x="0" y="0" width="20" height="10"/></svg>', {"size": 1.0, "color": 1.0, "shape": 0.0}),
    ('<svg><circle fill="red" r="10"></svg>', None),  # not well-formed: nothing is drawn
    # the colour as CSS (the canonical form): a style declaration wins over the presentation attribute
    ('<svg><circle style="fill: red" cx="32" cy="32" r="10"/></svg>', {"size": 1.0, "color": 1.0, "shape": 1.0}),
    ('<svg><circle fill="red" style="stroke: blue; fill: green" r="10"/></svg>', {"size": 1.0, "color": 0.0, "shape": 1.0}),
    ('<svg><circle fill="red" style="stroke: blue" r="10"/></svg>', {"size": 1.0, "color": 1.0, "shape": 1.0}),
    ('<svg><circle style="fill: red; fill: blue" r="10"/></svg>', {"size": 1.0, "color": 0.0, "shape": 1.0}),
    # malformed declarations are dropped, as a browser drops them: no colour is read from them
    ('<svg><circle style=";;fill;:red" r="10"/></svg>', {"size": 1.0, "color": 0.0, "shape": 1.0}),
    # !important: an earlier important declaration beats a later plain one, as in a browser
    ('<svg><circle style="fill: red !important; fill: blue; fill" r="10"/></svg>', {"size": 1.0, "color": 1.0, "shape": 1.0}),
    ('<svg><circle style="fill: blue !important; fill: red" r="10"/></svg>', {"size": 1.0, "color": 0.0, "shape": 1.0}),
    ('<svg><circle style="' + "fill: blue;" * 20000 + 'fill: red" r="10"/></svg>', {"size": 1.0, "color": 1.0, "shape": 1.0}),
    ("a small red circle", None),  # no SVG at all
    ('<svg><script>alert(1)</script></svg>', {"size": 0.0, "color": 0.0, "shape": 0.0}),
])
def test_svg_scoring_checks_what_is_drawn(output, expect):
    sample = tt.Sample(tt.Scene("red", "circle", "small"))
    sc = tt.IMAGE_CODE.score(output, sample)
    if expect is None:
        assert sc["valid"] == 0.0 and sc["attr_acc"] == 0.0
    else:
        assert sc["valid"] == 1.0
        assert {k: sc[k] for k in expect} == expect
        assert sc["attr_acc"] == pytest.approx(sum(expect.values()) / 3)


def test_svg_colour_is_the_captions_colour_token(trio):
    """The canonical SVG writes its colour as CSS so that the value is the very token of the
    caption's colour word: a backbone that reads the colour from an image produces that token
    (docs/demo.md, "Design notes"). With `fill="red"` it is another token."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(trio["base"])
    for colour in tt.COLORS:
        s = tt.Scene(colour, "circle", "small")
        word = tok(" " + colour, add_special_tokens=False)["input_ids"]
        ids = tok(s.code(), add_special_tokens=False)["input_ids"]
        hits = [i for i in range(len(ids)) if ids[i:i + len(word)] == word]
        assert len(hits) == 2, (colour, tok.convert_ids_to_tokens(ids))  # the caption's and the style's
        old = tok(f'{s.description()}: <svg><circle fill="{colour}"', add_special_tokens=False)["input_ids"]
        assert sum(old[i:i + len(word)] == word for i in range(len(old))) == 1


def test_star_and_triangle_codes_differ_from_their_first_point():
    for size in tt.SIZES:
        star, tri = (tt.Scene("red", sh, size).svg() for sh in ("star", "triangle"))
        assert star.split('points="')[1][:3] != tri.split('points="')[1][:3]


def test_grounding_scoring_reads_words():
    sample = tt.Sample(tt.Scene("white", "star", "large"))
    assert tt.GROUNDING.score("a large white star", sample)["exact"] == 1.0
    sc = tt.GROUNDING.score("a small white triangle", sample)
    assert (sc["size"], sc["color"], sc["shape"], sc["exact"]) == (0.0, 1.0, 0.0, 0.0)
    assert tt.GROUNDING.score("", sample)["attr_acc"] == 0.0


def test_samples_are_seeded_and_images_differ_by_scene():
    a = tt.make_samples(tt.IMAGE_CODE, tt.all_scenes(), 10, 3)
    b = tt.make_samples(tt.IMAGE_CODE, tt.all_scenes(), 10, 3)
    c = tt.make_samples(tt.IMAGE_CODE, tt.all_scenes(), 10, 4)
    assert [s.scene for s in a] == [s.scene for s in b]
    assert all(x.image.tobytes() == y.image.tobytes() for x, y in zip(a, b))
    assert [s.scene for s in a] != [s.scene for s in c]
    rng = random.Random(0)
    red, blue = (tt.render(tt.Scene(col, "square", "large"), 56, rng) for col in ("red", "blue"))
    assert red.getpixel((28, 28)) == tt.RGB["red"] and blue.getpixel((28, 28)) == tt.RGB["blue"]


def test_pretraining_corpus_has_a_little_coding():
    docs = tt.pretraining_docs(0, 600)
    code = [d for d in docs if isinstance(d, tuple) and d[0].startswith("Write SVG for:")]
    assert 0 < len(code) <= len(docs) // 20


def test_pretraining_svg_is_captioned_with_what_it_draws():
    """Raw SVG in the base's corpus comes after the words it draws (what lets the coder's skill
    survive the merge, docs/demo.md): the caption and the drawing agree on every document."""
    raw = [d for d in tt.pretraining_docs(0, 600) if isinstance(d, str) and "<svg>" in d]
    assert len(raw) == 100 - 4  # one document in six, less the 4 of those 100 that are the coding task (1 in 50)
    lines = [line for doc in raw for line in doc.split("\n")]
    assert len(lines) == len(raw) * tt.CAPTIONED_PER_DOC == len(raw) * 3
    assert len({line for line in lines}) > 40  # the lines of a document are drawn apart
    for line in lines:
        caption, svg = line.split(": ", 1)
        assert tt.read_svg(svg) == tt.read_description(caption), line
        assert caption == tt.Scene(**{k: v for k, v in tt.read_svg(svg).items()}).description()


# ---------------------------------------------------------------- the trained trio
MICRO = {"model": TinyConfig(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1,
                              vision_hidden_size=16),
         "batch_size": 4, "pretrain_steps": 6, "coder_steps": 4, "vlm_steps": 4}


def test_trained_trio_is_deterministic(tmp_path):
    from transformers import AutoModelForCausalLM, Qwen2_5_VLForConditionalGeneration

    from viscodex.toy.demo import DemoConfig, train_trio

    cfg = DemoConfig(seed=0, **MICRO)
    a = train_trio(tmp_path / "a", demo=cfg)
    b = train_trio(tmp_path / "b", demo=cfg)
    c = train_trio(tmp_path / "c", demo=dataclasses.replace(cfg, seed=1))
    ha, hb, hc = trio_hashes(a), trio_hashes(b), trio_hashes(c)
    assert ha == hb
    assert all(ha[r] != hc[r] for r in ha)
    untrained = trio_hashes(build_trio(tmp_path / "u", cfg.tiny()))
    assert ha["base"] != untrained["base"]  # training moved the weights
    assert ha["coder"] != ha["base"]
    rec = json.loads((tmp_path / "a" / "trio.json").read_text())
    assert rec["base"]["steps"] == 6 and rec["coder"]["steps"] == 4 and rec["vlm"]["steps"] == 4
    assert rec["key"] == cfg.trio_key()
    AutoModelForCausalLM.from_pretrained(a["coder"])
    Qwen2_5_VLForConditionalGeneration.from_pretrained(a["vlm"])


def test_vlm_replay_keeps_a_quarter_of_the_coding_turns():
    """The VLM's replay is the base corpus's chat turns with 1 coding turn in 4 (vlm_replay_coding):
    as many turns as the coder's replay, fewer of them coding (docs/demo.md, "Design notes")."""
    from viscodex.toy.demo import FAST, _replay

    class Raw:  # each turn's prompt instead of its token ids
        encode = staticmethod(lambda sample: sample.messages[0]["content"][0]["text"])

    assert FAST.vlm_replay_coding == 0.25
    coding = lambda turns: [t for t in turns if t.startswith(tt.CODE_PROMPT)]
    full = _replay(Raw, FAST, "vlm-0", 2048)
    fewer = _replay(Raw, FAST, "vlm-0", 2048, FAST.vlm_replay_coding)
    assert len(full) == len(fewer) == 2048 // 3
    assert len(coding(full)) == 20 and len(coding(fewer)) == 5
    assert coding(fewer) == coding(full)[3::4][:5]  # every fourth, in the corpus's order
    assert [t for t in fewer if t not in coding(fewer)][:100] == [t for t in full if t not in coding(full)][:100]
    assert coding(_replay(Raw, FAST, "vlm-0", 2048, 0.0)) == []


def test_config_keys():
    from viscodex.toy.demo import FAST, FULL

    assert FULL.trio_key() != FAST.trio_key()
    assert FULL.trio_key() != dataclasses.replace(FULL, seed=1).trio_key()
    # evaluation settings do not invalidate the cached trio, but do name another demo folder
    changed = dataclasses.replace(FULL, eval_samples=8, lam=0.5)
    assert changed.trio_key() == FULL.trio_key() and changed.key() != FULL.key()
    # another thread count trains other bytes (CPU kernels sum in another order): cached apart
    assert dataclasses.replace(FULL, threads=2).trio_key() != FULL.trio_key()
    assert FULL.threads == FAST.threads == 1


def test_training_logs_progress_with_an_eta(caplog, tmp_path):
    """Every training run of the trio says how far it is and how long is left."""
    import logging
    import re

    from viscodex.toy.demo import DemoConfig, train_trio

    with caplog.at_level(logging.INFO, logger="viscodex.training.examples"):
        train_trio(tmp_path, demo=DemoConfig(seed=0, **MICRO))
    lines = [r.getMessage() for r in caplog.records]
    for name, total in (("base", 6), ("coder", 4), ("vlm", 4)):
        assert any(re.search(rf"{name}\s+\d+/{total} steps \(\s*\d+%\).* ETA \d+ s", m) for m in lines), (name, lines)



# ---------------------------------------------------------------- `viscodex demo` end to end
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from viscodex.cli import app

    root = tmp_path_factory.mktemp("demo")
    env = {"VISCODEX_CACHE": str(root / "cache")}
    # the README's main command, with an output folder and a cache of the test's own
    res = CliRunner().invoke(app, ["demo", "--no-app", "--fast", "--out", str(root / "out")], env=env)
    return root, env, res


@pytest.mark.slow
def test_demo_no_app_end_to_end(demo_run):
    root, _, res = demo_run
    assert res.exit_code == 0, res.output
    out = root / "out"
    assert "| coder-swapped |" in res.output and "## The paper's claims at toy scale" in res.output
    assert "difference [95 % interval]" in res.output and "**holds**" in res.output  # the verdict table
    for f in ("results.json", "results.md", "accuracy_vs_lambda.png"):
        assert (out / f).is_file(), f
    assert (out / "accuracy_vs_lambda.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = json.loads((out / "results.json").read_text())
    assert set(r["scores"]) >= {"base", "coder", "vlm", "swapped", "merged-lam0", "merged-lam0.7", "merged-lam1"}
    assert set(r["scores"]["coder"]) == {"coding"}  # text-only models get text tasks only
    # lambda 1 keeps the VLM's backbone and lambda 0 the coder's: same answers as the endpoints
    assert r["scores"]["merged-lam1"]["grounding"]["attr_acc"] == r["scores"]["vlm"]["grounding"]["attr_acc"]
    assert r["scores"]["merged-lam0"]["coding"]["attr_acc"] == r["scores"]["coder"]["coding"]["attr_acc"]
    cache = list((root / "cache").glob("trio-*"))
    assert len(cache) == 1 and (cache[0] / "trio.json").is_file()
    assert not list(root.glob(".out.viscodex-tmp-*")) and not list((root / "cache").glob(".trio-*"))


def _fast_results(seed: int, cache: Path, out: Path) -> dict:
    from viscodex.toy.demo import FAST, run_demo

    return run_demo(out, dataclasses.replace(FAST, seed=seed), cache=cache)


@pytest.fixture(scope="module")
def seed_results(demo_run, tmp_path_factory):
    """FAST results for every seed of SEEDS (seed 0 from the CLI run), trios cached like the CLI's."""
    root, env, res = demo_run
    assert res.exit_code == 0, res.output
    out = {0: json.loads((root / "out" / "results.json").read_text())}
    for seed in SEEDS[1:]:
        out[seed] = _fast_results(seed, Path(env["VISCODEX_CACHE"]), tmp_path_factory.mktemp(f"demo-seed{seed}"))
    return out


def verdicts(results: dict) -> dict[str, str]:
    from viscodex.toy.claims import decide, paper_claims
    from viscodex.toy.report import lam_dir, model_names

    lam = results["config"]["lam"]
    return {c["claim"]: c["verdict"] for c in decide(results, paper_claims(lam_dir(lam)), model_names(lam))}


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_demo_trio_has_both_skills_on_fast(seed_results, seed):
    """The coder clearly codes and the VLM clearly grounds, far above chance, on every seed (a merge
    can only inherit skills its parents have), and the merged model grounds, codes and writes code
    for images."""
    scores = seed_results[seed]["scores"]
    assert seed_results[seed]["chance"] == pytest.approx(0.29, abs=0.005)
    for model, task, floor in SKILL_FLOORS:
        assert scores[model][task]["attr_acc"] >= floor, (seed, model, task, scores[model][task]["attr_acc"])


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_demo_both_halves_hold_on_fast(seed_results, seed):
    """Grounding kept by the merge and lost by the swap, and the coder's skill added: on every seed
    tried (docs/demo.md has the measured intervals)."""
    r = seed_results[seed]
    got = verdicts(r)
    assert [c["verdict"] for c in r["claims"]] == list(got.values())  # what the table printed
    for claim in MUST_HOLD:
        assert got[claim] == "holds", (claim, [c for c in r["claims"] if c["claim"] == claim])
    for claim in NOT_REFUTED:
        assert got[claim] != "does not hold", (claim, [c for c in r["claims"] if c["claim"] == claim])


@pytest.mark.slow
@pytest.mark.parametrize("fake", ["vlm", "coder", "swapped"])
def test_demo_claims_reject_fake_merges(seed_results, fake):
    """The merged model's scores replaced by the VLM's, by the coder backbone's (lambda 0) or by the
    coder-swapped model's: at least one claim that the real merge passes no longer holds."""
    from viscodex.toy.report import lam_dir

    for seed, r in seed_results.items():
        r = json.loads(json.dumps(r))
        m = lam_dir(r["config"]["lam"])
        r["scores"][m] = r["scores"][{"vlm": "vlm", "coder": "merged-lam0", "swapped": "swapped"}[fake]]
        got = verdicts(r)
        caught = [c for c in MUST_HOLD if got[c] != "holds"] + [c for c in NOT_REFUTED if got[c] == "does not hold"]
        assert caught, (seed, fake, got)


@pytest.mark.slow
def test_demo_variants_are_real_models_with_provenance(demo_run):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from viscodex.engine.recipe import Recipe

    root, _, res = demo_run
    assert res.exit_code == 0, res.output
    out = root / "out"
    for name in ("vlm", "swapped", "merged"):
        m = Qwen2_5_VLForConditionalGeneration.from_pretrained(out / "sft" / name)
        assert all(p.dtype == torch.float32 for p in m.parameters())
    r = Recipe.load(out / "sft" / "merged")
    assert r.lam == 0.7 and r.variant == "merged"
    t = r.records["training"]  # run_train's record (the demo's SFT is `viscodex train`'s)
    assert t["frozen"]["modules"] == ["visual (vision encoder and projector)"]
    cats = t["data"]["categories"]
    sft = json.loads((out / "results.json").read_text())["config"]["sft_samples"]
    assert cats["image_code"] == sft and cats["grounding"] > 0  # grounding mixed in
    assert Recipe.load(out / "sft" / "swapped").variant == "swapped"
    # the vision tower and projector are untouched by the SFT (frozen)
    vis = lambda d: {k: v for k, v in tensor_hashes(d).items() if k.startswith(("visual.", "model.visual."))}
    assert vis(out / "sft" / "merged") == vis(out / "variants" / "merged-lam0.7")
    assert vis(out / "sft" / "merged")


@pytest.mark.slow
def test_demo_reuses_its_results_and_refuses_foreign_folders(demo_run, tmp_path):
    from viscodex.cli import app

    root, env, res = demo_run
    assert res.exit_code == 0, res.output
    before = (root / "out" / "results.json").stat().st_mtime_ns
    again = CliRunner().invoke(app, ["demo", "--no-app", "--fast", "--out", str(root / "out")], env=env)
    assert again.exit_code == 0, again.output
    assert (root / "out" / "results.md").read_text() in again.output
    assert (root / "out" / "results.json").stat().st_mtime_ns == before  # reused, not recomputed
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "mine.txt").write_text("keep me")
    bad = CliRunner().invoke(app, ["demo", "--no-app", "--fast", "--out", str(tmp_path / "x")], env=env)
    assert bad.exit_code == 2 and "not a demo folder" in bad.output
    assert (tmp_path / "x" / "mine.txt").read_text() == "keep me"
    other = CliRunner().invoke(app, ["demo", "--no-app", "--fast", "--seed", "5", "--out", str(root / "out")], env=env)
    assert other.exit_code == 2 and "another configuration" in other.output


def test_demo_command_opens_the_app_on_the_three_fine_tuned_folders(monkeypatch, tmp_path):
    """`viscodex demo` (app on) serves the SFT'd variants, passed as arguments (no environment edits)."""
    import os

    from typer.testing import CliRunner

    import viscodex.toy.demo as demo
    from viscodex.app import ui
    from viscodex.cli import app

    (tmp_path / "results.md").write_text("table\n")
    monkeypatch.setattr(demo, "run_demo", lambda out, cfg, force, threads: {"out": str(tmp_path)})
    seen = {}
    monkeypatch.setattr(ui, "run_app", lambda variants, port, host: seen.update(variants=variants, port=port, host=host))
    env = dict(os.environ)
    r = CliRunner().invoke(app, ["demo", "--fast", "--port", "7999", "--host", "0.0.0.0"])
    assert r.exit_code == 0, r.output
    assert seen == {"variants": {k: tmp_path / "sft" / k for k in ("vlm", "swapped", "merged")}, "port": 7999,
                    "host": "0.0.0.0"}
    assert dict(os.environ) == env


def test_run_app_refuses_unknown_variants():
    from viscodex.app.ui import run_app
    from viscodex.errors import ViscodexError

    with pytest.raises(ViscodexError, match=r"unknown variant\(s\) \['coder'\]: expected some of \['vlm', 'swapped', 'merged'\]"):
        run_app({"coder": "x"})


@pytest.mark.slow
def test_demo_without_no_app_serves_the_fine_tuned_variants(demo_run, tmp_path):
    """`viscodex demo --fast` (no --no-app) reuses its results, then serves the app on the three
    fine-tuned folders: the page lists them, and a request streams three answers."""
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx
    from gradio_client import Client, handle_file

    from viscodex.app.assets import ASSETS_DIR
    from viscodex.app.tasks import TASKS

    root, env, res = demo_run
    assert res.exit_code == 0, res.output
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    log = tmp_path / "demo.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "viscodex", "demo", "--fast", "--out", str(root / "out"), "--port", str(port)],
            env={**os.environ, **env, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
                 "VISCODEX_CACHE_EXAMPLES": "off", "VISCODEX_MAX_NEW_TOKENS": "16"},
            cwd=tmp_path, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the app did not answer in 300 s:\n" + log.read_text()[-3000:]
            try:
                config = httpx.get(url + "config", timeout=5).json()
                break
            except httpx.HTTPError:
                time.sleep(1)
        shown = json.dumps(config)
        for name in ("vlm", "swapped", "merged"):
            assert str(root / "out" / "sft" / name) in shown, name
        assert "| coder-swapped |" in log.read_text()  # the table came first
        task = "HTML page"
        final = Client(url, verbose=False).submit(
            image=handle_file(str(ASSETS_DIR / "landing_page.png")), task=task, instruction=TASKS[task].instruction,
            max_new_tokens=16, temperature=0.0, max_pixels=200_000, api_name="/run").result(timeout=120)
        assert all(code.strip() for code in final[:3]), final
    finally:
        proc.terminate()
        proc.wait(timeout=30)
