"""Run model-generated Python in a separate, limited process; never in the caller's.

The child is a fresh `python -I` (no user site, no PYTHON* variables) started with a minimal
environment (no tokens, no proxies) in an empty temporary working directory, and before the
generated code runs it
  - sets hard resource limits: address space (memory), CPU seconds, largest file written,
  - installs an audit hook (irremovable) that refuses sockets and starting processes,
and, where the kernel allows, the whole child runs in its own empty network namespace
(`unshare -n`, or `unshare -rn` without root), so the network is gone even for C code.
The parent enforces a wall-clock timeout by killing the child's whole process group and reads
back only the output files it asked for (regular files, no symlinks, size-capped).

Limits of this design: the child can still read files the app's user can read; on a shared
host, run the app as an unprivileged user. `viscodex eval` reuses `run_python`.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_TIMEOUT = 20.0
DEFAULT_MEM_MB = 1024
MAX_OUTPUT_BYTES = 16 * 1024 * 1024
MAX_FILE_MB = 64
MAX_STREAM_CHARS = 20_000
STATUS_FILE = ".viscodex_status.json"  # written by the bootstrap; the code under test can forge it, which only
                                       # changes the message it gets back

# Runs inside the child before anything else. argv: [-c, settings_json]. The audit hook cannot be
# removed once added; it blocks socket creation/connection and process creation.
_BOOTSTRAP = r'''
import json, os, resource, sys, traceback
cfg = json.loads(sys.argv[1])
mem = cfg["mem_mb"] * 1024 * 1024
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
resource.setrlimit(resource.RLIMIT_CPU, (cfg["cpu_s"], cfg["cpu_s"]))
fs = cfg["file_mb"] * 1024 * 1024
resource.setrlimit(resource.RLIMIT_FSIZE, (fs, fs))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

class SandboxBlocked(PermissionError):
    pass

_BLOCKED = ("socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname",
            "socket.gethostbyname_ex", "socket.gethostbyaddr", "socket.sendto", "socket.socketpair",
            "subprocess.Popen", "os.system", "os.fork", "os.forkpty", "os.posix_spawn", "os.exec",
            "os.spawn", "os.startfile", "pty.spawn")
# C functions that would get around the hook through ctypes
_NATIVE = {"socket", "socketpair", "connect", "bind", "sendto", "sendmsg", "getaddrinfo", "gethostbyname",
           "fork", "vfork", "clone", "clone3", "execve", "execv", "execvp", "execvpe", "execl", "execlp",
           "system", "popen", "posix_spawn", "posix_spawnp", "syscall"}
_hits = []

def _hook(event, args):
    what = None
    if event in _BLOCKED:
        what = "network access" if event.startswith("socket") else "starting processes"
    elif event == "ctypes.dlsym" and len(args) > 1 and isinstance(args[1], str) and args[1] in _NATIVE:
        what = f"calling {args[1]}() through ctypes"
    if what:
        msg = f"viscodex sandbox: {what} is blocked ({event})"
        _hits.append(msg)
        raise SandboxBlocked(msg)

def _status(**kw):
    with open(cfg["status"], "w") as f:
        json.dump(kw, f)

def _run(src, name, env):
    exec(compile(src, name, "exec"), env)

if cfg["setup"]:
    _run(cfg["setup"], "<sandbox setup>", {"__name__": "__sandbox_setup__"})
sys.addaudithook(_hook)
import runpy
try:
    try:
        g = runpy.run_path(cfg["script"], run_name="__main__")
    except SystemExit as e:
        if e.code not in (None, 0):
            raise
        g = {}
    if cfg["teardown"]:
        _run(cfg["teardown"], "<sandbox teardown>", {"__name__": "__sandbox_teardown__", "user_globals": g})
except SystemExit as e:
    _status(kind="exit", code=e.code if isinstance(e.code, int) else 1)
    sys.exit(e.code if isinstance(e.code, int) else 1)
except MemoryError:
    _status(kind="memory")
    sys.exit(3)
except SandboxBlocked as e:
    _status(kind="blocked", detail=str(e))
    sys.exit(4)
except BaseException as e:
    if _hits:  # a library wrapped the refusal in its own error (urllib's URLError, requests' ConnectionError)
        _status(kind="blocked", detail=_hits[0])
        sys.exit(4)
    tb = traceback.format_exception(type(e), e, e.__traceback__)
    _status(kind="error", detail="".join(tb[-3:]).strip()[-2000:], error=type(e).__name__)
    sys.exit(1)
_status(kind="ok")
'''


@dataclass
class RunResult:
    ok: bool
    message: str  # "" when ok; otherwise one sentence saying what stopped the code
    kind: str  # ok | timeout | memory | blocked | error | exit | killed | missing_output
    returncode: int | None
    seconds: float
    stdout: str = ""
    stderr: str = ""
    outputs: dict[str, bytes] = field(default_factory=dict)


@functools.lru_cache(maxsize=1)
def netns_prefix() -> tuple[str, ...]:
    """The command prefix that gives the child an empty network namespace, or () when unavailable."""
    exe = shutil.which("unshare")
    if not exe:
        return ()
    for args in ((exe, "-n"), (exe, "-rn")):
        try:
            r = subprocess.run([*args, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            continue
        if r.returncode == 0:
            return args
    return ()


def _child_env(tmp: Path) -> dict[str, str]:
    """Only what Python and matplotlib need; nothing from the app's environment (tokens, proxies)."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp),
        "TMPDIR": str(tmp),
        "LANG": "C.UTF-8",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": str(tmp / ".mpl"),
        "XDG_CACHE_HOME": str(tmp / ".cache"),
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "no_proxy": "*",
    }


def run_python(code: str, *, timeout: float = DEFAULT_TIMEOUT, mem_mb: int = DEFAULT_MEM_MB,
               outputs: list[str] | tuple[str, ...] = (), files: dict[str, bytes] | None = None,
               setup: str = "", teardown: str = "", network_isolation: str = "auto",
               max_output_bytes: int = MAX_OUTPUT_BYTES) -> RunResult:
    """Run `code` as a script in a sandboxed child and return what happened plus the bytes of the
    requested `outputs` (file names relative to its working directory).

    `files` are written into the working directory first. `setup`/`teardown` are trusted snippets
    run in the child before the audit hook / after the script (teardown sees `user_globals`).
    network_isolation: "auto" (a network namespace when possible, always the audit hook),
    "netns" (require the namespace) or "hook" (audit hook only).
    """
    if network_isolation not in ("auto", "netns", "hook"):
        raise ValueError(f"network_isolation must be auto, netns or hook, got {network_isolation!r}")
    prefix = netns_prefix() if network_isolation != "hook" else ()
    if network_isolation == "netns" and not prefix:
        raise RuntimeError("no network namespace available here (`unshare -n` failed)")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="viscodex-sandbox-") as d:
        tmp = Path(d)
        work = tmp / "work"
        work.mkdir()
        for name, data in (files or {}).items():
            target = (work / name).resolve()
            if work.resolve() not in target.parents:
                raise ValueError(f"input file name {name!r} escapes the working directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        script = tmp / "main.py"
        script.write_text(code, encoding="utf-8")
        status_path = tmp / STATUS_FILE
        cfg = dict(mem_mb=int(mem_mb), cpu_s=max(1, int(timeout) + 1), file_mb=MAX_FILE_MB, script=str(script),
                   status=str(status_path), setup=setup, teardown=teardown)
        cmd = [*prefix, sys.executable, "-I", "-c", _BOOTSTRAP, json.dumps(cfg)]
        proc = subprocess.Popen(cmd, cwd=work, env=_child_env(tmp), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        timed_out = False
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            out, err = proc.communicate()
        finally:
            if proc.poll() is None:
                _kill_group(proc)
                proc.wait()
        seconds = time.monotonic() - t0
        stdout = out.decode("utf-8", "replace")[-MAX_STREAM_CHARS:]
        stderr = err.decode("utf-8", "replace")[-MAX_STREAM_CHARS:]
        status = _read_status(status_path)
        rc = proc.returncode
        kind, message = _classify(timed_out, rc, status, stderr, timeout, mem_mb)
        got: dict[str, bytes] = {}
        if kind == "ok":
            for name in outputs:
                data, problem = _read_output(work, name, max_output_bytes)
                if problem:
                    kind, message = "missing_output", problem
                    break
                got[name] = data
    return RunResult(kind == "ok", message, kind, rc, seconds, stdout, stderr, got)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_status(path: Path) -> dict:
    try:
        data = json.loads(path.read_text()[:10_000])
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _classify(timed_out: bool, rc: int | None, status: dict, stderr: str, timeout: float,
              mem_mb: int) -> tuple[str, str]:
    if timed_out:
        return "timeout", f"the code ran longer than {timeout:g} s and was stopped"
    kind = status.get("kind")
    if rc == 0 and kind == "ok":
        return "ok", ""
    if kind == "memory" or "MemoryError" in stderr[-2000:]:
        return "memory", f"the code tried to use more than {mem_mb} MB of memory and was stopped"
    if kind == "blocked":
        what = str(status.get("detail", "")).removeprefix("viscodex sandbox: ")
        return "blocked", f"the code was stopped: {what} (the sandbox has no network and cannot start programs)"
    if rc is not None and rc < 0:
        sig = -rc
        if sig == signal.SIGXCPU:
            return "timeout", f"the code used more than {timeout:g} s of CPU time and was stopped"
        if sig in (signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS):
            # an allocation failing inside C code under RLIMIT_AS often ends as a crash
            return "killed", (f"the code crashed (signal {signal.Signals(sig).name}); "
                              f"it may have exceeded the {mem_mb} MB memory limit")
        return "killed", f"the code was killed by signal {signal.Signals(sig).name}"
    if kind == "error":
        return "error", f"the code raised {status.get('error', 'an error')}:\n{status.get('detail', '')}"
    if kind == "exit":
        return "exit", f"the code exited with status {status.get('code')}"
    tail = stderr.strip().splitlines()[-3:]
    return "error", f"the code failed (exit status {rc})" + (":\n" + "\n".join(tail) if tail else "")


def _read_output(work: Path, name: str, limit: int) -> tuple[bytes, str]:
    """Read one output file: a regular file inside the work dir, not a link, at most `limit` bytes."""
    path = work / name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return b"", f"the code ran but produced no {name}"
    except OSError as e:
        return b"", f"{name} cannot be read back ({e.strerror}); outputs must be regular files"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return b"", f"{name} is not a regular file"
        if st.st_size > limit:
            return b"", f"{name} is {st.st_size / 2**20:.1f} MiB; the limit is {limit / 2**20:.0f} MiB"
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limit + 1)[:limit], ""
    finally:
        os.close(fd)


# ---------------------------------------------------------------- charts
CHART_FILE = "chart.png"
_CHART_SETUP = r'''
import matplotlib
matplotlib.use("Agg", force=True)
import matplotlib.pyplot as plt
plt.show = lambda *a, **k: None  # generated scripts often end with plt.show()
'''
_CHART_TEARDOWN = r'''
import os
import matplotlib.pyplot as plt
if plt.get_fignums():
    plt.figure(plt.get_fignums()[-1]).savefig("chart.png", dpi=100)
elif not os.path.exists("chart.png"):
    pngs = sorted((p for p in os.listdir(".") if p.lower().endswith(".png")), key=os.path.getmtime)
    if pngs:
        os.replace(pngs[-1], "chart.png")
'''


@dataclass
class ChartResult:
    png: bytes | None
    message: str  # "" when a chart was produced
    run: RunResult


def render_chart(code: str, *, timeout: float = DEFAULT_TIMEOUT, mem_mb: int = DEFAULT_MEM_MB,
                 network_isolation: str = "auto") -> ChartResult:
    """Run matplotlib code in the sandbox and return the PNG of its (last) figure, or a message."""
    if not code or not code.strip():
        return ChartResult(None, "there is no code to run", RunResult(False, "no code", "error", None, 0.0))
    r = run_python(code, timeout=timeout, mem_mb=mem_mb, outputs=[CHART_FILE], setup=_CHART_SETUP,
                   teardown=_CHART_TEARDOWN, network_isolation=network_isolation)
    if not r.ok:
        msg = r.message
        if r.kind == "missing_output":
            msg = "the code ran but drew no matplotlib figure"
        return ChartResult(None, msg, r)
    if not r.outputs[CHART_FILE].startswith(b"\x89PNG\r\n\x1a\n"):
        return ChartResult(None, "the code wrote chart.png but it is not a PNG image", r)
    return ChartResult(r.outputs[CHART_FILE], "", r)


__all__ = ["run_python", "render_chart", "RunResult", "ChartResult", "netns_prefix"]
