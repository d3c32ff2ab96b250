"""MMCode (Li et al., EMNLP 2024): programming problems with images -> a Python program, pass@1.

Data: the Hub dataset `likaixin/MMCode`, file `mmcode_test.jsonl.gz` (one JSON object per line;
read the same way as the benchmark's own `utils.load_problems_from_jsonl`). Fields used:
  problem_id, question (images referenced as markdown, e.g. ![image](1.png)), images (base64 PNGs),
  input_output (JSON string or object: {"inputs": [...], "outputs": [...], "fn_name"?: str}),
  starter_code (optional), data_split ("test" in the test file).
The prompt follows the benchmark's `generate_prompt` (QUESTION / call format / ANSWER), plus a
request for one ```python block.

Scoring (greedy decoding, one program per problem): the program passes when every test passes.
  - standard IO: each test is one run of the program in the sandbox with the input as stdin; the
    output matches when its lines, stripped, are equal, or else when the whitespace-separated tokens
    are equal with numbers compared to 1e-6 (relative or absolute).
  - call-based (`fn_name`): the program is run once per test and a trusted driver, run after it,
    calls `fn_name(*inputs)` (or `Solution().fn_name`) and writes the JSON result; it matches when
    it equals the expected value or the expected value's single element (the benchmark's outputs
    are often wrapped in a list); tuples count as lists.
Tests stop at the first failure. Each run has its own time and memory limit (the sandbox's). The
expected outputs never enter the sandbox: the child gets the program, its stdin (or call.json with
the function name and arguments) and nothing else; the comparison happens here, in the parent.
"""
from __future__ import annotations

import base64
import contextlib
import gzip
import io
import json
import math
from pathlib import Path

from .. import sandbox
from .tasks import SAMPLE_SOURCE, SAMPLES_DIR, EvalError, EvalSample, Task, extract_code, limited, register

HUB_ID = "likaixin/MMCode"
HUB_FILE = "mmcode_test.jsonl.gz"
SAMPLE_FILE = SAMPLES_DIR / "mmcode_sample.jsonl"
TEST_TIMEOUT = 6.0  # seconds per test run
MEM_MB = 1024

CALL_DRIVER = r'''
import json
with open("call.json") as f:
    call = json.load(f)
fn, args = call["fn_name"], call["args"]
g = user_globals
if "Solution" in g and hasattr(g["Solution"], fn):
    target = getattr(g["Solution"](), fn)
elif fn in g:
    target = g[fn]
else:
    raise NameError(f"the program defines no function {fn!r}")
res = target(*args)
def plain(x):
    if isinstance(x, (tuple, list)):
        return [plain(v) for v in x]
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    return x
with open("result.json", "w") as f:
    json.dump({"result": plain(res)}, f)
'''


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
    starter = p.get("starter_code") or ""
    fn_name = io_spec.get("fn_name")
    prompt = "\nQUESTION:\n" + p["question"]
    if not fn_name and not starter:
        prompt += "\nPlease write your code using Standard IO, i.e. input() and print()."
    else:
        prompt += "\nPlease write your code using Call-Based format."
    if starter:
        prompt += " The starter code is provided as below. Please finish the code.\n" + starter + "\n"
    prompt += "\nReply with one complete Python program in a ```python code block.\nANSWER:\n"
    return EvalSample(id=str(p["problem_id"]), prompt=prompt, images=images,
                      reference={"inputs": list(io_spec.get("inputs") or []), "outputs": list(io_spec.get("outputs") or []),
                                 "fn_name": fn_name, "solutions": list(p.get("solutions") or [])})


def read_jsonl(path: Path, split: str | None = "test") -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    out = []
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                p = json.loads(line)
            except ValueError as e:
                raise EvalError(f"{path}:{n}: not JSON ({e})") from e
            if split and p.get("data_split", split) != split:
                continue
            out.append(p)
    return out


# ---------------------------------------------------------------- comparing outputs
def _num(tok: str) -> float | None:
    try:
        x = float(tok)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def stdout_matches(got: str, expected) -> bool:
    if isinstance(expected, list):
        expected = "\n".join(map(str, expected))
    expected = str(expected)
    lines = lambda s: [ln.strip() for ln in s.strip().splitlines()]  # noqa: E731
    if lines(got) == lines(expected):
        return True
    a, b = got.split(), expected.split()
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x == y:
            continue
        fx, fy = _num(x), _num(y)
        if fx is None or fy is None or not math.isclose(fx, fy, rel_tol=1e-6, abs_tol=1e-6):
            return False
    return True


def _plain(x):
    if isinstance(x, (tuple, list)):
        return [_plain(v) for v in x]
    return x


def call_matches(got, expected) -> bool:
    got = _plain(got)
    if got == _plain(expected):
        return True
    return isinstance(expected, list) and len(expected) == 1 and got == _plain(expected[0])


def run_tests(code: str, reference: dict, *, timeout: float = TEST_TIMEOUT, mem_mb: int = MEM_MB) -> dict:
    """Run a program on a problem's tests in the sandbox; stop at the first failure."""
    inputs, outputs, fn = reference["inputs"], reference["outputs"], reference.get("fn_name")
    if not inputs or len(inputs) != len(outputs):
        return {"score": 0.0, "passed": 0.0, "tests": float(len(inputs)), "message": "the problem has no usable tests"}
    passed, message, kind = 0, "", "ok"
    for i, (inp, exp) in enumerate(zip(inputs, outputs)):
        if fn:
            r = sandbox.run_python(code, timeout=timeout, mem_mb=mem_mb, outputs=["result.json"],
                                   files={"call.json": json.dumps({"fn_name": fn, "args": inp}).encode()},
                                   teardown=CALL_DRIVER)
            ok = r.ok and call_matches(json.loads(r.outputs["result.json"])["result"], exp)
        else:
            stdin = "\n".join(map(str, inp)) if isinstance(inp, list) else str(inp)
            r = sandbox.run_python(code, timeout=timeout, mem_mb=mem_mb, stdin=stdin)
            ok = r.ok and stdout_matches(r.stdout, exp)
        if not ok:
            kind = r.kind if not r.ok else "wrong_answer"
            message = f"test {i + 1}: " + (r.message if not r.ok else "wrong answer")
            break
        passed += 1
    n = len(inputs)
    return {"score": float(passed == n), "passed": passed / n, "tests": float(n),
            "timeout": float(kind == "timeout"), "message": message}


class MMCode(Task):
    name = "mmcode"
    title = "MMCode (image + problem -> Python program)"
    dataset_id = HUB_ID
    dataset_name = "MMCode"
    split = "test"
    metric = "pass@1"
    metric_name = "pass@1"
    max_new_tokens = 1024

    def __init__(self, timeout: float = TEST_TIMEOUT, mem_mb: int = MEM_MB):
        self.timeout, self.mem_mb = timeout, mem_mb

    def load(self, source: str | None = None, limit: int | None = None) -> list[EvalSample]:
        if source == SAMPLE_SOURCE:
            path = SAMPLE_FILE
        elif source:
            path = Path(source).expanduser()
            if path.is_dir():
                path = path / HUB_FILE
            if not path.is_file():
                raise EvalError(f"{path}: no MMCode file (expected {HUB_FILE} or a .jsonl in its format)")
        else:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(HUB_ID, HUB_FILE, repo_type="dataset"))
        problems = read_jsonl(path, split=self.split)
        if not problems:
            raise EvalError(f"{path}: no problems of split {self.split!r}")
        return [parse_problem(p) for p in limited(problems, limit)]

    @contextlib.contextmanager
    def scorer(self):
        sandbox.require()  # refuse before the model loads when generated code cannot be sandboxed
        yield self.score

    def score(self, output: str, sample: EvalSample) -> dict:
        code = extract_code(output, "python")
        if not code.strip():
            return {"score": 0.0, "passed": 0.0, "tests": float(len(sample.reference["inputs"])), "timeout": 0.0,
                    "message": "no code in the answer"}
        return run_tests(code, sample.reference, timeout=self.timeout, mem_mb=self.mem_mb)


register(MMCode, "mmcode")
