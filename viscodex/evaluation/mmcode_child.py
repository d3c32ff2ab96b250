"""MMCode's test runner, as the sandbox child runs it (this file is sent as the child's script; the
viscodex process never imports it). It reproduces the benchmark's `testing_utils.run_test` for one
problem in one process, as the benchmark does, but only runs and records: it gets `module.py` (the
program as the benchmark rewrites it, built by mmcode_harness.py) and `job.json` (mode, function
name, the tests' inputs, the per-test limit); the expected outputs stay in the parent, which
compares what this writes to `result.json`.

Semantics kept from the benchmark (they change scores): the module is named `tmp_sol`; the
reliability guard disables the same functions before the program loads; a 20 s alarm per test
(and for loading); standard IO runs the wrapped `code()` with `open`, `sys.stdin` and the three
read methods of the original stdin patched by unittest.mock in the same order as the benchmark's
decorators, stdout captured and split into lines, SystemExit swallowed; a call-based return value
has a top-level tuple turned into a list; a runtime error marks the test -1 and the next test runs;
an error while loading marks the problem -2; SystemExit in a call-based test ends the process
(the benchmark's worker dies the same way, and the parent then counts every test failed).
"""
import builtins
import io
import json
import signal
import sys
import types
from unittest import mock

_open, _dumps = builtins.open, json.dumps  # kept before the program can replace them


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout("time limit exceeded")


def guard():
    """The benchmark's reliability guard: the same functions disabled (a courtesy there; the
    sandbox is the protection here), so programs that call them fail here as they fail there."""
    import os
    import shutil
    import subprocess

    builtins.exit = None
    builtins.quit = None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork", "forkpty",
                 "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown", "chmod", "chown",
                 "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir"):
        setattr(os, name, None)
    for name in ("rmtree", "move", "chown"):
        setattr(shutil, name, None)
    subprocess.Popen = None
    builtins.help = None
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[name] = None


def encode(x):
    """JSON that keeps what Python equality distinguishes: tuples, sets, non-string dict keys,
    numpy scalars (as Python numbers) and arrays (tagged, compared in the parent)."""
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, list):
        return [encode(v) for v in x]
    if isinstance(x, tuple):
        return {"t": [encode(v) for v in x]}
    if isinstance(x, (set, frozenset)):
        return {"s": [encode(v) for v in x]}
    if isinstance(x, dict):
        return {"d": [[encode(k), encode(v)] for k, v in x.items()]}
    np = sys.modules.get("numpy")
    if np is not None and isinstance(x, np.ndarray):
        return {"a": encode(x.tolist()), "size": int(x.size)}
    if np is not None and isinstance(x, np.generic):
        return encode(x.item())
    return {"r": repr(x)[:200]}


def run_stdio(method, text):
    lines_iter = iter(text.split("\n"))
    buf = io.StringIO()
    real_stdin, real_stdout = sys.stdin, sys.stdout
    # entered in the order the benchmark's stacked @patch decorators enter them: the three read
    # methods are set on the *original* stdin object (which the wrapper's `stdin = sys.stdin` kept),
    # then sys.stdin becomes a StringIO, then every open() returns the input
    with mock.patch.object(real_stdin, "read", lambda *a: text), \
            mock.patch.object(real_stdin, "readlines", lambda *a: text.split("\n")), \
            mock.patch.object(real_stdin, "readline", lambda *a: next(lines_iter)), \
            mock.patch("sys.stdin", io.StringIO(text)), \
            mock.patch("builtins.open", mock.mock_open(read_data=text)):
        sys.stdout = buf
        try:
            method()
        except SystemExit:
            pass
        finally:
            sys.stdout = real_stdout
    del real_stdin
    return buf.getvalue().splitlines()


def main():
    with _open("job.json") as f:
        job = json.load(f)
    with _open("module.py") as f:
        src = f.read()
    limit = int(job["test_timeout"])
    signal.signal(signal.SIGALRM, _alarm)
    out = {"load": "ok", "tests": []}
    import numpy  # noqa: F401  (loaded before the guard, as in the benchmark, whose harness imports it)
    guard()
    signal.alarm(limit)
    try:
        module = types.ModuleType("tmp_sol")
        exec(compile(src, "tmp_sol", "exec"), module.__dict__)
        target = module
        if job["mode"] == "call" and job["has_solution_class"]:
            target = module.Solution()
        method = getattr(target, job["fn_name"] if job["mode"] == "call" else "code")
    except Exception as e:  # noqa: BLE001 - the benchmark's -2: nothing runs
        out["load"] = f"{type(e).__name__}: {e}"[:500]
        method = None
    finally:
        signal.alarm(0)
    for inputs in job["inputs"] if method is not None else []:
        signal.alarm(limit)
        try:
            if job["mode"] == "call":
                try:  # JSON keys are strings; the benchmark turns a leading dict's keys into ints
                    if isinstance(inputs[0], dict):
                        inputs = [{int(k): v for k, v in inputs[0].items()}]
                except Exception:  # noqa: BLE001 - as there: left unchanged
                    pass
                value = method(*inputs)
                if isinstance(value, tuple):
                    value = list(value)
                out["tests"].append({"value": encode(value)})
            else:
                text = "\n".join(inputs) if isinstance(inputs, list) else inputs
                out["tests"].append({"lines": run_stdio(method, text)})
        except Exception as e:  # noqa: BLE001 - the benchmark's -1 (runtime error or time limit)
            out["tests"].append({"error": f"{type(e).__name__}: {e}"[:300]})
        finally:
            signal.alarm(0)
    with _open("result.json", "w") as f:
        f.write(_dumps(out))


main()
