"""Design2Code's low-level metrics as its repo computes them (issue 15), on hand-made HTML pairs
with known outcomes: blocks found without OCR by re-colouring, matched, and scored for
Block-Match, Text, Position and Color."""
from __future__ import annotations

import os

import pytest

from viscodex.evaluation.d2c_blocks import as_page, block_scores, blocks_of, recolor, serialize, texts_with_color
from viscodex.evaluation.design2code import HtmlRenderer, browser_available

pytestmark = pytest.mark.skipif(not browser_available() and not os.environ.get("CI"),
                                reason="needs chromium + playwright (bash tests/setup_browser.sh)")

STYLE = "<style>body{margin:0;font:20px sans-serif} p{margin:0;position:absolute}</style>"


def page(*paras):
    """Absolutely placed paragraphs: (text, left px, top px, css colour)."""
    body = "".join(f'<p style="left:{x}px;top:{y}px;color:{c}">{t}</p>' for t, x, y, c in paras)
    return f"<html><head>{STYLE}</head><body>{body}</body></html>"


REF = page(("Hello world", 100, 100, "#000000"), ("Second block here", 100, 300, "#000000"))


@pytest.fixture  # one browser per test: a second sync Playwright cannot start while one runs
def render():
    with HtmlRenderer() as r:
        yield lambda doc: r.render(doc, width=1280, height=720)


def test_recolouring_gives_every_text_element_its_own_colour():
    root = recolor('<html><body><div>a<span style="color: red">b</span></div><em>c</em></body></html>', 0)
    # the span gets the next pool colour; <em> is not a text tag: it keeps the default black (no block)
    assert texts_with_color(root) == [("a", "#FAFAFA"), ("b", "#FAFAEA"), ("c", "#000000")]
    out = serialize(root)  # declarations appended as the benchmark's update_style appends them
    assert '<div style="background-color: rgba(255, 255, 255, 0.0) !important;  color: #FAFAFA !important; ' \
           'opacity: 1.0 !important">a' in out and '<em style="background-color: rgba(255, 255, 255, 0.0) !important">' in out
    assert as_page("just text") == "<html><body><p>just text</p></body></html>"


def test_identical_pages_score_one_and_blocks_have_boxes(render):
    ref = blocks_of(REF, render)
    assert [b["text"] for b in ref] == ["hello world", "second block here"]
    x, y, w, h = ref[0]["bbox"]
    assert x == pytest.approx(100 / 1280, abs=2 / 1280) and y == pytest.approx(100 / 720, abs=8 / 720)
    assert ref[0]["color"] == (0, 0, 0) or max(ref[0]["color"]) < 60  # antialiased black text
    assert block_scores(ref, ref) == {"block_match": 1.0, "text": 1.0, "position": 1.0, "color": 1.0}


def test_moved_recoloured_missing_and_garbage_blocks(render):
    ref = blocks_of(REF, render)
    moved = block_scores(blocks_of(page(("Hello world", 100, 172, "#000000"), ("Second block here", 100, 300, "#000000")),
                                   render), ref)
    assert moved["text"] == 1.0 and moved["color"] == 1.0 and moved["block_match"] == pytest.approx(1.0, abs=0.02)
    assert moved["position"] == pytest.approx(1 - 72 / 720 / 2, abs=0.01)  # one of two pairs shifted by 72 px of 720
    red = block_scores(blocks_of(page(("Hello world", 100, 100, "#FF0000"), ("Second block here", 100, 300, "#000000")),
                                 render), ref)
    assert red["text"] == 1.0 and red["position"] == 1.0 and 0.6 < red["color"] < 0.9  # one pair far in CIEDE2000
    half = block_scores(blocks_of(page(("Hello world", 100, 100, "#000000")), render), ref)
    a0, a1 = (b["bbox"][2] * b["bbox"][3] for b in ref)
    # matched area (the pair, counted on both sides) over all area (the unmatched reference block too)
    assert half["text"] == 1.0 and half["block_match"] == pytest.approx(2 * a0 / (2 * a0 + a1), abs=1e-6)
    assert block_scores(blocks_of(page(("qwzx plmk rty", 100, 100, "#000000")), render), ref) == \
        {"block_match": 0.0, "text": 0.0, "position": 0.0, "color": 0.0}
    assert block_scores([], ref)["block_match"] == 0.0


def test_clip_score_and_final_score_with_a_given_checkpoint(tmp_path):
    """--clip-model: the benchmark's fifth score from a CLIP checkpoint (here a tiny random one);
    identical pages give cosine 1 and final = 0.2 x (1 + 1 + 1 + 1 + 1)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from viscodex.evaluation import get_task
    from viscodex.evaluation.design2code import with_clip
    from viscodex.errors import EvalError

    cfg = CLIPConfig(text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                  "num_attention_heads": 2, "vocab_size": 100},
                     vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                    "num_attention_heads": 2, "image_size": 32, "patch_size": 8}, projection_dim=8)
    CLIPModel(cfg).save_pretrained(tmp_path / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path / "clip")
    [task] = with_clip([get_task("design2code")], str(tmp_path / "clip"))
    sample = task.load("sample", limit=1)[0]
    with task.scorer() as score:
        same = score(f"```html\n{sample.reference['html']}```", sample)
        other = score("<html><body><h1>Totally different</h1></body></html>", sample)
    assert same["d2c_clip"] == pytest.approx(1.0, abs=1e-5) and same["d2c_final"] == pytest.approx(1.0, abs=1e-5)
    assert other["d2c_block_match"] == 0.0 and other["d2c_final"] == pytest.approx(0.2 * other["d2c_clip"], abs=1e-6)
    assert "d2c_clip" not in get_task("design2code").cache_settings() and task.cache_settings()["clip"]
    assert "note" not in task.describe() and get_task("design2code").describe()["note"].startswith(
        "Design2Code's CLIP score (and its final score) skipped: no CLIP checkpoint; give --clip-model")
    with pytest.raises(EvalError, match="--clip-model .*: not a CLIP checkpoint"):
        with_clip([get_task("design2code")], str(tmp_path / "nothing"))[0].scorer().__enter__()
    with pytest.raises(EvalError, match="add --task design2code"):
        with_clip([get_task("mmcode")], str(tmp_path / "clip"))
