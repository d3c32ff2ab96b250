"""MMCode (Li et al., EMNLP 2024): programming problems with images -> a Python program, pass@1.

Data: the Hub dataset `likaixin/MMCode`, file `mmcode_test.jsonl.gz` (one JSON object per line,
as the benchmark's `utils.load_problems_from_jsonl` reads it), or the benchmark's folder layout
(`<problem_id>/data.json` + `<problem_id>/images/<n>.png`, `utils.load_problems_from_folder`).
Fields used: problem_id, question (images as markdown, e.g. ![image](1.png)), images (base64
PNGs), input_output (JSON: inputs, outputs, optional fn_name), starter_code, data_split.

Posed as the benchmark's `generate.py` + `models.GPT4V` pose it: its system prompt, its instruction
prefix before `generate_prompt`'s text, the images interleaved where the question's markdown
references them (images shorter than 480 px upscaled to 480 px high), 2048 new tokens; the code is
the first ```python block of the answer, else the whole answer (`extract_code`). Scored by
mmcode_harness.py with the official harness's semantics. The benchmark samples at temperature
0.001; viscodex decodes greedily (the same text up to ties in the top token).
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import re
from pathlib import Path

from .. import sandbox
from . import mmcode_harness as harness
from .tasks import SAMPLE_SOURCE, SAMPLES_DIR, EvalError, EvalSample, Task, iter_jsonl, limited, register

HUB_ID = "likaixin/MMCode"
HUB_FILE = "mmcode_test.jsonl.gz"
SAMPLE_FILE = SAMPLES_DIR / "mmcode_sample.jsonl"
SYSTEM_PROMPT = ("You are a professional programming contester trying to solve algorithmic problems. The problems "
                 "come with a description and some images, and you should write a Python solution.")
INSTRUCTION = ("You are required to solve a programming problem. Please enclose your code inside a ```python``` block. "
               " Do not write a main() function. If Call-Based format is used, return the result in an appropriate "
               "place instead of printing it.\n\n")
IMAGE_REF = re.compile(r"!\[image\]\(.*?\)")
MIN_IMAGE_HEIGHT = 480  # models.resize(image, base_height=480): shorter images are upscaled


def generate_prompt(p: dict, fn_name: str | None) -> str:
    """The benchmark's `generate_prompt`, character for character (its "\\Please" and the missing
    space before "The starter code" included: the paper's numbers were made with this text)."""
    starter = p.get("starter_code") or None
    prompt = "\nQUESTION:\n" + p["question"]
    if not fn_name and not starter:
        prompt += "\nPlease write your code using Standard IO, i.e. input() and print()."
    else:
        prompt += "\\Please write your code using Call-Based format."
    if starter:
        prompt += "The starter code is provided as below. Please finish the code.\n" + starter + "\n"
    return prompt + "\nANSWER:\n"


def _upscale(img):
    from PIL import Image

    w, h = img.size
    if h >= MIN_IMAGE_HEIGHT:
        return img
    return img.resize((int(w * MIN_IMAGE_HEIGHT / h), MIN_IMAGE_HEIGHT), Image.LANCZOS)


def parse_problem(p: dict) -> EvalSample:
    from PIL import Image

    io_spec = p.get("input_output") or {}
    if isinstance(io_spec, str):
        try:
            io_spec = json.loads(io_spec) if io_spec.strip() else {}
        except ValueError as e:
            raise EvalError(f"MMCode problem {p.get('problem_id')}: input_output is not JSON ({e})") from e
    images = []
    for i, b64 in enumerate(p.get("images") or []):
        try:
            images.append(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))
        except Exception as e:  # noqa: BLE001 - name the problem and the image
            raise EvalError(f"MMCode problem {p.get('problem_id')}: image {i} cannot be decoded ({e})") from e
    fn_name = io_spec.get("fn_name") or None
    prompt = INSTRUCTION + generate_prompt(p, fn_name)
    # models.GPT4V places image i after the i-th text segment: one more image than references
    # still fits (at the end); any beyond that is not shown
    images = [_upscale(im) for im in images[:len(IMAGE_REF.split(prompt))]]
    return EvalSample(id=str(p["problem_id"]), prompt=prompt, images=images,
                      reference={"inputs": list(io_spec.get("inputs") or []), "outputs": list(io_spec.get("outputs") or []),
                                 "fn_name": fn_name, "solutions": list(p.get("solutions") or [])})


def read_jsonl(path: Path, split: str | None = "test") -> list[dict]:
    return [p for _, p in iter_jsonl(path) if not split or p.get("data_split", split) == split]


def read_folder(root: Path, split: str | None = "test") -> list[dict]:
    """The benchmark's folder layout: one folder per problem (its name is the problem_id) holding
    data.json and images/<n>.png, in sorted folder order."""
    out = []
    for d in sorted(x for x in root.iterdir() if x.is_dir()):
        data = d / "data.json"
        if not data.is_file():
            raise EvalError(f"{d}: no data.json (an MMCode problem folder holds data.json and images/)")
        try:
            p = json.loads(data.read_text(encoding="utf-8"))
        except ValueError as e:
            raise EvalError(f"{data}: not JSON ({e})") from e
        if split and p.get("data_split", split) != split:
            continue
        pngs = sorted((d / "images").glob("*.png"), key=lambda f: int(f.stem)) if (d / "images").is_dir() else []
        p.update(problem_id=d.name, images=[base64.b64encode(f.read_bytes()).decode() for f in pngs])
        out.append(p)
    return out


class MMCode(Task):
    name = "mmcode"
    title = "MMCode (image + problem -> Python program)"
    dataset_id = HUB_ID
    dataset_name = "MMCode"
    split = "test"
    metric = "pass@1"
    metric_name = "pass@1"
    official = True  # the official harness's semantics (mmcode_harness.py)
    max_new_tokens = 2048
    version = 2

    def __init__(self, timeout: float = harness.PROBLEM_TIMEOUT, mem_mb: int = harness.MEM_MB):
        self.timeout, self.mem_mb = timeout, mem_mb

    def load(self, source: str | None = None, limit: int | None = None) -> list[EvalSample]:
        if source == SAMPLE_SOURCE:
            path = SAMPLE_FILE
        elif source:
            path = Path(source).expanduser()
            if path.is_dir() and not (path / HUB_FILE).is_file() and any(path.glob("*/data.json")):
                problems = read_folder(path, split=self.split)
                if not problems:
                    raise EvalError(f"{path}: no problems of split {self.split!r}")
                return [parse_problem(p) for p in limited(problems, limit)]
            if path.is_dir():
                path = path / HUB_FILE
            if not path.is_file():
                raise EvalError(f"{path}: no MMCode file (expected {HUB_FILE}, a .jsonl in its format, or the "
                                "benchmark's folder of <problem_id>/data.json)")
        else:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(HUB_ID, HUB_FILE, repo_type="dataset"))
        problems = read_jsonl(path, split=self.split)
        if not problems:
            raise EvalError(f"{path}: no problems of split {self.split!r}")
        return [parse_problem(p) for p in limited(problems, limit)]

    def messages(self, sample: EvalSample) -> list[dict]:
        """The benchmark's (models.GPT4V): a system turn, then text and images interleaved where the
        question references them."""
        content: list[dict] = []
        for i, segment in enumerate(IMAGE_REF.split(sample.prompt)):
            if segment:
                content.append({"type": "text", "text": segment})
            if i < len(sample.images):
                content.append({"type": "image"})
        return [{"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
                {"role": "user", "content": content}]

    @contextlib.contextmanager
    def scorer(self):
        sandbox.require()  # refuse before the model loads when generated code cannot be sandboxed
        yield self.score

    def score(self, output: str, sample: EvalSample) -> dict:
        return harness.run_problem(harness.extract_code(output), sample.reference, problem_timeout=self.timeout,
                                   mem_mb=self.mem_mb)


register(MMCode, "mmcode")
