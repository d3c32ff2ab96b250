"""MMCode with the official harness's semantics (issue 15), on a local mini MMCode in the
benchmark's own file format (`mmcode_test.jsonl.gz`): programs the official checker accepts pass,
wrong ones fail, a program hunting for the expected outputs fails; predictions made elsewhere are
scored with no model (`viscodex eval --predictions`)."""
from __future__ import annotations

import gzip
import json

import pytest
from typer.testing import CliRunner

from viscodex.cli import app
from viscodex.evaluation.mmcode import MMCode
from viscodex.evaluation.mmcode_harness import call_matches, module_source, stdio_matches, wrap_stdio


def problem(pid, question, inputs, outputs, fn_name=None, starter=""):
    io_spec = {"inputs": inputs, "outputs": outputs, **({"fn_name": fn_name} if fn_name else {})}
    return {"problem_id": pid, "question": question, "images": [], "input_output": json.dumps(io_spec),
            "starter_code": starter, "data_split": "test", "image_tags": ["table"]}


PROBLEMS = [
    problem("sum-list", "Print the sum of the numbers on the line.", ["1 2 3\n", "10 -4\n"], ["6\n", "6\n"]),
    problem("total", "Return the sum.", [[[1, 2, 3]], [[5]]], [[6], [5]], fn_name="total", starter="def total(xs):"),
    problem("pairs", "Print the pairs.", ["3\n"], ["1 2\n3 4\n5 6\n"]),
    problem("third", "Print n/3.", ["1\n", "2\n"], ["0.3333333333\n", "0.6666666667\n"]),
    problem("slow", "Print the input.", ["7\n"], ["7\n"]),
    problem("echo-all", "Print every line reversed.", ["a\nb\n"], ["b\na\n"]),
]
ACCEPTED = {  # programs the official harness accepts and viscodex's old checker rejected
    "sum-list": "def f(xs: List[int]) -> int:\n    return sum(xs)\nprint(f(list(map(int, input().split()))))\n",
    "total": "def total(xs):\n    return np.sum(np.array(xs))\n",  # a numpy integer, no import (the header's np)
    "pairs": "print('6 5')\nprint('4 3')\nprint('2 1')\n",  # lines and tokens in another order
    "third": "n = int(input())\nprint(round(n / 3, 3))\n",  # equal after rounding to 3 decimals
    "slow": "import time\ntime.sleep(7)\nprint(input())\n",  # over viscodex's old 6 s limit, inside 20 s
    "echo-all": "lines = open(0).read().split()\nprint('\\n'.join(reversed(lines)))\n",  # open(0) reads the input
}
WRONG = {
    "sum-list": "print(sum(map(int, input().split())) + 1)\n",
    "total": "def total(xs):\n    return len(xs)\n",
    "pairs": "print('1 2')\nprint('3 4')\n",
    "third": "print(int(input()) / 4)\n",
    "slow": "while True:\n    pass\n",
    "echo-all": "print(input())\n",
}


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini_mmcode")
    with gzip.open(root / "mmcode_test.jsonl.gz", "wt", encoding="utf-8") as f:
        for p in PROBLEMS:
            f.write(json.dumps(p) + "\n")
    return root


@pytest.mark.slow
def test_programs_the_official_harness_accepts_pass_and_wrong_ones_fail(mini):
    task = MMCode(timeout=21.0)
    samples = {s.id: s for s in task.load(str(mini))}
    assert list(samples) == [p["problem_id"] for p in PROBLEMS]
    for pid, code in ACCEPTED.items():
        r = task.score(f"Here it is:\n```python\n{code}```\nDone.", samples[pid])
        assert r["score"] == 1.0 and r["message"] == "", (pid, r)
    for pid, code in WRONG.items():
        if pid == "slow":
            continue  # the 20 s time limit: below, with a shorter limit
        r = task.score(f"```python\n{code}```", samples[pid])
        assert r["score"] == 0.0 and r["message"] == "test 1: wrong answer", (pid, r)
    loop = MMCode(timeout=2.0).score(f"```python\n{WRONG['slow']}```", samples["slow"])
    assert loop["score"] == 0.0 and loop["timeout"] == 1.0 and loop["verdicts"] == [-1]
    # every test runs (the benchmark does not stop at the first failure): 1 of 2 passes, pass@1 = 0
    half = task.score("```python\nprint(6 if input() == '1 2 3' else 0)\n```", samples["sum-list"])
    assert half["score"] == 0.0 and half["passed"] == 0.5 and half["verdicts"] == [1, 0]
    assert task.score("", samples["sum-list"])["score"] == 0.0
    assert task.score("I cannot solve this.", samples["sum-list"])["verdicts"] == [-2]  # not Python: -2


def test_a_program_hunting_for_the_expected_outputs_fails(mini):
    task = MMCode()
    s = task.load(str(mini))[0]
    data = mini / "mmcode_test.jsonl.gz"
    opener = ("import gzip, io, json\nfor line in gzip.GzipFile(fileobj=io.FileIO(%r)):\n"
              "    p = json.loads(line)\n    if p['problem_id'] == 'sum-list':\n"
              "        print(json.loads(p['input_output'])['outputs'][0])\n" % str(data))
    r = task.score(f"```python\n{opener}```", s)
    assert r["score"] == 0.0 and "PermissionError" in r["message"], r
    walker = ("import os\nfound = []\nfor top in ('/', '/tmp', %r):\n    try:\n"
              "        for d, _, files in os.walk(top):\n"
              "            found += [os.path.join(d, f) for f in files if f.startswith('mmcode_test')]\n"
              "    except OSError:\n        pass\nprint(found[0] if found else 'none')\n" % str(mini))
    r = task.score(f"```python\n{walker}```", s)
    assert r["score"] == 0.0 and r["message"] == "test 1: wrong answer"
    # open() of the data file returns the test's input (the benchmark patches open), never the file
    r = task.score("```python\nprint(open(%r).read().split()[0])\n```" % str(data), s)
    assert r["verdicts"] == [0, 0]


def test_comparison_follows_the_official_cascade():
    assert stdio_matches(["19"], "19\n") and stdio_matches(["1 2  ", "3", ""], "1 2\n3")
    assert stdio_matches(["0.3333331"], "0.333333") and not stdio_matches(["0.33"], "0.3334")  # allclose rtol 1e-5
    assert stdio_matches(["0.333"], "0.33333") and not stdio_matches(["0.334"], "0.3333")  # rounded to 3 decimals
    assert stdio_matches(["b a", "c"], ["c", "a b"]) and stdio_matches(["a a b"], "b a")  # token sets, no counts
    assert not stdio_matches(["1 2"], "1 2 3") and not stdio_matches([], "1")
    assert call_matches([1, 2], [[1, 2]]) and call_matches(6, [6]) and call_matches([[1, 2]], [[[1, 2]]])
    assert call_matches({1: "a"}, {"1": "a"}) and not call_matches({"x": 1}, {"x": 2})
    assert not call_matches([(1, 2)], [1, 2]) and call_matches([(1, 2)], [[[1, 2]]])
    # the benchmark's rewrite: imports at the top stay, the rest goes into code()
    assert wrap_stdio("import os\nx = 1\nprint(x)") == (
        "import os\nstdin = sys.stdin\nstdout = sys.stdout\ndef code():\n\tx = 1\n\tprint(x)\n")
    src = module_source("if __name__ == '__main__':\n    print(1)", call_based=False)
    assert src.startswith("import sys\nimport time\n") and "from typing import List, Tuple\nimport numpy as np\n" in src
    assert "__name__ == 'tmp_sol'" in src


def test_predictions_are_scored_without_a_model(mini, tmp_path):
    preds = tmp_path / "preds.jsonl"
    lines = [{"id": pid, "response": f"```python\n{code}```"} for pid, code in ACCEPTED.items() if pid != "slow"]
    lines[2]["response"] = f"```python\n{WRONG['pairs']}```"
    preds.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "results.json"
    res = CliRunner().invoke(app, ["eval", "--task", "mmcode", "--source", str(mini), "--predictions", str(preds),
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())["results"][0]
    assert rep["n"] == 6 and rep["score"] == pytest.approx(4 / 6)  # pass@1 as a fraction
    assert rep["missing_predictions"] == ["slow"]
    outcome = {x["id"]: x["scores"]["score"] for x in rep["samples"]}
    assert outcome == {"sum-list": 1.0, "total": 1.0, "pairs": 0.0, "third": 1.0, "slow": 0.0, "echo-all": 1.0}
    assert "1 sample without a prediction (counted as failed): slow" in res.output
    assert "66.67%  pass@1 over 6 samples (predictions made elsewhere)" in res.output
    assert rep["official"] is True and rep["source_kind"] == "local"
    # bad input: one clear line naming the file and the problem
    bad = tmp_path / "bad.jsonl"
    for text, msg in [('{"id": "total"}\n', 'bad.jsonl:1: a prediction needs "id" and a string "response"'),
                      ("not json\n", "bad.jsonl:1: not JSON"),
                      ('{"id": "x", "response": ""}\n', "none of its 1 ids is a mmcode sample id"),
                      ('{"id": "total", "response": ""}\n{"id": "total", "response": ""}\n',
                       "bad.jsonl:2: a second prediction for id 'total'")]:
        bad.write_text(text)
        res = CliRunner().invoke(app, ["eval", "--task", "mmcode", "--source", str(mini), "--predictions", str(bad),
                                       "--out", str(tmp_path / "r.json")])
        assert res.exit_code == 2 and msg in res.output, res.output
    res = CliRunner().invoke(app, ["eval", "--task", "mmcode", "--out", str(tmp_path / "r.json")])
    assert res.exit_code == 2 and "give a MODEL to evaluate or --predictions FILE" in res.output
