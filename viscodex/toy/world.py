"""The toy world of the demo: coloured shapes, their descriptions and the SVG that draws them, and
three tasks over it with data generation and scoring (reusable by `viscodex eval`).

A scene is (colour, shape, size). The tasks:
  grounding   image -> "a small red circle"                    (reads the image)
  coding      "Write SVG for: a small red circle" -> "a small red circle: <svg>...</svg>"  (text only)
  image_code  image -> the same: its caption, then the SVG that draws it   (both skills)

Scores never execute model output: descriptions are matched word by word, SVG is parsed as XML
and the drawn element's attributes are checked (what a browser would draw: element, fill, extent).
"""
from __future__ import annotations

import itertools
import math
import random
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]
SHAPES = ["circle", "square", "triangle", "star"]
SIZES = ["small", "large"]
ATTRIBUTES = ("size", "color", "shape")
RGB = {
    "red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 70, 220), "yellow": (235, 215, 30),
    "purple": (140, 50, 170), "orange": (245, 140, 20), "black": (10, 10, 10), "white": (250, 250, 250),
}
BACKGROUND = (150, 150, 150)
CANVAS = 64  # SVG canvas side
HALF = {"small": 10, "large": 24}  # half-extent of the drawn shape on the SVG canvas
LARGE_FROM = 2 * 17  # an extent >= this many SVG units reads as "large"
# Expected score of a model that ignores the input (uniform guess per attribute).
CHANCE = {"size": 1 / len(SIZES), "color": 1 / len(COLORS), "shape": 1 / len(SHAPES)}


@dataclass(frozen=True)
class Scene:
    color: str
    shape: str
    size: str

    @property
    def attrs(self) -> dict[str, str]:
        return {"size": self.size, "color": self.color, "shape": self.shape}

    def description(self) -> str:
        return f"a {self.size} {self.color} {self.shape}"

    def svg(self) -> str:
        """The canonical SVG: one element centred on a 64x64 canvas (no width/height: short sequences)."""
        return f"<svg>{shape_element(self.shape, HALF[self.size], self.color)}</svg>"

    def code(self) -> str:
        """The coding tasks' answer: first what it draws, in words, then the SVG - the captioned SVG
        of the base's corpus. Writing the words first is what lets a model that can describe an
        image and code from words write code for an image (docs/demo.md, "Design notes")."""
        return f"{self.description()}: {self.svg()}"


def all_scenes() -> list[Scene]:
    return [Scene(c, s, z) for c, s, z in itertools.product(COLORS, SHAPES, SIZES)]


def _points(shape: str, half: float, cx: float, cy: float) -> list[tuple[float, float]]:
    if shape == "triangle":
        return [(cx, cy - half), (cx + half, cy + half), (cx - half, cy + half)]
    if shape == "star":  # a pentagram (SVG's default nonzero fill rule fills its centre too),
        order = (3, 0, 2, 4, 1)  # starting bottom-left so its code differs from a triangle's at once
        return [(cx + half * math.cos(-math.pi / 2 + k * 2 * math.pi / 5),
                 cy + half * math.sin(-math.pi / 2 + k * 2 * math.pi / 5)) for k in order]
    raise ValueError(shape)


def _star_outline(half: float, cx: float, cy: float) -> list[tuple[float, float]]:
    """The pentagram's outline (10 vertices), for rasterisers that fill even-odd."""
    pts = []
    for i in range(10):
        r = half if i % 2 == 0 else half * 0.382
        a = -math.pi / 2 + i * math.pi / 5
        pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return pts


def shape_element(shape: str, half: int, color: str) -> str:
    # The colour as CSS (`style="fill: red"`): its value is then the very token of the caption's
    # colour word (" red"); `fill="red"` tokenises otherwise, and a VL backbone that reads the
    # colour from the image (as its caption) then wrote another one into the SVG (docs/demo.md).
    c = CANVAS // 2
    if shape == "circle":
        return f'<circle style="fill: {color}" cx="{c}" cy="{c}" r="{half}"/>'
    if shape == "square":
        return f'<rect style="fill: {color}" x="{c - half}" y="{c - half}" width="{2 * half}" height="{2 * half}"/>'
    pts = " ".join(f"{round(x)},{round(y)}" for x, y in _points(shape, half, c, c))
    return f'<polygon style="fill: {color}" points="{pts}"/>'


def render(scene: Scene, size_px: int, rng: random.Random):
    """A PIL image of the scene: the shape at a jittered position and scale on a grey canvas."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size_px, size_px), BACKGROUND)
    d = ImageDraw.Draw(img)
    half = HALF[scene.size] / CANVAS * size_px * rng.uniform(0.85, 1.1)
    slack = max(0.0, size_px / 2 - half - 1)
    cx = size_px / 2 + rng.uniform(-slack, slack)
    cy = size_px / 2 + rng.uniform(-slack, slack)
    fill = RGB[scene.color]
    if scene.shape == "circle":
        d.ellipse([cx - half, cy - half, cx + half, cy + half], fill=fill)
    elif scene.shape == "square":
        d.rectangle([cx - half, cy - half, cx + half, cy + half], fill=fill)
    elif scene.shape == "star":
        d.polygon(_star_outline(half, cx, cy), fill=fill)
    else:
        d.polygon(_points(scene.shape, half, cx, cy), fill=fill)
    return img


# ---------------------------------------------------------------- reading model outputs
_WORDS = {
    "size": re.compile(r"\b(" + "|".join(SIZES) + r")\b"),
    "color": re.compile(r"\b(" + "|".join(COLORS) + r")\b"),
    "shape": re.compile(r"\b(" + "|".join(SHAPES) + r")\b"),
}


def read_description(text: str) -> dict[str, str | None]:
    """The first size, colour and shape word of `text` (None where there is none)."""
    out = {}
    for a, rx in _WORDS.items():
        m = rx.search(text.lower())
        out[a] = m.group(1) if m else None
    return out


_SVG = re.compile(r"<svg\b.*?</svg>", re.DOTALL)


def _style(css: str) -> dict[str, str]:
    """The declarations of a `style` attribute (`fill: red; stroke: blue`), as a browser reads them:
    the last one of a property wins over earlier ones unless an earlier one is `!important`, and
    any of them wins over the presentation attribute; a declaration without a colon is dropped."""
    out: dict[str, str] = {}
    important: set[str] = set()
    for decl in css.split(";"):
        name, sep, value = decl.partition(":")
        name, value = name.strip().lower(), value.strip()
        if not sep:
            continue
        urgent = value.lower().endswith("!important")
        if urgent:
            value = value[: -len("!important")].strip()
        if name in important and not urgent:
            continue
        out[name] = value
        if urgent:
            important.add(name)
    return out


def _num(el, name: str) -> float:
    return float(el.attrib[name])


def read_svg(text: str) -> dict[str, str | None] | None:
    """What the first <svg>...</svg> in `text` draws: {size, color, shape} of its first element.
    None when there is no well-formed SVG. The code is parsed, never run."""
    m = _SVG.search(text)
    if not m:
        return None
    try:
        root = ET.fromstring(m.group(0))
    except ET.ParseError:
        return None
    shapes = [el for el in root.iter() if el is not root]
    if not shapes:
        return {"size": None, "color": None, "shape": None}
    el = shapes[0]
    color = _style(el.attrib.get("style", "")).get("fill", el.attrib.get("fill"))
    color = color if color in COLORS else None
    shape, extent = None, None
    try:
        if el.tag == "circle":
            shape, extent = "circle", 2 * _num(el, "r")
        elif el.tag == "rect":
            w, h = _num(el, "width"), _num(el, "height")
            shape, extent = ("square" if w == h else None), max(w, h)
        elif el.tag == "polygon":
            pts = [tuple(float(v) for v in p.split(",")) for p in el.attrib["points"].split()]
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            extent = max(max(xs) - min(xs), max(ys) - min(ys))
            shape = {3: "triangle", 5: "star"}.get(len(pts))
    except (KeyError, ValueError, IndexError):
        shape, extent = None, None
    size = None if extent is None else ("large" if extent >= LARGE_FROM else "small")
    return {"size": size, "color": color, "shape": shape}


# ---------------------------------------------------------------- tasks
@dataclass
class Sample:
    scene: Scene
    image: Any = None  # PIL image for image tasks
    target: str = ""


@dataclass(frozen=True)
class Task:
    """A toy task: how to pose it to a chat model and how to score an answer."""

    name: str
    title: str
    uses_image: bool
    prompt: Callable[[Scene], str]
    target: Callable[[Scene], str]
    read: Callable[[str], dict | None]  # model output -> attributes it expresses
    max_new_tokens: int = 48
    # The image goes where the description would be ("Write SVG for: <image>"): a VLM whose vision
    # tokens stand in for a description there can reuse a text skill on images (see docs/demo.md).
    image_last: bool = False

    def messages(self, sample: Sample, answer: bool = False) -> list[dict]:
        """Chat messages in the processor's format (an image entry for image tasks)."""
        content: list[dict] = [{"type": "text", "text": self.prompt(sample.scene)}]
        if self.uses_image:
            content.insert(len(content) if self.image_last else 0, {"type": "image"})
        msgs = [{"role": "user", "content": content}]
        if answer:
            msgs.append({"role": "assistant", "content": [{"type": "text", "text": sample.target}]})
        return msgs

    def score(self, output: str, sample: Sample) -> dict[str, float]:
        """Per-attribute exact accuracy (`attr_acc`), all-attributes exact (`exact`), well-formed output (`valid`)."""
        got = self.read(output)
        valid = got is not None
        got = got or {}
        hits = {a: float(got.get(a) == v) for a, v in sample.scene.attrs.items()}
        return {"attr_acc": sum(hits.values()) / len(hits), "exact": float(all(hits.values())),
                "valid": float(valid), **{a: h for a, h in hits.items()}}


GROUNDING = Task("grounding", "grounding (image -> description)", True,
                 lambda s: "Describe:", Scene.description, read_description, image_last=True)
CODE_PROMPT = "Write SVG for:"  # the coding tasks' instruction, before a description or an image
CODING = Task("coding", "coding (description -> SVG)", False,
              lambda s: f"{CODE_PROMPT} {s.description()}", Scene.code, read_svg, max_new_tokens=64)
IMAGE_CODE = Task("image_code", "image -> code (SVG)", True,
                  lambda s: CODE_PROMPT, Scene.code, read_svg, max_new_tokens=64, image_last=True)
TASKS = {t.name: t for t in (GROUNDING, CODING, IMAGE_CODE)}


def chance_attr_acc() -> float:
    return sum(CHANCE.values()) / len(CHANCE)


@dataclass(frozen=True)
class Split:
    """Scene combinations seen in training vs held out for evaluation (compositional split)."""

    train: tuple[Scene, ...]
    heldout: tuple[Scene, ...]


def split_scenes(seed: int, heldout_fraction: float = 0.25) -> Split:
    """Hold out a fraction of combinations; every single attribute value still occurs in training."""
    rng = random.Random(f"split-{seed}")
    scenes = all_scenes()
    n_out = int(len(scenes) * heldout_fraction)
    while True:
        rng.shuffle(scenes)
        held, train = scenes[:n_out], scenes[n_out:]
        if all({getattr(s, a) for s in train} == set(vals) for a, vals in
               (("color", COLORS), ("shape", SHAPES), ("size", SIZES))):
            return Split(tuple(train), tuple(sorted(held, key=lambda s: (s.color, s.shape, s.size))))


def make_samples(task: Task, scenes: tuple[Scene, ...] | list[Scene], n: int, seed: int | str,
                 image_size: int = 56) -> list[Sample]:
    """`n` samples cycling through `scenes` in a seeded order; images freshly jittered per sample."""
    rng = random.Random(f"{task.name}-{seed}")
    order: list[Scene] = []
    while len(order) < n:
        batch = list(scenes)
        rng.shuffle(batch)
        order.extend(batch)
    out = []
    for s in order[:n]:
        img = render(s, image_size, rng) if task.uses_image else None
        out.append(Sample(s, img, task.target(s)))
    return out


def summarize(scores: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each score over samples."""
    if not scores:
        return {}
    return {k: sum(s[k] for s in scores) / len(scores) for k in scores[0]}


def text_corpus(seed: int, n: int = 400) -> list[str]:
    """Text the tokenizer is trained on: descriptions, SVG, prompts (covers every task's strings)."""
    rng = random.Random(f"corpus-{seed}")
    scenes = all_scenes()
    out = []
    for _ in range(n):
        s = rng.choice(scenes)
        out += [s.description(), s.svg()] + [t.prompt(s) for t in TASKS.values()]
    return out


__all__ = [
    "CODE_PROMPT",
    "CODING",
    "COLORS",
    "GROUNDING",
    "IMAGE_CODE",
    "RGB",
    "SHAPES",
    "SIZES",
    "TASKS",
    "Sample",
    "Scene",
    "Split",
    "Task",
    "all_scenes",
    "chance_attr_acc",
    "make_samples",
    "read_description",
    "read_svg",
    "render",
    "split_scenes",
    "summarize",
    "text_corpus",
]


# ---------------------------------------------------------------- the base model's "pre-training" text
# Captioned SVGs per raw document, each to follow its own line. With one a document, whether the
# base learnt to copy the caption's colour into the SVG depended on the seed; three helped on some
# seeds, not all (docs/demo.md, "Design notes" has the numbers).
CAPTIONED_PER_DOC = 3
QUESTIONS = {"color": "What colour is {d}?", "shape": "What shape is {d}?", "size": "What size is {d}?"}


def pretraining_docs(seed: int | str, n: int, code_every: int = 50) -> list[str | tuple[str, str]]:
    """The base LLM's corpus: raw descriptions, captioned SVG ("a small red circle: <svg>..."),
    chat turns that repeat them or name an attribute, and - one document in `code_every` - the
    coding task itself, so that the base (like a real base LLM) has a weak coding skill that the
    coder's fine-tune then sharpens.

    The captions are why the coder's skill survives a merge: SVG next to the words it draws (as
    real code sits next to its comments and docs) teaches the base, as plain language modelling,
    to write the SVG of the words just before it; the coder's fine-tune then mostly teaches the
    instruction's form, a change that still works at 30 % of its size (docs/demo.md, "Design notes")."""
    rng = random.Random(f"pretrain-{seed}")
    scenes = all_scenes()
    out: list[str | tuple[str, str]] = []
    for i in range(n):
        s = rng.choice(scenes)
        k = i % 6
        if code_every and i % code_every == code_every - 1:
            out.append((CODING.prompt(s), s.code()))
        elif k == 0:
            out.append(s.description())
        elif k == 1:  # several captioned SVGs, one a line: each must follow its own caption
            out.append("\n".join([s.code()] + [rng.choice(scenes).code() for _ in range(CAPTIONED_PER_DOC - 1)]))
        elif k == 2:  # the text form of grounding ("Describe: <image>")
            out.append((f"Describe: {s.description()}", s.description()))
        elif k == 3:
            out.append((f"Repeat: {s.svg()}", s.svg()))
        else:
            a = rng.choice(ATTRIBUTES)
            out.append((QUESTIONS[a].format(d=s.description()), s.attrs[a]))
    return out
