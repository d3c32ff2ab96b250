"""MMCode conformance: viscodex's harness against the benchmark's own checker, verdict by verdict.

Needs a checkout of likaixin2000/MMCode (its testing_utils.py is run as is, in a fresh process per
program, the way its eval.py runs it; nothing of it is copied here):

    git clone https://github.com/likaixin2000/MMCode /tmp/MMCode
    python benchmarks/mmcode_conformance.py --mmcode /tmp/MMCode

Programs: the mini MMCode of tests/test_eval_mmcode.py (accepted, wrong and extra programs).
Prints one line per program with both verdict lists and exits 1 on any difference.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = r"""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from testing_utils import run_test
verdicts = run_test(json.loads(sys.argv[2]), test=sys.argv[3], debug=False)
verdicts = [v.item(0) if isinstance(v, np.ndarray) else v for v in verdicts]  # as eval.py normalises them
print("VERDICTS", json.dumps([int(bool(v)) if isinstance(v, (bool, np.bool_)) else int(v) for v in verdicts]))
"""
EXTRA = {"sum-list": "print(6 if input() == '1 2 3' else 0)\n",
         "total": "class Solution:\n    def total(self, xs):\n        return (sum(xs),)\n"}


def official_verdicts(mmcode: Path, problem: dict, program: str) -> list[int] | str:
    r = subprocess.run([sys.executable, "-c", OFFICIAL, str(mmcode), json.dumps(problem), program],
                       capture_output=True, text=True, timeout=120, cwd=mmcode)
    found = [line for line in r.stdout.splitlines() if line.startswith("VERDICTS ")]
    return json.loads(found[-1][9:]) if found else f"no verdicts ({r.stderr.strip()[-200:]})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mmcode", type=Path, required=True, help="a checkout of likaixin2000/MMCode")
    ap.add_argument("--with-slow", action="store_true", help="also the 7 s program (both sides wait for it)")
    args = ap.parse_args(argv)
    if not (args.mmcode / "testing_utils.py").is_file():
        ap.error(f"--mmcode {args.mmcode}: no testing_utils.py there (clone likaixin2000/MMCode)")
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from test_eval_mmcode import ACCEPTED, PROBLEMS, WRONG

    from viscodex.evaluation.mmcode import MMCode, parse_problem

    task, problems = MMCode(), {p["problem_id"]: p for p in PROBLEMS}
    differ = 0
    for kind, programs in (("accepted", ACCEPTED), ("wrong", WRONG), ("extra", EXTRA)):
        for pid, program in programs.items():
            if pid == "slow" and not args.with_slow:
                continue
            theirs = official_verdicts(args.mmcode, problems[pid], program)
            ours = task.score(f"```python\n{program}```", parse_problem(problems[pid]))["verdicts"]
            same = theirs == ours
            differ += not same
            print(f"{kind:9s} {pid:10s} official {theirs}  viscodex {ours}  {'same' if same else 'DIFFERENT'}")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
