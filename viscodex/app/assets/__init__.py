"""Example images bundled with the app, drawn by this module (no third-party assets).

Regenerate with `python -m viscodex.app.assets`. Each example pairs an image with a task of
viscodex.app.tasks.TASKS.
"""
from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
# (file, task name): the app's example rows
EXAMPLES = (
    ("landing_page.png", "HTML page"),
    ("bar_chart.png", "Matplotlib chart"),
    ("line_chart.png", "Matplotlib chart"),
    ("flow_diagram.png", "Free text"),
)
SIZE = (640, 420)


def example_paths() -> list[tuple[Path, str]]:
    return [(ASSETS_DIR / f, task) for f, task in EXAMPLES]


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def landing_page(path: Path) -> None:
    """A small product landing page: nav bar, hero, call-to-action, three feature cards."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", SIZE, (248, 249, 252))
    d = ImageDraw.Draw(im)
    d.rectangle((0, 0, SIZE[0], 48), fill=(33, 37, 41))
    d.text((20, 14), "Acme Cloud", font=_font(20), fill=(255, 255, 255))
    for i, item in enumerate(("Pricing", "Docs", "Blog", "Sign in")):
        d.text((330 + i * 75, 17), item, font=_font(15), fill=(200, 205, 210))
    d.text((40, 80), "Deploy in seconds", font=_font(34), fill=(20, 24, 28))
    d.text((40, 128), "Ship your app to the edge with one command.", font=_font(17), fill=(90, 96, 104))
    d.rounded_rectangle((40, 165, 200, 205), radius=8, fill=(13, 110, 253))
    d.text((62, 175), "Get started", font=_font(17), fill=(255, 255, 255))
    cards = (("Fast", "Global CDN"), ("Secure", "TLS by default"), ("Simple", "Git push deploys"))
    for i, (title, body) in enumerate(cards):
        x = 40 + i * 195
        d.rounded_rectangle((x, 240, x + 175, 380), radius=10, fill=(255, 255, 255), outline=(222, 226, 230), width=2)
        d.text((x + 16, 258), title, font=_font(20), fill=(20, 24, 28))
        d.text((x + 16, 295), body, font=_font(14), fill=(108, 117, 125))
    im.save(path, optimize=True)


def bar_chart(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    langs = ["Python", "HTML", "JS", "C++", "Go"]
    vals = [42, 31, 27, 14, 9]
    ax.bar(langs, vals, color=["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3"])
    ax.set_title("Samples per language")
    ax.set_ylabel("thousands")
    for i, v in enumerate(vals):
        ax.text(i, v + 0.8, str(v), ha="center")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def line_chart(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    steps = list(range(0, 11))
    ax.plot(steps, [0.9 * 0.8**s + 0.1 for s in steps], marker="o", label="train")
    ax.plot(steps, [0.95 * 0.85**s + 0.15 for s in steps], marker="s", linestyle="--", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("Training curve")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def flow_diagram(path: Path) -> None:
    """Boxes and arrows: the VisCodex recipe as a diagram."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", SIZE, (255, 255, 255))
    d = ImageDraw.Draw(im)
    boxes = {"VLM": (30, 60), "Code LLM": (30, 300), "Merge": (250, 180), "VisCodex": (460, 180)}
    for label, (x, y) in boxes.items():
        d.rounded_rectangle((x, y, x + 150, y + 60), radius=12, fill=(232, 240, 254), outline=(26, 115, 232), width=3)
        d.text((x + 75, y + 30), label, font=_font(18), fill=(23, 78, 166), anchor="mm")

    def arrow(a, b):
        d.line((a, b), fill=(60, 64, 67), width=3)
        x, y = b
        d.polygon(((x, y), (x - 12, y - 7), (x - 12, y + 7)), fill=(60, 64, 67))

    arrow((180, 90), (250, 200))
    arrow((180, 330), (250, 220))
    arrow((400, 210), (460, 210))
    d.text((320, 40), "theta = base + 0.7 tau_vlm + 0.3 tau_code", font=_font(14), fill=(95, 99, 104), anchor="mm")
    im.save(path, optimize=True)


MAKERS = {"landing_page.png": landing_page, "bar_chart.png": bar_chart, "line_chart.png": line_chart,
          "flow_diagram.png": flow_diagram}


def make_examples(out: Path = ASSETS_DIR) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, _ in EXAMPLES:
        MAKERS[name](out / name)
        paths.append(out / name)
    return paths
