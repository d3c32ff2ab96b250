"""Regenerate the tiny offline samples in evaluation/samples/ (made by the project, not taken from the
benchmarks), in each benchmark's own format, so the loaders are exercised without the network:

  samples/mmcode_sample.jsonl   3 MMCode-format problems (base64 PNG images, input_output JSON string,
                                one standard-IO and one call-based kind), each with a correct solution
  samples/chartmimic/<n>.py     2 matplotlib scripts + <n>.png rendered by the sandbox (render_chart)
  samples/design2code/<n>.html  2 small pages + <n>.png screenshots rendered by headless Chromium

    python -m viscodex.evaluation.make_samples          # needs chromium + playwright for design2code
"""
from __future__ import annotations

import base64
import io
import json
import sys

from PIL import Image, ImageDraw

from .tasks import SAMPLES_DIR


def _png_b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode()


def _grid_image(rows: list[list[int]]) -> Image.Image:
    cell = 28
    img = Image.new("RGB", (cell * len(rows[0]) + 2, cell * len(rows) + 2), "white")
    d = ImageDraw.Draw(img)
    for r, row in enumerate(rows):
        for c, v in enumerate(row):
            x, y = c * cell + 1, r * cell + 1
            d.rectangle([x, y, x + cell, y + cell], outline="black", fill=(255, 230, 150) if v == max(row) else "white")
            d.text((x + 9, y + 8), str(v), fill="black")
    return img


def _triangle_image() -> Image.Image:
    img = Image.new("RGB", (160, 120), "white")
    d = ImageDraw.Draw(img)
    d.polygon([(20, 100), (140, 100), (20, 20)], outline="black", fill=(200, 220, 255))
    d.text((75, 104), "a", fill="black")
    d.text((8, 55), "b", fill="black")
    d.rectangle([20, 90, 30, 100], outline="black")
    return img


def _lattice_image() -> Image.Image:
    img = Image.new("RGB", (130, 100), "white")
    d = ImageDraw.Draw(img)
    for i in range(5):
        d.line([(10 + 27 * i, 10), (10 + 27 * i, 91)], fill="gray")
    for j in range(4):
        d.line([(10, 10 + 27 * j), (118, 10 + 27 * j)], fill="gray")
    d.line([(10, 10), (37, 10), (37, 64), (91, 64), (91, 91), (118, 91)], fill="red", width=3)
    d.ellipse([5, 5, 15, 15], fill="green")
    d.ellipse([113, 86, 123, 96], fill="blue")
    return img


def mmcode_problems() -> list[dict]:
    example = [[3, 1, 4], [1, 5, 9], [2, 6, 5]]
    grid_tests = [
        ("3 3\n3 1 4\n1 5 9\n2 6 5\n", "19\n"),
        ("1 1\n7\n", "7\n"),
        ("2 4\n-1 -2 -3 -4\n0 10 0 0\n", "9\n"),
    ]
    return [
        {
            "problem_id": "viscodex_grid_1", "name": "Row maxima", "source": "viscodex", "url": "",
            "question": ("The picture shows a grid of integers in which the largest value of every row is highlighted.\n\n"
                         "![image](1.png)\n\nThe first line of the input holds N and M, then N lines of M integers follow. "
                         "Print the sum of the highlighted values, i.e. of the maximum of every row. For the grid in the "
                         "picture the answer is 19."),
            "raw_problem": "", "solutions": ["n, m = map(int, input().split())\n"
                                             "print(sum(max(map(int, input().split())) for _ in range(n)))\n"],
            "input_output": json.dumps({"inputs": [t[0] for t in grid_tests], "outputs": [t[1] for t in grid_tests]}),
            "images": [_png_b64(_grid_image(example))], "picture_num": 1, "image_tags": ["table"],
            "starter_code": "", "difficulty": "EASY", "data_split": "test",
        },
        {
            "problem_id": "viscodex_triangle_1", "name": "Right triangle", "source": "viscodex", "url": "",
            "question": ("![image](1.png)\n\nThe right triangle in the picture has legs a and b. Write a function "
                         "area(a, b) that returns its area as a float."),
            "raw_problem": "", "solutions": ["def area(a, b):\n    return a * b / 2\n"],
            "input_output": json.dumps({"fn_name": "area", "inputs": [[3, 4], [1, 1], [10, 0.5]],
                                        "outputs": [[6.0], [0.5], [2.5]]}),
            "images": [_png_b64(_triangle_image())], "picture_num": 1, "image_tags": ["geometry"],
            "starter_code": "def area(a, b):\n", "difficulty": "EASY", "data_split": "test",
        },
        {
            "problem_id": "viscodex_lattice_1", "name": "Monotone paths", "source": "viscodex", "url": "",
            "question": ("![image](1.png)\n\nA path like the red one goes from the green corner to the blue corner of a "
                         "grid with R rows and C columns of cells, one unit step right or down at a time. Read R and C "
                         "and print the number of such paths. The grid in the picture has R = 3 and C = 4: 35 paths."),
            "raw_problem": "", "solutions": ["from math import comb\nr, c = map(int, input().split())\nprint(comb(r + c, r))\n"],
            "input_output": json.dumps({"inputs": ["3 4\n", "1 1\n", "10 10\n"], "outputs": ["35\n", "2\n", "184756\n"]}),
            "images": [_png_b64(_lattice_image())], "picture_num": 1, "image_tags": ["graph"],
            "starter_code": "", "difficulty": "EASY", "data_split": "test",
        },
    ]


CHARTS = {
    "bar_1": '''import matplotlib.pyplot as plt

labels = ["merge", "swap", "base"]
values = [74.8, 61.2, 73.4]
fig, ax = plt.subplots(figsize=(4, 3))
ax.bar(labels, values, color=["#1f77b4", "#ff7f0e", "#2ca02c"])
ax.set_ylim(50, 80)
ax.set_ylabel("score")
ax.set_title("ChartMimic")
plt.tight_layout()
plt.savefig("bar_1.pdf", bbox_inches="tight")
''',
    "line_1": '''import matplotlib.pyplot as plt
import numpy as np

lam = np.linspace(0, 1, 11)
fig, ax = plt.subplots(figsize=(4, 3))
ax.plot(lam, 10 - 40 * (lam - 0.7) ** 2, color="purple", marker="o", label="pass@1")
ax.plot(lam, 6 + 3 * lam, color="gray", linestyle="--", label="grounding")
ax.set_xlabel("lambda")
ax.legend()
ax.grid(alpha=0.3)
plt.tight_layout()
plt.savefig("line_1.pdf", bbox_inches="tight")
''',
}

PAGES = {
    "1": '''<!DOCTYPE html>
<html><head><style>
body { margin: 0; font-family: sans-serif; background: #f4f4f4; }
header { background: #23395d; color: white; padding: 24px 32px; }
header h1 { margin: 0; font-size: 28px; }
main { padding: 24px 32px; }
.card { background: white; border-left: 6px solid #e07a1f; padding: 16px; margin-bottom: 16px; }
</style></head><body>
<header><h1>VisCodex notes</h1></header>
<main>
<div class="card"><h2>Merging</h2><p>Task vectors of a vision model and a code model are mixed with one weight.</p></div>
<div class="card"><h2>Sweeping</h2><p>Each weight is evaluated and the best one is kept.</p></div>
</main></body></html>
''',
    "2": '''<!DOCTYPE html>
<html><head><style>
body { margin: 0; font-family: serif; }
nav { display: flex; gap: 24px; padding: 12px 24px; background: #2d6a4f; }
nav a { color: #fff; text-decoration: none; font-size: 18px; }
.hero { padding: 40px 24px; background: #d8f3dc; text-align: center; }
.hero p { font-size: 20px; color: #1b4332; }
.cols { display: flex; }
.cols div { flex: 1; padding: 20px; min-height: 80px; }
.cols div:nth-child(2) { background: #b7e4c7; }
</style></head><body>
<nav><a href="#">Home</a><a href="#">Models</a><a href="#">Contact</a></nav>
<div class="hero"><h1>Green Garden</h1><p>Plants, seeds and tools for every season.</p></div>
<div class="cols"><div>Spring bulbs</div><div>Summer herbs</div><div>Autumn trees</div></div>
</body></html>
''',
}


def main(argv: list[str] | None = None) -> int:
    from .. import sandbox
    from .design2code import HtmlRenderer
    from .mmcode import parse_problem
    from .mmcode_harness import run_problem

    out = SAMPLES_DIR
    out.mkdir(parents=True, exist_ok=True)
    probs = mmcode_problems()
    for p in probs:
        r = run_problem(p["solutions"][0], parse_problem(p).reference)
        if r["score"] != 1.0:
            raise SystemExit(f"{p['problem_id']}: the reference solution fails its tests: {r}")
    (out / "mmcode_sample.jsonl").write_text("".join(json.dumps(p) + "\n" for p in probs), encoding="utf-8")

    cdir = out / "chartmimic"
    cdir.mkdir(exist_ok=True)
    for name, code in CHARTS.items():
        r = sandbox.render_chart(code, timeout=60)
        if r.png is None:
            raise SystemExit(f"chart {name}: {r.message}")
        (cdir / f"{name}.py").write_text(code, encoding="utf-8")
        (cdir / f"{name}.png").write_bytes(r.png)

    ddir = out / "design2code"
    ddir.mkdir(exist_ok=True)
    with HtmlRenderer() as rend:
        for name, page in PAGES.items():
            (ddir / f"{name}.html").write_text(page, encoding="utf-8")
            (ddir / f"{name}.png").write_bytes(rend.render(page, width=640, height=480))
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote the samples in {out} ({total / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
