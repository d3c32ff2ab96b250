"""ChartMimic conformance: viscodex's low-level metrics against the benchmark's own evaluators, pair by pair.

Needs a checkout of ChartMimic/ChartMimic (its code_interpreter.py and TextEvaluator,
ChartTypeEvaluator, ColorEvaluator, LayoutEvaluator run as they are, on the pairs of
tests/chartmimic_cases.py; nothing of them is copied here) and the packages they import that
viscodex does not (colormath, python-dotenv, scikit-image), e.g. in a folder given to --deps:

    git clone https://github.com/ChartMimic/ChartMimic /tmp/ChartMimic
    pip install --target /tmp/cmdeps colormath python-dotenv scikit-image
    python benchmarks/chartmimic_conformance.py --chartmimic /tmp/ChartMimic --deps /tmp/cmdeps

--pinned DIR runs the benchmark's side with the libraries it pinned (e.g. `pip install --no-deps
--target DIR matplotlib==3.8.4 networkx==3.2.1 squarify==0.4.3 matplotlib-venn==0.11.10`);
viscodex's side always runs with the installed ones. Prints one line per pair with both sides'
four F1s and exits 1 on any difference larger than 1e-6.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Shims for running the benchmark's code with newer libraries (no effect with its pinned ones):
# matplotlib >= 3.9 renamed the line factory its colour prefix wraps (by name: `_makeline`); with
# numpy >= 2 the text evaluator's logged positions print as np.float64(...), which its eval needs
# `np` for.
SHIM = """try:
    from matplotlib.axes._base import _process_plot_var_args as _P
    if not hasattr(_P, "_makeline"):
        _make_line = _P._make_line

        def _makeline(self, axes, x, y, kw, kwargs):
            return _make_line(self, axes, x, y, kw, kwargs)
        _P._makeline = _makeline
        _P._make_line = lambda self, *a, **k: self._makeline(*a, **k)
except Exception:
    pass
"""
# run in the checkout's folder layout: code_interpreter's transform, then the four evaluators
OFFICIAL = r"""
import json, os, sys
import pandas as pd
sys.path.insert(0, os.environ["PROJECT_PATH"])
sys.path.insert(0, os.environ["PROJECT_PATH"] + "/chart2code/utils/post_process")
import code_interpreter as ci
import numpy
import chart2code.utils.evaluator.text_evaluator as text_evaluator
from chart2code.utils.evaluator.text_evaluator import TextEvaluator
text_evaluator.np = numpy  # see SHIM
from chart2code.utils.evaluator.chart_type_evaluator import ChartTypeEvaluator
from chart2code.utils.evaluator.color_evaluator import ColorEvaluator
from chart2code.utils.evaluator.layout_evaluator import LayoutEvaluator
golden, answer_file = sys.argv[1], sys.argv[2]
ci.input_file = answer_file
ci.output_dir = answer_file[:-5] + "/direct"
os.makedirs(ci.output_dir, exist_ok=True)
ci._muti_process_run(0, pd.read_json(answer_file, lines=True))
generated = ci.output_dir + "/" + os.path.basename(golden)
out = {}
for key, ev in (("text", TextEvaluator(use_position=False, use_axs=False)), ("type", ChartTypeEvaluator()),
                ("color", ColorEvaluator()), ("layout", LayoutEvaluator())):
    try:
        ev(generation_code_file=generated, golden_code_file=golden)
        out[key] = ev.metrics["f1"]
    except Exception as e:
        out[key] = f"{type(e).__name__}: {e}"
print("F1S", json.dumps(out))
"""


def official_f1s(project: Path, env: dict, name: str, golden: str, answer: str, work: Path) -> dict | str:
    gfile = project / "dataset" / "ori_500" / f"{name}.py"
    gfile.write_text(golden)
    answers = work / f"answers_{len(list(work.iterdir()))}.json"
    answers.write_text(json.dumps({"file": f"{name}.pdf", "response": answer}) + "\n")
    r = subprocess.run([sys.executable, "-c", OFFICIAL, str(gfile), str(answers)], capture_output=True, text=True,
                       timeout=600, cwd=project, env=env, check=False)
    found = [line for line in r.stdout.splitlines() if line.startswith("F1S ")]
    return json.loads(found[-1][4:]) if found else f"no result ({r.stderr.strip()[-300:]})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chartmimic", type=Path, required=True, help="a checkout of ChartMimic/ChartMimic")
    ap.add_argument("--deps", type=Path, help="a folder with colormath, python-dotenv, scikit-image (pip --target)")
    ap.add_argument("--pinned", type=Path, help="a folder with the benchmark's pinned matplotlib, networkx, ...")
    ap.add_argument("--only", nargs="*", help="run these pairs only (names in tests/chartmimic_cases.py)")
    args = ap.parse_args(argv)
    if not (args.chartmimic / "chart2code" / "utils" / "evaluator" / "color_evaluator.py").is_file():
        ap.error(f"--chartmimic {args.chartmimic}: no chart2code/utils/evaluator there (clone ChartMimic/ChartMimic)")
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from chartmimic_cases import ANSWERS, GOLDEN

    from viscodex.evaluation.chartmimic import ChartMimic
    from viscodex.evaluation.tasks import EvalSample

    with tempfile.TemporaryDirectory(prefix="chartmimic-conformance-") as d:
        project, work, shim = Path(d) / "project", Path(d) / "work", Path(d) / "shim"
        for part in ("chart2code", "eval_configs"):
            shutil.copytree(args.chartmimic / part, project / part)
        (project / "dataset" / "ori_500").mkdir(parents=True)
        work.mkdir()
        shim.mkdir()
        (shim / "sitecustomize.py").write_text(SHIM)
        path = [str(p) for p in (args.pinned, shim, args.deps) if p] + [os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PROJECT_PATH": str(project), "PYTHONPATH": os.pathsep.join(filter(None, path)),
               "MPLBACKEND": "Agg"}
        task, differ = ChartMimic(timeout=120), 0
        for case, (name, answer) in ANSWERS.items():
            if args.only and case not in args.only:
                continue
            theirs = official_f1s(project, env, name, GOLDEN[name], answer, work)
            ours = task.score(answer, EvalSample(id=name, prompt="", reference={"code": GOLDEN[name]}))
            ours = {k: ours[k] for k in ("text", "type", "color", "layout")}
            same = isinstance(theirs, dict) and all(isinstance(theirs[k], float | int) and abs(theirs[k] - v) <= 1e-6
                                                    for k, v in ours.items())
            differ += not same
            print(f"{'same  ' if same else 'DIFFER'} {case:16s} viscodex {json.dumps(ours)}  benchmark {json.dumps(theirs)}",
                  flush=True)
    print(f"{differ} pair(s) differ")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
