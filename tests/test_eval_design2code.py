"""Design2Code's metrics as its repo computes them (issue 15): the generated page pre-processed
(repetition cut, truncation of elements repeated more than 50 times) with BeautifulSoup, blocks
found without OCR by re-colouring, matched, and scored for Block-Match, Text, Position and Color
(colormath's CIEDE2000); CLIP on Telea-inpainted pages prepared as the clip package prepares them;
card names only for numbers computed that way on the benchmark's data."""
from __future__ import annotations

import difflib
import io

import numpy as np
import pytest
from PIL import Image

from viscodex.evaluation import d2c_html, get_task
from viscodex.evaluation.cie import color_similarity
from viscodex.evaluation.d2c_blocks import block_scores, merge_same_box, page_blocks
from viscodex.evaluation.d2c_clip import clip_pixels, inpaint_boxes, masked_square
from viscodex.evaluation.design2code import HtmlRenderer, benchmark_scores
from viscodex.evaluation.records import card_entries
from markers import needs_browser


STYLE = "<style>body{margin:0;font:20px sans-serif} p{margin:0;position:absolute}</style>"


def page(*paras):
    """Absolutely placed paragraphs: (text, left px, top px, css colour)."""
    body = "".join(f'<p style="left:{x}px;top:{y}px;color:{c}">{t}</p>' for t, x, y, c in paras)
    return f"<html><head>{STYLE}</head><body>{body}</body></html>"


REF = page(("Hello world", 100, 100, "#000000"), ("Second block here", 100, 300, "#000000"))


# ---------------------------------------------------------------- HTML handling (no browser)
def test_generated_pages_are_preprocessed_as_the_benchmark_does():
    unique, rep = "0123456789" * 10, "abcdefghij" * 10  # 100-character chunks: one, then six alike
    doc = "<html><body><p>" + unique + rep * 6 + "</p></body></html>"
    # the fifth alike chunk closes the group: the page is cut where its first member starts
    assert d2c_html.drop_repetition(doc) == doc[:len("<html><body><p>") + 100]
    assert d2c_html.preprocess(doc) == f"<html><body><p>{unique}</p></body></html>"  # BeautifulSoup closes the tags
    assert d2c_html.drop_repetition(doc.replace(rep * 6, rep * 4)) == doc.replace(rep * 6, rep * 4)  # four: kept
    # an element seen 50 times already is dropped with its subtree; the children it took are not counted
    items = "".join("<li><a>x</a></li>" for _ in range(53))
    out = d2c_html.truncate_repeats(f"<html><body><ul>{items}</ul><i>end</i></body></html>")
    assert out.count("<li>") == 50 and out.count("<a>") == 50 and out.endswith("<i>end</i></body></html>")
    fifty = "<li><a>x</a></li>" * 50
    assert d2c_html.truncate_repeats(fifty) == fifty  # exactly 50: all kept
    assert d2c_html.as_page("just text") == "<html><body><p>just text</p></body></html>"
    assert d2c_html.preprocess("I am not sure.") == "<html><body><p>I am not sure.</p></body></html>"


def test_recolouring_gives_every_text_element_its_own_colour():
    out = d2c_html.recolor('<html><body><div>a<span style="color: red">b</span></div><em>c</em>'
                           '<!-- note --><p style="color: rgb(1, 2, 3)">d</p></body></html>', 0)
    # styles appended as the benchmark's update_style appends them (its double space included)
    assert '<div style="background-color: rgba(255, 255, 255, 0.0) !important;  color: #FAFAFA !important; ' \
           'opacity: 1.0 !important">a' in out and '<em style="background-color: rgba(255, 255, 255, 0.0) !important">c' in out
    # <em> is not a text tag: it inherits the body's default black; the comment is no text
    assert d2c_html.texts_with_color(out) == [("a", "#FAFAFA"), ("b", "#FAFAEA"), ("c", "#000000"), ("d", "#FAFADA")]
    assert d2c_html.texts_with_color('<body><p style="color: red">x</p><b style="color: rgb(1, 2, 3)">y</b>'
                                     '<i style="color: #fff">z</i></body>') == [("x", "#ff0000"), ("y", "#010203"), ("z", "#fff")]
    assert d2c_html.color_pool(50)[-1] == "2C2C2C" and len(d2c_html.color_pool(0)) == 4096  # (250 + 50) % 256 = 44


# ---------------------------------------------------------------- scores on hand-made blocks (no browser)
def blk(text, x, y, color=(0, 0, 0), w=0.1, h=0.02):
    return {"text": text, "bbox": (x, y, w, h), "color": color}


def test_block_scores_follow_the_benchmarks_formulas():
    ref = [blk("hello world", 0.1, 0.1), blk("second block here", 0.1, 0.4)]
    same, _ = block_scores([dict(b) for b in ref], ref)
    assert same == {"block_match": 1.0, "text": 1.0, "position": 1.0, "color": 1.0}
    # text changed: Text is the mean difflib ratio of the pairs
    changed, _ = block_scores([blk("hello there", 0.1, 0.1), blk("second block here", 0.1, 0.4)], ref)
    r = difflib.SequenceMatcher(None, "hello there", "hello world").ratio()
    assert changed["text"] == pytest.approx((r + 1) / 2, abs=1e-12) and changed["position"] == 1.0
    # a block moved by 0.05 down and 0.02 right: 1 - max(|dx|, |dy|) for that pair
    moved, _ = block_scores([blk("hello world", 0.12, 0.15), blk("second block here", 0.1, 0.4)], ref)
    assert moved["position"] == pytest.approx((1 - 0.05 + 1) / 2, abs=1e-12) and moved["text"] == 1.0
    # red text for black: colormath's CIEDE2000 (ΔE 50.41 -> 0.4959013577439226 measured with colormath 3.0.0)
    red, _ = block_scores([blk("hello world", 0.1, 0.1, (255, 0, 0)), blk("second block here", 0.1, 0.4)], ref)
    assert red["color"] == pytest.approx((0.49590135774392263 + 1) / 2, abs=1e-12)
    # a missing block: the matched area (counted on both sides) over all area
    half, _ = block_scores([blk("hello world", 0.1, 0.1, w=0.2)], ref)
    assert half["block_match"] == pytest.approx(2 * 0.1 * 0.02 * 1.5 / (2 * 0.1 * 0.02 * 1.5 + 0.002), abs=1e-12)
    assert block_scores([blk("qwzx plmk", 0.1, 0.1)], ref)[0] == {"block_match": 0.0, "text": 0.0, "position": 0.0, "color": 0.0}
    assert block_scores([], ref) == ({"block_match": 0.0, "text": 0.0, "position": 0.0, "color": 0.0}, [])
    # two generated blocks that together are one reference block are merged (and masked merged for CLIP)
    split, masked = block_scores([blk("second block", 0.1, 0.4, w=0.06), blk("here", 0.17, 0.4, w=0.03)],
                                 [blk("second block here", 0.1, 0.4)])
    assert split["text"] == 1.0 and [b["text"] for b in masked] == ["second block here"]
    assert masked[0]["bbox"] == pytest.approx((0.1, 0.4, 0.1, 0.02))
    assert merge_same_box([blk("a", 0, 0, (10, 20, 30)), blk("b", 0, 0, (20, 20, 20))]) == \
        [{"text": "a b", "bbox": (0, 0, 0.1, 0.02), "color": (15.0, 20.0, 25.0)}]


def test_colour_similarity_is_colormaths():
    # reference values from colormath 3.0.0: max(0, 1 - delta_e_cie2000(convert_color(sRGBColor(..., is_upscaled=True), LabColor)) / 100)
    assert color_similarity((0, 0, 255), (128, 0, 128)) == pytest.approx(0.8015870310250569, abs=1e-12)
    assert color_similarity((40, 40, 40), (0, 0, 0)) == pytest.approx(0.9008708950731508, abs=1e-12)
    assert color_similarity((0, 0, 0), (255, 255, 255)) == pytest.approx(1.509796425658294e-07, abs=1e-12)
    assert color_similarity((10, 20, 30), (10, 20, 30)) == 1.0


# ---------------------------------------------------------------- CLIP inputs (no browser)
def test_clip_masks_text_boxes_with_telea_inpainting():
    import cv2

    shot = np.full((60, 80, 3), 240, dtype=np.uint8)
    shot[:, 40:] = (20, 90, 200)
    shot[20:30, 10:70] = 0  # "text" across both halves
    boxes = [(10 / 80, 20 / 60, 60 / 80, 10 / 60)]
    mask = np.zeros((60, 80), dtype=np.uint8)
    mask[20:30, 10:70] = 255
    direct = cv2.cvtColor(cv2.inpaint(cv2.cvtColor(shot, cv2.COLOR_RGB2BGR), mask, 3, cv2.INPAINT_TELEA), cv2.COLOR_BGR2RGB)
    got = inpaint_boxes(shot, boxes)
    assert np.array_equal(got, direct) and got[25, 20].min() > 200 and tuple(got[25, 60]) != (0, 0, 0)
    assert np.array_equal(inpaint_boxes(shot, []), shot)
    square = masked_square(shot, [{"bbox": boxes[0]}])
    assert square.size == (60, 60) and np.array_equal(np.asarray(square), np.asarray(Image.fromarray(direct).resize((60, 60), Image.LANCZOS)))


def test_clip_preprocessing_is_the_clip_packages():
    """The clip package's ViT-B/32 transform, built from torchvision as clip._transform builds it."""
    tv = pytest.importorskip("torchvision.transforms")
    clip_t = tv.Compose([tv.Resize(224, interpolation=tv.InterpolationMode.BICUBIC), tv.CenterCrop(224),
                         lambda im: im.convert("RGB"), tv.ToTensor(),
                         tv.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])
    rng = np.random.default_rng(0)
    for shape in ((720, 720), (300, 500), (100, 100)):
        img = Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
        assert np.array_equal(clip_pixels(img), clip_t(img).numpy())


# ---------------------------------------------------------------- the card (no browser)
def d2c_report(**kw):
    task = get_task("design2code")
    rep = {**task.describe(), "source": "hub", "source_kind": "hub", "n": 484, "limit": None, "score": 0.4,
           "metrics": {"score": 0.4, "d2c_block_match": 0.8, "d2c_text": 0.9, "d2c_position": 0.7, "d2c_color": 0.6,
                       "d2c_clip": 0.85, "d2c_final": 0.77},
           "samples": [{"id": str(i), "scores": {"score": 0.4, "d2c_block_match": 0.8}} for i in range(484)]}
    return {**rep, **kw}


def test_card_names_design2code_metrics_officially_only_when_computed_so():
    names = {"d2c_block_match": "Block-Match", "d2c_text": "Text", "d2c_position": "Position", "d2c_color": "Color"}
    assert get_task("design2code").official_metrics() == names
    e = card_entries(d2c_report())
    assert [x["metric_type"] for x in e] == ["viscodex/design2code/design_similarity", "Block-Match", "Text", "Position", "Color"]
    assert all(x["dataset_type"] == "SALT-NLP/Design2Code-hf" and x["dataset_split"] == "train" for x in e)
    assert e[1]["metric_value"] == 80.0 and e[1]["viscodex"]["samples"] == 484 and e[1]["viscodex"]["official_metric"]
    assert e[0]["metric_name"].endswith("(viscodex's own metric, not the benchmark's)")
    cut = card_entries(d2c_report(limit=20, n=20))
    assert {x["dataset_split"] for x in cut} == {"train[:20]"} and cut[1]["dataset_name"] == "Design2Code (first 20 samples of train)"
    # the tiny sample: nothing under an official name
    assert [x["metric_type"] for x in card_entries(d2c_report(source="sample", source_kind="sample"))] == \
        ["viscodex/design2code/design_similarity"]
    # CLIP only with OpenAI's ViT-B/32 named as such; no placeholder image: none official
    task = get_task("design2code")
    task.clip_model = "openai/clip-vit-base-patch32"
    assert task.official_metrics()["d2c_clip"] == "CLIP"
    task.clip_model = "./my-clip"
    assert "d2c_clip" not in task.official_metrics()
    task.missing_placeholder = True
    assert task.official_metrics() == {} and "rick.jpg" in task.describe()["note"]
    mm = card_entries({**get_task("mmcode").describe(), "source": "hub", "source_kind": "hub", "n": 5, "score": 0.2,
                       "metrics": {"score": 0.2}})
    assert [x["metric_type"] for x in mm] == ["pass@1"]  # other tasks: one entry, as before


# ---------------------------------------------------------------- rendered pages
@pytest.fixture  # one browser per test: a second sync Playwright cannot start while one runs
def renderer():
    with HtmlRenderer() as r:
        yield r


def blocks(doc, r):
    return merge_same_box(page_blocks(doc, lambda d: r.render(d, width=1280, height=720, max_height=None))[0])


@needs_browser
def test_rendered_pages_identical_moved_recoloured_and_missing(renderer):
    ref = blocks(REF, renderer)
    assert [b["text"] for b in ref] == ["hello world", "second block here"]
    x, y, w, h = ref[0]["bbox"]
    assert x == pytest.approx(100 / 1280, abs=2 / 1280) and y == pytest.approx(100 / 720, abs=8 / 720)
    assert max(ref[0]["color"]) < 60  # antialiased black text
    sample = {"html": REF}
    assert benchmark_scores(REF, sample, renderer) == {"d2c_block_match": 1.0, "d2c_text": 1.0, "d2c_position": 1.0,
                                                       "d2c_color": 1.0}
    moved = benchmark_scores(page(("Hello world", 100, 172, "#000000"), ("Second block here", 100, 300, "#000000")),
                             sample, renderer)
    assert moved["d2c_text"] == 1.0 and moved["d2c_color"] == 1.0 and moved["d2c_position"] == 1 - 72 / 720 / 2
    red = blocks(page(("Hello world", 100, 100, "#FF0000"), ("Second block here", 100, 300, "#000000")), renderer)
    got, _ = block_scores(red, ref)
    assert got["text"] == 1.0 and got["position"] == 1.0
    assert got["color"] == pytest.approx((color_similarity(red[0]["color"], ref[0]["color"]) + 1) / 2, abs=1e-12)
    assert got["color"] < 0.8
    half, _ = block_scores(blocks(page(("Hello world", 100, 100, "#000000")), renderer), ref)
    a0, a1 = (b["bbox"][2] * b["bbox"][3] for b in ref)
    assert half["text"] == 1.0 and half["block_match"] == pytest.approx(2 * a0 / (2 * a0 + a1), abs=1e-9)
    # black text outside a text tag: the benchmark's colour range wraps around (0 - 4 -> 252): no block
    assert blocks("<html><body><em>alone</em></body></html>", renderer) == []


@needs_browser
def test_an_element_repeated_past_fifty_is_truncated_before_scoring(renderer):
    ref = "<html><body style='margin:0'>" + "<hr>" * 50 + "<p>After the rules</p></body></html>"
    sample = {"html": ref}
    assert benchmark_scores(ref.replace("<hr>" * 50, "<hr>" * 80), sample, renderer)["d2c_position"] == 1.0
    longer = benchmark_scores(ref.replace("<hr>" * 50, "<hr>" * 50 + "<br>" * 30), sample, renderer)
    assert longer["d2c_text"] == 1.0 and longer["d2c_position"] < 1.0  # 30 <br>: not truncated, the text moved


@needs_browser
def test_the_placeholder_image_is_served_and_nothing_else(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (0, 0, 255)).save(buf, format="JPEG")
    doc = "<html><body style='margin:0'><img src='rick.jpg'><img src='https://example.com/x.png'></body></html>"
    def shot(assets):
        with HtmlRenderer(assets=assets) as r:
            return np.asarray(Image.open(io.BytesIO(r.render(doc, width=200, height=100))).convert("RGB")).astype(int)

    served, bare = shot({"rick.jpg": buf.getvalue()}), shot(None)
    assert served[10, 10, 2] > 200 and served[10, 10, :2].max() < 40  # the placeholder's blue
    assert not ((bare[..., 2] > 200) & (bare[..., 0] < 40)).any()  # without it: a broken image, no blue
    folder = tmp_path / "testset"
    folder.mkdir()
    (folder / "1.html").write_text(doc)
    Image.new("RGB", (200, 100), "white").save(folder / "1.png")
    task = get_task("design2code")
    task.load(str(folder))
    assert task.missing_placeholder and task.official_metrics() == {}
    (folder / "rick.jpg").write_bytes(buf.getvalue())
    task.load(str(folder))
    assert not task.missing_placeholder and task.assets == {"rick.jpg": buf.getvalue()} and "placeholder" in task.cache_settings()


@needs_browser
def test_clip_score_and_final_score_with_a_given_checkpoint(tmp_path):
    """--clip-model: the benchmark's fifth score from a CLIP checkpoint (here a tiny random one);
    identical pages give cosine 1 and final = 0.2 x (1 + 1 + 1 + 1 + 1). An empty answer scores 0
    on the four block metrics and 0.2 x CLIP as final, as the repo scores a page without blocks;
    viscodex's own score stays 0."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from viscodex.errors import EvalError
    from viscodex.evaluation.design2code import with_clip

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
        empty = score("", sample)
    assert same["d2c_clip"] == pytest.approx(1.0, abs=1e-5) and same["d2c_final"] == pytest.approx(1.0, abs=1e-5)
    assert empty["score"] == 0.0 and empty["d2c_block_match"] == empty["d2c_text"] == 0.0
    assert empty["d2c_final"] == pytest.approx(0.2 * empty["d2c_clip"], abs=1e-6)
    assert "d2c_clip" not in task.official_metrics()  # a local checkpoint: not named CLIP in the card
    assert "note" not in task.describe() and get_task("design2code").describe()["note"].startswith(
        "Design2Code's CLIP score (and its final score) skipped: no CLIP checkpoint; give --clip-model")
    with pytest.raises(EvalError, match="--clip-model .*: not a CLIP checkpoint"):
        with_clip([get_task("design2code")], str(tmp_path / "nothing"))[0].scorer().__enter__()
    with pytest.raises(EvalError, match="add --task design2code"):
        with_clip([get_task("mmcode")], str(tmp_path / "clip"))


@needs_browser
def test_predictions_made_elsewhere_get_the_benchmarks_scores(tmp_path):
    """--predictions: the browser is used from the thread that started it (a sync Playwright browser
    cannot switch threads); the reference's own HTML scores 1 on the four, prose 0 on every metric."""
    import json

    from viscodex.evaluation.runner import score_predictions

    first = get_task("design2code").load("sample", limit=1)[0]
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"id": first.id, "response": f"```html\n{first.reference['html']}```"}) + "\n"
                     + json.dumps({"id": "2", "response": "I cannot do that."}) + "\n")
    rep = score_predictions("design2code", preds, source="sample")
    same, prose = (s["scores"] for s in rep["samples"])
    assert {k: same[k] for k in ("score", "d2c_block_match", "d2c_text", "d2c_position", "d2c_color")} == \
        {"score": 1.0, "d2c_block_match": 1.0, "d2c_text": 1.0, "d2c_position": 1.0, "d2c_color": 1.0}
    assert prose["score"] == 0.0 and prose["d2c_block_match"] == prose["d2c_color"] == 0.0
    assert rep["official_metrics"]["d2c_block_match"] == "Block-Match"  # named so in the card only off the sample


def test_the_conformance_script_names_a_wrong_checkout(tmp_path, capsys):
    """benchmarks/d2c_conformance.py (run by hand against the repo's code) loads and says what it needs."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "d2c_conformance.py"
    spec = importlib.util.spec_from_file_location("d2c_conformance", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert len(mod.pairs()) == 15 and all(isinstance(g, str) and ref for _, g, ref in mod.pairs())
    with pytest.raises(SystemExit):
        mod.main(["--design2code", str(tmp_path)])
    assert "no Design2Code/metrics/visual_score.py there (clone NoviScl/Design2Code)" in capsys.readouterr().err
