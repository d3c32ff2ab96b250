"""Design2Code-style screenshot-to-HTML: webpage screenshot -> one HTML document.

Data: the Hub dataset `SALT-NLP/Design2Code-hf` (split `train`, 484 real web pages; columns `image`,
the screenshot, and `text`, the page's HTML), loaded with `datasets.load_dataset`. `--source FOLDER`
reads a folder of `<id>.png` screenshots with their `<id>.html` (HTML optional).

Rendering: model-generated HTML is rendered only in a separate headless Chromium process (Debian's
/usr/bin/chromium driven by Playwright), with JavaScript disabled, every network request aborted
and the context offline, at the reference screenshot's width; the full page is captured (cut at
MAX_HEIGHT pixels). Never in the app, never in this process.

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
the reference HTML is known, each sample also reports the benchmark's low-level scores as its repo
computes them (d2c_blocks.py): `d2c_block_match`, `d2c_text`, `d2c_position`, `d2c_color`; the
benchmark's CLIP score is not computed.
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

from .similarity import image_similarity, to_rgb
from .tasks import SAMPLE_SOURCE, SAMPLES_DIR, EvalError, EvalSample, Task, extract_code, limited, register, set_on

HUB_ID = "SALT-NLP/Design2Code-hf"
HUB_SPLIT = "train"
SAMPLE_DIR = SAMPLES_DIR / "design2code"
MAX_HEIGHT = 4096
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

    def __init__(self, timeout_s: float = 15.0):
        exe = chromium_path()
        try:
            from playwright.sync_api import sync_playwright
        except ImportError as e:
            raise EvalError(f"the playwright package is missing: {SETUP_HINT}") from e
        if exe is None:
            raise EvalError(f"no Chromium found: {SETUP_HINT}")
        self.exe, self.timeout_ms = exe, int(timeout_s * 1000)
        self._pw = sync_playwright().start()
        self._browser = None

    def _launch(self):
        if self._browser is None or not self._browser.is_connected():
            self._browser = self._pw.chromium.launch(executable_path=self.exe, args=CHROMIUM_ARGS, headless=True)
        return self._browser

    def render(self, doc: str, width: int = 1280, height: int = 800) -> bytes:
        """PNG screenshot of the full page (cut at MAX_HEIGHT) at the given viewport."""
        from PIL import Image

        ctx = self._launch().new_context(java_script_enabled=False, offline=True, viewport={"width": width, "height": height},
                                         service_workers="block", accept_downloads=False)
        try:
            ctx.route("**/*", lambda route: route.abort())
            page = ctx.new_page()
            page.set_default_timeout(self.timeout_ms)
            page.set_content(doc, wait_until="load", timeout=self.timeout_ms)
            png = page.screenshot(full_page=True, type="png", timeout=self.timeout_ms, animations="disabled")
        finally:
            ctx.close()
        img = Image.open(io.BytesIO(png))
        if img.height > MAX_HEIGHT:
            buf = io.BytesIO()
            img.crop((0, 0, img.width, MAX_HEIGHT)).save(buf, format="PNG")
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


def benchmark_scores(doc: str, reference: dict, renderer: HtmlRenderer, clip=None) -> dict[str, float]:
    """The benchmark's Block-Match, Text, Position and Color (d2c_blocks.py), prefixed `d2c_`, plus
    its CLIP score and final score (0.2 x the five) when a CLIP checkpoint is given; the reference
    page's blocks are found once per sample."""
    from . import d2c_blocks

    render = lambda page: renderer.render(page, width=1280, height=720)  # noqa: E731 - the benchmark's viewport
    if "blocks" not in reference:
        reference["blocks"] = d2c_blocks.page_blocks(reference["html"], render)
    ref_blocks, ref_shot = reference["blocks"]
    blocks, shot = d2c_blocks.page_blocks(doc, render)
    got = d2c_blocks.block_scores(blocks, ref_blocks)
    if clip is not None:
        got["clip"] = clip(shot, blocks, ref_shot, ref_blocks)
        got["final"] = 0.2 * sum(got.values())
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

    def __init__(self, clip_model: str | None = None):
        self.clip_model = clip_model  # a CLIP checkpoint for the benchmark's CLIP score (none: not computed)
        self.clip = None

    def cache_settings(self) -> dict:
        return {"clip": self.clip_model} if self.clip_model else {}

    def describe(self) -> dict:
        out = super().describe()
        if not self.clip_model:
            out["note"] = ("Design2Code's CLIP score (and its final score) skipped: no CLIP checkpoint; "
                           "give --clip-model openai/clip-vit-base-patch32 (or a local copy)")
        return out

    def load(self, source: str | None = None, limit: int | None = None) -> list[EvalSample]:
        if source == SAMPLE_SOURCE:
            return load_folder(SAMPLE_DIR, limit)
        if source:
            path = Path(source).expanduser()
            if not path.is_dir():
                raise EvalError(f"{path}: not a folder of <id>.png + <id>.html pairs")
            return load_folder(path, limit)
        from datasets import load_dataset

        split = HUB_SPLIT if not limit or limit <= 0 else f"{HUB_SPLIT}[:{limit}]"
        ds = load_dataset(HUB_ID, split=split)
        out = []
        for i, row in enumerate(ds):
            png = _png_bytes(row["image"])
            out.append(EvalSample(id=str(i), prompt=PROMPT, images=[to_rgb(png)],
                                  reference={"image": png, "html": row.get("text")}))
        return out

    @contextlib.contextmanager
    def scorer(self) -> Iterator:
        if self.clip_model and self.clip is None:
            from .d2c_blocks import ClipScore

            self.clip = ClipScore(self.clip_model)
        with HtmlRenderer() as r:
            def score(output: str, sample: EvalSample) -> dict:
                doc = extract_code(output, "html")
                out = score_html(doc, sample.reference["image"], sample.reference.get("html"), r)
                if out.get("rendered") and sample.reference.get("html"):
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
