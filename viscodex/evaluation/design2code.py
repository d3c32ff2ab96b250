"""Design2Code-style screenshot-to-HTML: webpage screenshot -> one HTML document.

Data: the Hub dataset `SALT-NLP/Design2Code-hf` (split `train`, 484 real web pages; columns `image`,
the screenshot, and `text`, the page's HTML), loaded with `datasets.load_dataset`. `--source FOLDER`
reads a folder of `<id>.png` screenshots with their `<id>.html` (HTML optional) and the
benchmark's placeholder image `rick.jpg` when it is there (the GitHub test set ships it).

Rendering: model-generated HTML is rendered only in a separate headless Chromium process (Debian's
/usr/bin/chromium driven by Playwright), with JavaScript disabled and the context offline; the page
is loaded from PAGE_URL, which a route answers with the document, and the only other request
answered is the placeholder image beside it; every other request is aborted. The full page is
captured (viscodex's own score: at the reference screenshot's width, cut at MAX_HEIGHT pixels; the
benchmark's scores: 1280x720, never cut). Never in the app, never in this process.

Scoring (simpler than the benchmark's block matching and CLIP score; documented in docs/eval.md):
  visual  rendered screenshot vs the reference screenshot (`similarity.image_similarity`)
  text    Dice overlap of the visible words of the generated and the reference HTML
  blocks  F1 of text blocks: each block (text of a block-level element) matched to its most
          similar block on the other side (difflib ratio); recall over the reference's blocks,
          precision over the generated ones
  score = (visual + text + blocks) / 3, or visual alone when the reference HTML is not available;
          0 for an answer with no HTML, and 0 when none of the reference's text is reproduced (no
          floor from colours or layout alone). Blocks pair only from text similarity 0.5 up.
This headline is viscodex's own metric (recorded as `viscodex/design2code/...`). Next to it, when
the reference HTML is known, every sample also reports the benchmark's scores as its repo computes
them (d2c_html.py, d2c_blocks.py, d2c_clip.py), for any answer (an answer without HTML is scored as
the benchmark scores it: wrapped in a paragraph): `d2c_block_match`, `d2c_text`, `d2c_position`,
`d2c_color`, and with a CLIP checkpoint `d2c_clip` and `d2c_final` = 0.2 x the five (0.2 x CLIP
when no block pairs, as in the repo). Those renders add the benchmark's placeholder image
(`rick.jpg`, which the references use) and never reach the network.
"""
from __future__ import annotations

import contextlib
import difflib
import html.parser
import io
import os
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Iterator

from .._util.hubref import HubRef
from .d2c_clip import BENCHMARK_CHECKPOINT as BENCHMARK_CLIP
from .similarity import image_similarity, to_rgb
from .tasks import SAMPLE_SOURCE, SAMPLES_DIR, EvalError, EvalSample, Task, extract_code, limited, register, set_on

HUB_ID = "SALT-NLP/Design2Code-hf"
HUB_SPLIT = "train"
SAMPLE_DIR = SAMPLES_DIR / "design2code"
MAX_HEIGHT = 4096
PAGE_URL = "http://viscodex.invalid/"  # the page's own address: never fetched, the route below answers it
PLACEHOLDER = "rick.jpg"  # the image the benchmark's reference pages (and its prompts) use for every picture
MAX_BLOCKS = 150
MATCH_MIN = 0.5  # a block pairs with another only from this text similarity up (the benchmark's filter)
_HTML = re.compile(r"<\s*(!doctype|html|head|body|div|p|h[1-6]|span|table|section|main|header|footer|nav|ul|ol|img|a|"
                   r"button|form)\b", re.I)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PROMPT = ("This is a screenshot of a web page. Write the HTML (with CSS in a <style> element) that reproduces "
          "it as closely as possible: layout, text, colours and sizes. Use placeholder boxes instead of images. "
          "Reply with one complete HTML document in a ```html code block.")
SETUP_HINT = ("design2code scoring renders HTML in headless Chromium: install Debian's chromium and the Playwright "
              "Python package (bash tests/setup_browser.sh), or point VISCODEX_CHROMIUM at a Chromium binary")


def chromium_path() -> str | None:
    env = os.environ.get("VISCODEX_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for name in ("chromium", "chromium-browser"):
        p = shutil.which(name)
        if p:
            return p
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


def browser_available() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return chromium_path() is not None


class HtmlRenderer:
    """One headless Chromium process (via Playwright) that renders untrusted HTML to PNG screenshots.
    Use as a context manager; not thread-safe (one renderer per thread)."""

    def __init__(self, timeout_s: float = 15.0, assets: dict[str, bytes] | None = None):
        exe = chromium_path()
        try:
            from playwright.sync_api import sync_playwright
        except ImportError as e:
            raise EvalError(f"the playwright package is missing: {SETUP_HINT}") from e
        if exe is None:
            raise EvalError(f"no Chromium found: {SETUP_HINT}")
        self.exe, self.timeout_ms = exe, int(timeout_s * 1000)
        # files the page may load by a relative URL (the benchmark's placeholder image), served by
        # the route below; every other request is aborted
        self.assets = {f"{PAGE_URL}{name}": data for name, data in (assets or {}).items()}
        self._pw = sync_playwright().start()
        self._browser = None

    def _launch(self):
        if self._browser is None or not self._browser.is_connected():
            self._browser = self._pw.chromium.launch(executable_path=self.exe, args=CHROMIUM_ARGS, headless=True)
        return self._browser

    def render(self, doc: str, width: int = 1280, height: int = 800, max_height: int | None = MAX_HEIGHT) -> bytes:
        """PNG screenshot of the full page (cut at max_height, None: never) at the given viewport."""
        from PIL import Image

        def serve(route):
            url = route.request.url
            if url == PAGE_URL:
                return route.fulfill(status=200, body=doc, content_type="text/html; charset=utf-8")
            if url in self.assets:
                return route.fulfill(status=200, body=self.assets[url])
            return route.abort()

        ctx = self._launch().new_context(java_script_enabled=False, offline=True, viewport={"width": width, "height": height},
                                         service_workers="block", accept_downloads=False)
        try:
            ctx.route("**/*", serve)
            page = ctx.new_page()
            page.set_default_timeout(self.timeout_ms)
            page.goto(PAGE_URL, wait_until="load", timeout=self.timeout_ms)
            png = page.screenshot(full_page=True, type="png", timeout=self.timeout_ms, animations="disabled")
        finally:
            ctx.close()
        img = Image.open(io.BytesIO(png))
        if max_height and img.height > max_height:
            buf = io.BytesIO()
            img.crop((0, 0, img.width, max_height)).save(buf, format="PNG")
            png = buf.getvalue()
        return png

    def close(self) -> None:
        try:
            if self._browser is not None:
                self._browser.close()
        finally:
            self._pw.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------- text and blocks
BLOCK_TAGS = {"address", "article", "aside", "blockquote", "br", "button", "dd", "div", "dl", "dt", "fieldset",
              "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li",
              "main", "nav", "ol", "p", "pre", "section", "table", "td", "th", "tr", "ul", "label", "option"}
HIDDEN_TAGS = {"script", "style", "head", "title", "noscript", "template", "svg"}


class _TextBlocks(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self.cur: list[str] = []
        self.hidden = 0

    def _flush(self):
        t = " ".join(" ".join(self.cur).split())
        if t:
            self.blocks.append(t)
        self.cur = []

    def handle_starttag(self, tag, attrs):
        if tag in HIDDEN_TAGS:
            self.hidden += 1
        elif tag in BLOCK_TAGS:
            self._flush()

    def handle_endtag(self, tag):
        if tag in HIDDEN_TAGS:
            self.hidden = max(0, self.hidden - 1)
        elif tag in BLOCK_TAGS:
            self._flush()

    def handle_data(self, data):
        if not self.hidden:
            self.cur.append(data)


def text_blocks(doc: str) -> list[str]:
    p = _TextBlocks()
    try:
        p.feed(doc)
        p.close()
    except Exception:  # noqa: BLE001 - malformed HTML still yields what was parsed
        pass
    p._flush()
    return p.blocks


def _words(blocks: list[str]) -> Counter:
    return Counter(w for b in blocks for w in re.findall(r"\w+", b.lower()))


def text_similarity(a: list[str], b: list[str]) -> float:
    wa, wb = _words(a), _words(b)
    n = sum(wa.values()) + sum(wb.values())
    return 1.0 if n == 0 else 2 * sum((wa & wb).values()) / n


def block_similarity(gen: list[str], ref: list[str]) -> float:
    gen, ref = gen[:MAX_BLOCKS], ref[:MAX_BLOCKS]
    if not gen and not ref:
        return 1.0
    if not gen or not ref:
        return 0.0

    def best(x: str, pool: list[str]) -> float:
        sm = difflib.SequenceMatcher(autojunk=False)
        sm.set_seq2(x.lower())
        top = 0.0
        for y in pool:
            sm.set_seq1(y.lower())
            if sm.real_quick_ratio() <= top or sm.quick_ratio() <= top:
                continue
            top = max(top, sm.ratio())
            if top == 1.0:
                break
        return top if top >= MATCH_MIN else 0.0

    recall = sum(best(r, gen) for r in ref) / len(ref)
    precision = sum(best(g, ref) for g in gen) / len(gen)
    return 0.0 if recall + precision == 0 else 2 * recall * precision / (recall + precision)


def score_html(doc: str, reference_png: bytes, reference_html: str | None, renderer: HtmlRenderer) -> dict:
    if not _HTML.search(doc or ""):
        return {"score": 0.0, "rendered": 0.0, "visual": 0.0, "text": 0.0, "blocks": 0.0, "message": "no HTML in the answer"}
    ref = to_rgb(reference_png)
    width = min(max(ref.width, 320), 1920)
    try:
        png = renderer.render(doc, width=width, height=min(max(ref.height, 240), 1080))
    except EvalError:
        raise
    except Exception as e:  # noqa: BLE001 - a page that cannot be rendered scores 0
        return {"score": 0.0, "rendered": 0.0, "message": f"the page could not be rendered ({type(e).__name__}: {str(e)[:200]})"}
    sim = image_similarity(png, reference_png)
    out = {"rendered": 1.0, "visual": sim["visual"], "layout": sim["layout"], "color": sim["color"],
           "structure": sim["structure"]}
    if reference_html:
        gen_b, ref_b = text_blocks(doc), text_blocks(reference_html)
        out["text"] = round(text_similarity(gen_b, ref_b), 6)
        out["blocks"] = round(block_similarity(gen_b, ref_b), 6)
        out["score"] = round((out["visual"] + out["text"] + out["blocks"]) / 3, 6)
        if ref_b and out["text"] == 0 and out["blocks"] == 0:  # none of the page's text: no credit for looks alone
            out["score"], out["message"] = 0.0, "none of the reference page's text was reproduced"
    else:
        out["score"] = out["visual"]
    return out


BENCHMARK_NAMES = {"d2c_block_match": "Block-Match", "d2c_text": "Text", "d2c_position": "Position",
                   "d2c_color": "Color", "d2c_clip": "CLIP"}  # the Design2Code paper's column names


def benchmark_scores(doc: str, reference: dict, renderer: HtmlRenderer, clip=None) -> dict[str, float]:
    """visual_eval_v3_multi for one answer: the benchmark's Block-Match, Text, Position and Color,
    prefixed `d2c_`, plus its CLIP score and final score (0.2 x the five) when a CLIP checkpoint is
    given. The answer is pre-processed as the benchmark pre-processes generated pages; the
    reference is not (as there). Nothing is kept on the sample: a full-page screenshot per
    reference would hold gigabytes over the 484 pages."""
    from . import d2c_blocks, d2c_html

    def render(page: str) -> bytes:  # screenshot_single: 1280x720 viewport, the whole page
        return renderer.render(page, width=1280, height=720, max_height=None)

    ref_blocks, ref_shot = d2c_blocks.page_blocks(reference["html"], render)
    ref_blocks = d2c_blocks.merge_same_box(ref_blocks)
    blocks, shot = d2c_blocks.page_blocks(d2c_html.preprocess(doc), render)
    got, masked = d2c_blocks.block_scores(blocks, ref_blocks)
    if clip is not None:
        got["clip"] = clip(shot, masked, ref_shot, ref_blocks)
        got["final"] = 0.2 * sum(got.values())  # no pair: the four are 0, final = 0.2 x CLIP (as the repo)
    return {f"d2c_{k}": round(v, 6) for k, v in got.items()}


# ---------------------------------------------------------------- the task
def _png_bytes(img) -> bytes:
    buf = io.BytesIO()
    to_rgb(img).save(buf, format="PNG")
    return buf.getvalue()


def load_folder(folder: Path, limit: int | None) -> list[EvalSample]:
    shots = sorted(folder.glob("*.png"), key=lambda p: (len(p.stem), p.stem))
    if not shots:
        raise EvalError(f"{folder}: no <id>.png screenshots")
    out = []
    for p in limited(shots, limit):
        h = p.with_suffix(".html")
        png = p.read_bytes()
        ref_html = h.read_text(encoding="utf-8", errors="replace") if h.is_file() else None
        out.append(EvalSample(id=p.stem, prompt=PROMPT, images=[to_rgb(png)], reference={"image": png, "html": ref_html}))
    return out


def hub_placeholder() -> bytes | None:
    """The dataset repository's rick.jpg, if it has one (the GitHub test set ships it beside the pages)."""
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(HUB_ID, PLACEHOLDER, repo_type="dataset")).read_bytes()
    except Exception:  # noqa: BLE001 - absent or offline: the pages render without it, and the run says so
        return None


class Design2Code(Task):
    name = "design2code"
    title = "Design2Code-style screenshot to HTML"
    dataset_id = HUB_ID
    dataset_name = "Design2Code"
    split = HUB_SPLIT
    metric = "design_similarity"
    metric_name = "visual + text + block similarity"
    max_new_tokens = 2048
    parallel_scoring = False  # one browser per run, used from one thread
    version = 2  # the benchmark's pre-processing, inpainting, colour maths and placeholder image

    def __init__(self, clip_model: str | None = None):
        self.clip_model = clip_model  # a CLIP checkpoint for the benchmark's CLIP score (none: not computed)
        self.clip = None
        self.assets: dict[str, bytes] = {}  # the placeholder image, when the source has it
        self.missing_placeholder = False  # some reference uses rick.jpg and the source has none

    def cache_settings(self) -> dict:
        import hashlib

        out = {"clip": self.clip_model} if self.clip_model else {}
        if PLACEHOLDER in self.assets:
            out["placeholder"] = hashlib.sha256(self.assets[PLACEHOLDER]).hexdigest()[:16]
        return out

    def official_metrics(self) -> dict[str, str]:
        """The d2c_ metrics computed the benchmark's way in this run -> the paper's names for them.
        CLIP only with OpenAI's ViT-B/32 named as such (a local copy cannot be told apart from
        other weights); none when the references' placeholder image could not be served."""
        if self.missing_placeholder:
            return {}
        names = {k: v for k, v in BENCHMARK_NAMES.items() if k != "d2c_clip"}
        if self.clip_model and HubRef.parse(self.clip_model).ref == BENCHMARK_CLIP:
            names["d2c_clip"] = BENCHMARK_NAMES["d2c_clip"]
        return names

    def describe(self) -> dict:
        out = super().describe()
        out["official_metrics"] = self.official_metrics()
        notes = []
        if not self.clip_model:
            notes.append("Design2Code's CLIP score (and its final score) skipped: no CLIP checkpoint; "
                         f"give --clip-model {BENCHMARK_CLIP} (or a local copy)")
        if self.missing_placeholder:
            notes.append(f"the reference pages use {PLACEHOLDER} but the source has none: images render as broken, "
                         f"so the d2c_ scores are not the benchmark's; put {PLACEHOLDER} in the --source folder")
        if notes:
            out["note"] = "; ".join(notes)
        return out

    def load(self, source: str | None = None, limit: int | None = None) -> list[EvalSample]:
        if source == SAMPLE_SOURCE:
            return self._with_placeholder(load_folder(SAMPLE_DIR, limit), None)
        if source:
            path = Path(source).expanduser()
            if not path.is_dir():
                raise EvalError(f"{path}: not a folder of <id>.png + <id>.html pairs")
            img = path / PLACEHOLDER
            return self._with_placeholder(load_folder(path, limit), img.read_bytes() if img.is_file() else None)
        from datasets import load_dataset

        split = HUB_SPLIT if not limit or limit <= 0 else f"{HUB_SPLIT}[:{limit}]"
        ds = load_dataset(HUB_ID, split=split)
        out = []
        for i, row in enumerate(ds):
            png = _png_bytes(row["image"])
            out.append(EvalSample(id=str(i), prompt=PROMPT, images=[to_rgb(png)],
                                  reference={"image": png, "html": row.get("text")}))
        return self._with_placeholder(out, hub_placeholder())

    def _with_placeholder(self, samples: list[EvalSample], image: bytes | None) -> list[EvalSample]:
        self.assets = {PLACEHOLDER: image} if image else {}
        self.missing_placeholder = image is None and any(PLACEHOLDER in (s.reference.get("html") or "") for s in samples)
        return samples

    @contextlib.contextmanager
    def scorer(self) -> Iterator:
        if self.clip_model and self.clip is None:
            from .d2c_clip import ClipScore

            self.clip = ClipScore(self.clip_model)
        with HtmlRenderer(assets=self.assets) as r:
            def score(output: str, sample: EvalSample) -> dict:
                doc = extract_code(output, "html")
                out = score_html(doc, sample.reference["image"], sample.reference.get("html"), r)
                if sample.reference.get("html"):  # every answer, as the benchmark scores every file
                    out.update(benchmark_scores(doc, sample.reference, r, self.clip))
                return out

            yield score

    def score(self, output: str, sample: EvalSample) -> dict:
        with self.scorer() as s:
            return s(output, sample)


def with_clip(tasks: list[Task], clip_model: str | None) -> list[Task]:
    """The tasks with Design2Code given a CLIP checkpoint (`--clip-model`), if any."""
    return set_on(tasks, Design2Code, "--clip-model", clip_model=clip_model) if clip_model else list(tasks)


register(Design2Code, "design2code", "design_2_code")
