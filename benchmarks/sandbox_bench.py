"""Per-run cost of the code sandbox (issue 13) against a bare `python -c`.

Each case is timed from the caller's side (wall clock of the whole call, subprocess start to
return), interleaved, `--repeats` times; the table shows medians and the overhead over the bare
run of the same program:
  - print: `print(1)`                      bare `python -I -c` vs `run_python` (netns "auto" and "hook")
  - numpy: `import numpy; ...`             bare vs `run_python`
  - chart: a matplotlib bar chart to PNG   bare (same setup/teardown snippets) vs `render_chart`
plus the one-off capability probe (`sandbox.status()`, once per process).

    python benchmarks/sandbox_bench.py --repeats 20 [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from viscodex import sandbox  # noqa: E402

PROGRAMS = {
    "print": "print(1)",
    "numpy": "import numpy as np\nprint(float(np.linalg.norm(np.arange(1000.0))))",
    "chart": "import matplotlib.pyplot as plt\nplt.bar(['a', 'b', 'c'], [3, 1, 2])\nplt.title('t')\n",
}


def bare(code: str, chart: bool) -> float:
    """The same program in a plain `python -I -c` (chart: the sandbox's own setup/teardown
    snippets, so both draw and save the same PNG), in a fresh temporary folder."""
    src = (sandbox._CHART_SETUP + code + sandbox._CHART_TEARDOWN) if chart else code
    with tempfile.TemporaryDirectory() as d:
        env = {"PATH": "/usr/bin:/bin", "HOME": d, "MPLBACKEND": "Agg", "MPLCONFIGDIR": os.path.join(d, ".mpl"),
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        t = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-c", src], cwd=d, env=env, check=True, capture_output=True)
        return time.perf_counter() - t


def boxed(code: str, chart: bool, isolation: str) -> float:
    t = time.perf_counter()
    if chart:
        r = sandbox.render_chart(code, timeout=60, network_isolation=isolation)
        assert r.png, r.message
    else:
        r = sandbox.run_python(code, timeout=60, network_isolation=isolation)
        assert r.ok, r.message
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    t = time.perf_counter()
    st = sandbox.status()
    probe_s = time.perf_counter() - t
    print(st.line)
    if not st.ok:
        sys.exit("the sandbox is unavailable here: nothing to measure")
    cases = {}
    for name, code in PROGRAMS.items():
        chart = name == "chart"
        runs = {"bare": [], "sandbox (auto: + netns)" if sandbox.netns_prefix() else "sandbox (auto)": [],
                "sandbox (hook: no netns)": []}
        for _ in range(args.repeats):  # interleaved, so drift in the machine's load hits all alike
            for label in runs:
                if label == "bare":
                    runs[label].append(bare(code, chart))
                else:
                    runs[label].append(boxed(code, chart, "hook" if "hook" in label else "auto"))
        cases[name] = runs
    print(f"\ncapability probe (once per process): {probe_s * 1000:.0f} ms\n")
    print("| program | run | median ms | overhead vs bare |")
    print("|---|---|---:|---:|")
    for name, runs in cases.items():
        base = statistics.median(runs["bare"])
        for label, xs in runs.items():
            m = statistics.median(xs)
            over = "" if label == "bare" else f"{(m - base) * 1000:+.0f} ms ({m / base:.2f}x)"
            print(f"| {name} | {label} | {m * 1000:.0f} | {over} |")
    if args.json:
        args.json.write_text(json.dumps({"status": st.line, "probe_s": probe_s, "repeats": args.repeats,
                                         "runs_s": cases}, indent=1))


if __name__ == "__main__":
    main()
