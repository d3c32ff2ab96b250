"""Design2Code conformance: viscodex's Block-Match, Text, Position and Color against the
benchmark's own visual_score.py, page pair by page pair, plus the boxes each side masks for CLIP.

Needs a checkout of NoviScl/Design2Code and the packages its metrics import (colormath; the repo
pins beautifulsoup4 4.12.2; with the `clip` package, its own transform is used to compare the CLIP
inputs). Its code runs as is in a child process, with adjustments that change no number:
`clip.load` returns no model (no CLIP weights offline: the embeddings are not compared, the masked
and prepared images CLIP would embed are), its screenshot script launches Debian's Chromium instead
of Playwright's bundled one (same settings: JavaScript and network on, `page.goto(file://...)`,
1280x720, full page), and the indentation error left in visual_score.py by commit acaf2c6 is
corrected. Nothing of it is copied here.

    git clone https://github.com/NoviScl/Design2Code /tmp/Design2Code
    pip install --target /tmp/d2c-deps colormath beautifulsoup4==4.12.2 openai-clip ftfy
    python benchmarks/d2c_conformance.py --design2code /tmp/Design2Code --with /tmp/d2c-deps

Prints one line per pair with both score lists and exits 1 on any difference (scores: above the
6 decimals viscodex reports; mask boxes: 1e-9; CLIP inputs: 1e-6).
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = r'''
import contextlib, json, os, shlex, sys, types
root, work, chromium = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path[:0] = json.loads(sys.argv[4]) + [root, os.path.join(root, "Design2Code")]
try:  # the clip package's own transform when it is installed (its load() would need the weights)
    import packaging.version
    sys.modules.setdefault("pkg_resources", types.SimpleNamespace(packaging=packaging))
    import clip
    from clip.clip import _transform
    clip.load = lambda *a, **k: (None, _transform(224))
except ImportError:
    clip = types.ModuleType("clip")
    clip.load = lambda *a, **k: (None, None)
    sys.modules["clip"] = clip
try:
    import sklearn  # noqa: F401 - imported by visual_score, unused by the four metrics
except ImportError:
    sk = types.ModuleType("sklearn"); sk.metrics = types.ModuleType("sklearn.metrics")
    sk.metrics.pairwise = types.ModuleType("sklearn.metrics.pairwise"); sk.metrics.pairwise.cosine_similarity = None
    sys.modules.update({"sklearn": sk, "sklearn.metrics": sk.metrics, "sklearn.metrics.pairwise": sk.metrics.pairwise})
from playwright.sync_api import sync_playwright
import Design2Code.metrics.screenshot_single as shot

class Chromium:
    def __init__(self, bt): self.bt = bt
    def launch(self, **kw): return self.bt.launch(executable_path=chromium, **kw)

@contextlib.contextmanager
def debian_playwright():
    with sync_playwright() as p:
        yield types.SimpleNamespace(chromium=Chromium(p.chromium))

shot.sync_playwright = debian_playwright
real_system = os.system
def system(cmd):
    if "screenshot_single.py" in cmd:
        a = shlex.split(cmd)
        shot.take_screenshot(a[a.index("--html") + 1], a[a.index("--png") + 1], do_it_again=True)
        return 0
    return real_system(cmd)
os.system = system
path = os.path.join(root, "Design2Code", "metrics", "visual_score.py")
src = open(path).read()
src = src.replace("\n         if len(predict_blocks) == 0:\n", "\n        if len(predict_blocks) == 0:\n")
src = src.replace("\n            elif len(original_blocks) == 0:\n", "\n        elif len(original_blocks) == 0:\n")
vs = types.ModuleType("Design2Code.metrics.visual_score"); vs.__file__ = path
exec(compile(src, path, "exec"), vs.__dict__)
import numpy as np
masked, here = [], [work]

def clip_inputs(img1, img2, blocks1, blocks2):  # what CLIP would embed: the masked, prepared pages
    masked.append([b["bbox"] for b in blocks1])
    if vs.preprocess is not None:
        for name, img, blocks in (("pred", img1, blocks1), ("ref", img2, blocks2)):
            x = vs.preprocess(vs.rescale_and_mask(img, [b["bbox"] for b in blocks])).numpy()
            np.save(os.path.join(here[0], f"clip_{name}.npy"), x)
    return 0.0

vs.calculate_clip_similarity_with_blocks = clip_inputs
out = []
for pair in sorted(os.listdir(work), key=int):
    masked.clear()
    here[0] = os.path.join(work, pair)
    got = vs.visual_eval_v3_multi([[os.path.join(work, pair, "pred", "page.html")], os.path.join(work, pair, "ref", "page.html")])
    out.append({"scores": [float(x) for x in got[0][2][:4]], "masked": [[float(v) for v in b] for b in masked[0]]})
print("SCORES", json.dumps(out))
'''
STYLE = "<style>body{margin:0;font:20px sans-serif} p{margin:0;position:absolute}</style>"


def placed(*paras) -> str:
    body = "".join(f'<p style="left:{x}px;top:{y}px;color:{c}">{t}</p>' for t, x, y, c in paras)
    return f"<html><head>{STYLE}</head><body>{body}</body></html>"


def pairs() -> list[tuple[str, str, str]]:
    """(name, generated page, reference page)."""
    sample = ROOT / "viscodex" / "evaluation" / "samples" / "design2code"
    s1, s2 = (sample / "1.html").read_text(), (sample / "2.html").read_text()
    ref = placed(("Hello world", 100, 100, "#000000"), ("Second block here", 100, 300, "#000000"))
    items = lambda n: "<html><body><ul>" + "<li>item</li>" * n + "</ul><p>After the list</p></body></html>"  # noqa: E731
    intro = "Welcome to the shop: spades, rakes and seeds for every season, shipped from our barn since 1990."
    links = lambda n: "<html><body><ul>" + "<li><a href='#'>Link</a></li>" * n + "</ul><p>Footer text</p></body></html>"  # noqa: E731
    imgs = ("<html><body><h1>Gallery</h1><img src='rick.jpg' width='{w}'><p>Caption one</p><img src='rick.jpg'>"
            "<p>Caption two</p></body></html>")
    return [
        ("identical", s1, s1),
        ("other page", s2, s1),
        ("moved", placed(("Hello world", 100, 172, "#000000"), ("Second block here", 100, 300, "#000000")), ref),
        ("recoloured", placed(("Hello world", 100, 100, "#FF0000"), ("Second block here", 100, 300, "#000000")), ref),
        ("text changed", placed(("Hello there", 100, 100, "#000000"), ("Second block here", 100, 300, "#000000")), ref),
        ("missing block", placed(("Hello world", 100, 100, "#000000")), ref),
        ("split block", placed(("Hello world", 100, 100, "#000000"), ("Second block", 100, 300, "#000000"),
                               ("here", 260, 300, "#000000")), ref),
        ("prose", "I am not sure how to do that.", s1),
        ("empty", "", s1),
        ("repeated elements", items(70), items(50)),
        ("repeated text", "<html><body><p>" + "Buy now and save. " * 60 + "</p></body></html>",
         "<html><body><p>Buy now and save.</p></body></html>"),
        ("intro then repeats", "<html><body><h1>Garden Tools</h1><p>" + intro + "</p><p>" + "Buy now and save. " * 40
         + "</p></body></html>", f"<html><body><h1>Garden Tools</h1><p>{intro}</p><p>Buy now and save.</p></body></html>"),
        ("repeated links", links(70), links(50)),
        ("placeholder images", imgs.format(w=300), imgs.format(w=200)),
        ("inline colours", "<html><body><p>Hello <span style='color: rgb(200, 0, 0)'>world</span> <em>again</em></p>"
                           "<table><tr><td>a</td><td style='color: navy'>b</td></tr></table></body></html>",
         "<html><body><p>Hello <b>world</b> again</p><table><tr><td>a</td><td>b</td></tr></table></body></html>"),
    ]


def placeholder() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (120, 80), (30, 60, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--design2code", type=Path, required=True, help="a checkout of NoviScl/Design2Code")
    ap.add_argument("--with", dest="extra", action="append", default=[], help="a folder put first on the repo's sys.path (its packages)")
    args = ap.parse_args(argv)
    if not (args.design2code / "Design2Code" / "metrics" / "visual_score.py").is_file():
        ap.error(f"--design2code {args.design2code}: no Design2Code/metrics/visual_score.py there (clone NoviScl/Design2Code)")
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from viscodex.evaluation.d2c_clip import clip_pixels, masked_square
    from viscodex.evaluation.design2code import HtmlRenderer, benchmark_scores, chromium_path

    jpg, cases = placeholder(), pairs()
    with tempfile.TemporaryDirectory(prefix="d2c-conformance-") as work:
        for i, (_, gen, ref) in enumerate(cases):
            for side, doc in (("pred", gen), ("ref", ref)):
                d = Path(work, str(i), side)
                d.mkdir(parents=True)
                (d / "page.html").write_text(doc, encoding="utf-8")
                (d / "rick.jpg").write_bytes(jpg)
        r = subprocess.run([sys.executable, "-c", OFFICIAL, str(args.design2code.resolve()), work, chromium_path() or "",
                            json.dumps(args.extra)], capture_output=True, text=True, timeout=1800)
        found = [line for line in r.stdout.splitlines() if line.startswith("SCORES ")]
        if not found:
            print(f"the benchmark's code gave no scores:\n{r.stderr.strip()[-2000:]}")
            return 2
        theirs = json.loads(found[-1][7:])
        keys = ("d2c_block_match", "d2c_text", "d2c_position", "d2c_color")
        differ, clip_diff = 0, []
        with HtmlRenderer(assets={"rick.jpg": jpg}) as renderer:
            for i, ((name, gen, ref), official) in enumerate(zip(cases, theirs)):
                seen: list = []

                def record(shot, masked, ref_shot, ref_blocks):
                    seen.append([list(b["bbox"]) for b in masked])
                    seen.append({"pred": clip_pixels(masked_square(shot, masked)),
                                 "ref": clip_pixels(masked_square(ref_shot, ref_blocks))})
                    return 0.0

                got = benchmark_scores(gen, {"html": ref}, renderer, clip=record)
                ours = [got[k] for k in keys]
                same = all(abs(a - b) <= 1e-6 for a, b in zip(ours, official["scores"]))  # ours are rounded to 6 places
                same_mask = len(seen[0]) == len(official["masked"]) and all(
                    abs(a - b) <= 1e-9 for x, y in zip(seen[0], official["masked"]) for a, b in zip(x, y))
                line = ""
                if Path(work, str(i), "clip_pred.npy").is_file():  # the clip package was there
                    d = max(float(np.abs(seen[1][k] - np.load(Path(work, str(i), f"clip_{k}.npy"))).max()) for k in ("pred", "ref"))
                    clip_diff.append(d)
                    line = f" CLIP input max |diff| {d:.2g}"
                differ += not (same and same_mask)
                print(f"{'same' if same and same_mask else 'DIFFERENT':9s} {name:20s} ours {[round(x, 6) for x in ours]} "
                      f"theirs {[round(x, 6) for x in official['scores']]}" + line
                      + ("" if same_mask else f" masked boxes: ours {len(seen[0])}, theirs {len(official['masked'])}"))
    print(f"{len(cases) - differ}/{len(cases)} pairs give the benchmark's scores"
          + (f"; CLIP inputs: largest difference {max(clip_diff):.2g}" if clip_diff else "; CLIP inputs not compared (no clip package)"))
    return 1 if differ or (clip_diff and max(clip_diff) > 1e-6) else 0


if __name__ == "__main__":
    sys.exit(main())
