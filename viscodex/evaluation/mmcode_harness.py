"""MMCode's official test harness semantics (`testing_utils.run_test` and `eval.check_correctness`
in likaixin2000/MMCode), reimplemented: the parent half.

One problem = one sandboxed process running every test (mmcode_child.py), like the benchmark's
one worker process per problem: a 20 s alarm per test, 21 s for the whole problem (plus a start-up
allowance for the fresh interpreter, which the benchmark's forked worker does not pay). Built here:
the module text (the benchmark's import header + the program; standard-IO programs wrapped into a
`code()` function exactly as the benchmark wraps them; "__main__" renamed "tmp_sol"). Compared
here, never in the child: the outputs, with the benchmark's cascade of lenient checks. A problem
passes (pass@1) when every test passes. docs/eval.md lists what still differs.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from .. import sandbox

TEST_TIMEOUT = 20  # the benchmark's per-test alarm (testing_utils.timeout)
PROBLEM_TIMEOUT = 21.0  # eval.py: p.join(timeout=TIMEOUT + 1) for the whole problem
STARTUP_ALLOWANCE = 1.0  # a fresh sandboxed interpreter + the header's numpy import (the benchmark forks)
MEM_MB = 4096  # the benchmark sets no memory limit; the sandbox needs one
CHILD_SCRIPT = Path(__file__).with_name("mmcode_child.py")

# testing_utils.run_test prepends these imports to every program
HEADER = ("import sys\nimport time\nimport itertools\nfrom itertools import accumulate, product, permutations, "
          "combinations\nimport collections\nfrom collections import Counter, OrderedDict, deque, defaultdict, "
          "ChainMap\nfrom functools import lru_cache\nimport math\nfrom math import sqrt, sin, cos, tan, ceil, fabs, "
          "floor, gcd, exp, log, log2\nimport fractions\nfrom typing import List, Tuple\nimport numpy as np\n"
          "import random\nimport heapq\nfrom heapq import *\n")
_FENCE = re.compile(r"```python(.*?)```", re.S)


def extract_code(response: str) -> str:
    """The benchmark's `extract_code`: the first ```python ... ``` block as is, else the whole answer."""
    m = _FENCE.search(response)
    return m.group(1) if m else response


def _is_import(line: str) -> bool:
    return line.startswith("from ") or line.startswith("import ")


def wrap_stdio(program: str) -> str:
    """The benchmark's rewrite of a standard-IO program: top-of-file import lines stay at module
    level, every other line is indented by a tab into `def code():` (imports after the first body
    line too), preceded by `stdin = sys.stdin` and `stdout = sys.stdout`."""
    out, started = [], False
    for line in program.split("\n"):
        if _is_import(line):
            out.append(("\t" if started else "") + line + "\n")
            continue
        if not started:
            out.append("stdin = sys.stdin\nstdout = sys.stdout\ndef code():\n")
            started = True
        out.append("\t" + line + "\n")
    return "".join(out)


def module_source(program: str, call_based: bool) -> str:
    src = HEADER + (program if call_based else wrap_stdio(program))
    return src.replace("__main__", "tmp_sol")


# ---------------------------------------------------------------- standard IO comparison
def _floats(items) -> list[float] | None:
    try:
        return [float(x) for x in items]
    except (TypeError, ValueError):
        return None


def _allclose(a: list[float], b: list[float]) -> bool:
    """numpy.allclose defaults (rtol 1e-5, atol 1e-8; nan never equal) on equal-length lists."""
    return len(a) == len(b) and all(abs(x - y) <= 1e-8 + 1e-5 * abs(y) if math.isfinite(x) and math.isfinite(y)
                                    else x == y for x, y in zip(a, b))


def _rounded(sets: list[set]) -> set | None:
    try:
        return {frozenset(round(float(t), 3) for t in s) for s in sets}
    except (TypeError, ValueError, OverflowError):
        return None


def stdio_matches(lines: list[str], expected) -> bool:
    """The benchmark's checks for one standard-IO test, in its order; `lines` is the captured
    stdout split into lines, `expected` the test's output (a string, or a list joined by newlines)."""
    try:
        exp = "\n".join(expected) if isinstance(expected, list) else expected
        exp.strip()
    except (TypeError, AttributeError):  # the benchmark's checker raises here and the problem fails
        return False
    # 1. whole text equal after stripping (lines as printed, or each stripped)
    if "\n".join(lines).strip() == exp.strip() or "\n".join(x.strip() for x in lines).strip() == exp.strip():
        return True
    # 2. a single printed line equal to the whole expected text
    if lines == [exp]:
        return True
    # 3./4. expected as its non-empty lines, stripped; output with empty lines dropped
    exp_lines = [x.strip() for x in exp.split("\n") if x]
    if lines == exp_lines or lines == [exp_lines]:
        return True
    kept = [x for x in lines if x]
    if kept == exp_lines:
        return True
    # 5. every line a number: allclose
    a, b = _floats(kept), _floats(exp_lines)
    if a is not None and b is not None and _allclose(a, b):
        return True
    # 6. order-insensitive: the set of each line's token set (empty output lines dropped)
    exp_sets = [set(x.split()) for x in exp_lines]
    out_sets = [set(x.split()) for x in kept if x.split()]
    if {frozenset(s) for s in out_sets} == {frozenset(s) for s in exp_sets}:
        return True
    # 7. the same with every token a number rounded to 3 decimals
    ra, rb = _rounded(out_sets), _rounded(exp_sets)
    return ra is not None and ra == rb


# ---------------------------------------------------------------- call-based comparison
class _Opaque:
    """A value the child could not express in JSON (an object of the program's own class)."""

    def __init__(self, text: str):
        self.text = text

    def __eq__(self, other):
        return False

    __hash__ = object.__hash__


class _Array:
    """A numpy array the program returned. Comparing one with `==` in the benchmark gives an array
    whose truth value raises unless it holds one element; the test then fails (-1)."""

    def __init__(self, items, size: int):
        self.items, self.size = items, size


def decode(x):
    if isinstance(x, list):
        return [decode(v) for v in x]
    if not isinstance(x, dict):
        return x
    if "t" in x:
        return tuple(decode(v) for v in x["t"])
    if "s" in x:
        return {decode(v) for v in x["s"]}
    if "d" in x:
        return {decode(k): decode(v) for k, v in x["d"]}
    if "a" in x:
        return _Array(decode(x["a"]), int(x.get("size", 0)))
    return _Opaque(str(x.get("r", "")))


def _int_keys(d: dict):
    try:
        return {int(k): v for k, v in d.items()}
    except (TypeError, ValueError):
        return None


def _single(items):
    while isinstance(items, list) and len(items) == 1:
        items = items[0]
    return items


def call_matches(value, expected) -> bool:
    """The benchmark's checks for one call-based test (value: the decoded return value, a top-level
    tuple already a list)."""
    if isinstance(expected, dict) and _int_keys(expected) is not None:  # JSON's string keys undone
        expected = [_int_keys(expected)]
    elif isinstance(expected, list) and expected and isinstance(expected[0], dict) and _int_keys(expected[0]) is not None:
        expected = [_int_keys(expected[0])]
    if isinstance(value, _Array):
        if value.size != 1:
            return False
        value = _single(value.items)  # one element: the comparison broadcasts it
    ok = value == expected
    if isinstance(expected, list) and expected:
        ok = ok or value == expected[0]
    if isinstance(value, list) and value and isinstance(value[0], tuple):
        try:  # "ground truth sequences are not tuples"
            ok = ok or [list(x) for x in value] == expected[0]
        except (TypeError, IndexError, KeyError):
            pass
    return bool(ok)


# ---------------------------------------------------------------- running one problem
def run_problem(program: str, reference: dict, *, problem_timeout: float = PROBLEM_TIMEOUT,
                test_timeout: int = TEST_TIMEOUT, mem_mb: int = MEM_MB) -> dict:
    """Score one program on one problem: pass@1 as `score` (1.0 when every test passes), the
    fraction of tests passed, and a per-test verdict list (1 pass, 0 wrong, -1 error/time, -2 load)."""
    inputs, outputs, fn = reference["inputs"], reference["outputs"], reference.get("fn_name")
    n = len(inputs)
    if not n or n != len(outputs):
        return {"score": 0.0, "passed": 0.0, "tests": float(n), "timeout": 0.0, "verdicts": [],
                "message": "the problem has no usable tests"}
    job = {"mode": "call" if fn else "stdio", "fn_name": fn, "inputs": inputs, "test_timeout": int(test_timeout),
           "has_solution_class": "class Solution" in program}
    r = sandbox.run_python(CHILD_SCRIPT.read_text(encoding="utf-8"), timeout=problem_timeout + STARTUP_ALLOWANCE,
                           mem_mb=mem_mb, outputs=["result.json"],
                           files={"module.py": module_source(program, bool(fn)).encode(),
                                  "job.json": json.dumps(job).encode()})
    if not r.ok:  # the benchmark's global timeout or a dead worker: every test failed
        return {"score": 0.0, "passed": 0.0, "tests": float(n), "timeout": float(r.kind == "timeout"),
                "verdicts": [-1] * n, "message": r.message}
    got = json.loads(r.outputs["result.json"])
    if got.get("load") != "ok":
        return {"score": 0.0, "passed": 0.0, "tests": float(n), "timeout": 0.0, "verdicts": [-2],
                "message": f"the program did not load: {got.get('load')}"}
    verdicts, first = [], ""
    for i, (t, exp) in enumerate(zip(got["tests"], outputs)):
        if "error" in t:
            v, why = -1, t["error"]
        elif fn:
            v, why = int(call_matches(decode(t["value"]), exp)), "wrong answer"
        else:
            v, why = int(stdio_matches(t["lines"], exp)), "wrong answer"
        verdicts.append(v)
        if v != 1 and not first:
            first = f"test {i + 1}: {why}"
    passed = sum(v == 1 for v in verdicts)
    timeouts = any("time limit" in t.get("error", "") for t in got["tests"])
    return {"score": float(passed == n), "passed": passed / n, "tests": float(n), "timeout": float(timeouts),
            "verdicts": verdicts, "message": first}


__all__ = ["HEADER", "extract_code", "wrap_stdio", "module_source", "stdio_matches", "call_matches", "run_problem"]
