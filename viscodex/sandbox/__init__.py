"""Run model-written Python in a separate, locked-down process; never in the caller's.

Every program is treated as hostile (a Space visitor can make the model print any program). The
child (viscodex/sandbox/child.py, a fresh `python -I`) gets an empty environment, an empty job
folder, stdin from a private file or /dev/null, and before the program runs it installs, from what
the kernel offers:
  - resource limits (address space, CPU seconds, file size, open files), no_new_privs, no
    capabilities even as root;
  - Landlock: read the Python installation (less the viscodex package and its samples), system
    libraries and fonts; read/write only the job folder; no TCP, no signals outside itself;
  - seccomp-bpf (sandbox/seccomp_filter.py): no programs, processes, sockets, namespaces, sessions, ...;
  - where `unshare -n` works, an empty network namespace as well (an extra layer, never the only one).
The parent (this module) is non-dumpable, so its /proc files are closed to same-uid processes; it
runs the child in a new process group and enforces a wall-clock deadline that does not wait for
pipes to close (the group is killed, the call returns within timeout + 1 s), caps stdout/stderr
while reading, watches the job folder's size, and reads back only the output files it asked for
(regular files, size-capped). Expected answers and reference images never enter the child.

When seccomp or Landlock is missing, `status()` says so once and `run_python` refuses with
SandboxUnavailable, unless the operator opts in (`allow_unsafe()`, `viscodex eval
--unsafe-executor`, or VISCODEX_UNSAFE_EXECUTOR=1), which runs with whatever layers remain.
"""
from __future__ import annotations

import ctypes
import functools
import json
import logging
import os
import select
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SandboxUnavailable

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 20.0
DEFAULT_MEM_MB = 1024
MAX_OUTPUT_BYTES = 16 * 1024 * 1024  # one output file read back
MAX_FILE_MB = 64  # RLIMIT_FSIZE: the largest file the child can write
MAX_JOB_MB = 256  # all files of the job folder together (watched while running)
MAX_JOB_FILES = 2000
MAX_STREAM_BYTES = 4 * 1024 * 1024  # stdout + stderr together; more ends the run
MAX_STDERR_CHARS = 20_000
NOFILE = 256
KILL_GRACE_S = 0.5  # after the deadline: kill, reap, drain what is buffered
UNSAFE_ENV = "VISCODEX_UNSAFE_EXECUTOR"
CHILD = Path(__file__).with_name("child.py")
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the whole viscodex package (it ships the eval samples)
STATUS_FILE = ".viscodex_status.json"  # written by the child; the program can forge it, which only
                                       # changes the message it gets back


@dataclass
class RunResult:
    ok: bool
    message: str  # "" when ok; otherwise one sentence saying what stopped the code
    kind: str  # ok | timeout | memory | blocked | error | exit | killed | missing_output | output_limit | disk_limit
    returncode: int | None
    seconds: float
    stdout: str = ""
    stderr: str = ""
    outputs: dict[str, bytes] = field(default_factory=dict)


# ---------------------------------------------------------------- capabilities
@dataclass(frozen=True)
class SandboxStatus:
    ok: bool  # seccomp and Landlock both installed and holding
    layers: dict  # layer -> "on" / "ABI 7" / "off (why)"
    netns: bool

    @property
    def line(self) -> str:
        """One line for logs, the app's "Models and memory" panel and the `viscodex eval` header."""
        parts = [f"{k} {v}" for k, v in self.layers.items() if not k.endswith("_holds")]
        parts.append("network namespace " + ("on" if self.netns else "off"))
        if self.ok:
            return "sandbox: " + ", ".join(parts)
        mode = ("UNSAFE: running generated code anyway (opted in)" if unsafe_allowed()
                else f"generated code will NOT run (set {UNSAFE_ENV}=1 or --unsafe-executor to run it unprotected)")
        return f"sandbox unavailable: {', '.join(parts)}; {mode}"

    @property
    def message(self) -> str:
        """The refusal shown where a chart or a score would be."""
        missing = [f"{k} {v}" for k, v in self.layers.items()
                   if k in ("seccomp", "landlock") and not (v == "on" or str(v).startswith("ABI"))]
        return ("generated code was not run: this machine cannot sandbox it ("
                + ("; ".join(missing) or "the layers did not hold") + "). "
                + f"An operator can set {UNSAFE_ENV}=1 to run it with weaker protection.")


_unsafe = False


def allow_unsafe(flag: bool = True) -> None:
    """Run generated code even when the strong layers are missing (the `--unsafe-executor` flag)."""
    global _unsafe
    _unsafe = flag


def unsafe_allowed() -> bool:
    return _unsafe or os.environ.get(UNSAFE_ENV, "").strip().lower() in ("1", "true", "yes")


@functools.lru_cache(maxsize=1)
def status() -> SandboxStatus:
    """Probe once per process: start a locked-down child and check that Landlock keeps it from a
    file outside its folder and seccomp from forking. Logged once."""
    layers = _probe()
    ok = (layers.get("seccomp") == "on" and str(layers.get("landlock", "")).startswith("ABI")
          and layers.get("landlock_holds") is True and layers.get("seccomp_holds") is True)
    st = SandboxStatus(ok, layers, bool(netns_prefix()))
    (log.info if ok else log.warning)("%s", st.line)
    return st


def require() -> SandboxStatus:
    """The status, or SandboxUnavailable when the strong layers are missing and unsafe execution
    was not allowed (evaluators call this before loading a model)."""
    st = status()
    if not st.ok:
        if not unsafe_allowed():
            raise SandboxUnavailable(st.message)
        _warn_unsafe_once(st)
    return st


def _probe() -> dict:
    _mark_parent_nondumpable()
    with tempfile.TemporaryDirectory(prefix="viscodex-probe-") as d:
        job = Path(d) / "job"
        job.mkdir()
        secret = Path(d) / "outside.txt"
        secret.write_text("not for the child")
        st = job / STATUS_FILE
        cfg = _settings(job, st, timeout=20, mem_mb=DEFAULT_MEM_MB, require=False, probe_file=str(secret))
        try:
            subprocess.run([sys.executable, "-I", str(CHILD), json.dumps(cfg)], env=_child_env(job), cwd=job,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=60, start_new_session=True)
        except (OSError, subprocess.SubprocessError) as e:
            return {"seccomp": f"off (the probe did not run: {e})", "landlock": "off (the probe did not run)"}
        data = _read_status(st)
        if data.get("kind") != "probe":
            return {"seccomp": "off (the probe child failed)", "landlock": "off (the probe child failed)"}
        return data["layers"]


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


@functools.lru_cache(maxsize=1)
def _mark_parent_nondumpable() -> None:
    """PR_SET_DUMPABLE 0: this process's /proc files (environ, mem, maps) become root-only, so a
    process of the same uid cannot read the app's HF_TOKEN from them."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE
    except (OSError, AttributeError):
        pass


def _child_env(job: Path) -> dict[str, str]:
    """Only what Python and matplotlib need; nothing from the app's environment (tokens, proxies)."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(job),
        "TMPDIR": str(job),
        "LANG": "C.UTF-8",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": str(job / ".mpl"),
        "XDG_CACHE_HOME": str(job / ".cache"),
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
    }


def _settings(job: Path, status_path: Path, *, timeout: float, mem_mb: int, require: bool, setup: str = "",
              teardown: str = "", probe_file: str = "") -> dict:
    return dict(mem_mb=int(mem_mb), cpu_s=max(1, int(timeout) + 1), file_mb=MAX_FILE_MB, nofile=NOFILE,
                job=str(job), hide=[str(PACKAGE_DIR)], status=str(status_path), script=str(job / "main.py"),
                setup=setup, teardown=teardown, require=require, probe_file=probe_file)


# ---------------------------------------------------------------- running
def run_python(code: str, *, timeout: float = DEFAULT_TIMEOUT, mem_mb: int = DEFAULT_MEM_MB,
               outputs: list[str] | tuple[str, ...] = (), files: dict[str, bytes] | None = None,
               stdin: bytes | str | None = None, setup: str = "", teardown: str = "",
               network_isolation: str = "auto", max_output_bytes: int = MAX_OUTPUT_BYTES,
               max_stream_bytes: int = MAX_STREAM_BYTES) -> RunResult:
    """Run `code` as a script in a sandboxed child and return what happened plus the bytes of the
    requested `outputs` (file names relative to its working directory).

    `files` are written into the working directory first; `stdin` is the program's standard input
    (default: empty). `setup`/`teardown` are trusted snippets run in the child after the lockdown,
    before/after the script (teardown sees `user_globals`). network_isolation: "auto" (add an
    empty network namespace when possible), "netns" (require it) or "hook" (seccomp and Landlock
    only). Raises SandboxUnavailable when the kernel layers are missing (see `status()`).
    """
    if network_isolation not in ("auto", "netns", "hook"):
        raise ValueError(f"network_isolation must be auto, netns or hook, got {network_isolation!r}")
    st = require()
    prefix = netns_prefix() if network_isolation != "hook" else ()
    if network_isolation == "netns" and not prefix:
        raise RuntimeError("no network namespace available here (`unshare -n` failed)")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="viscodex-sandbox-") as d:
        job = Path(d)
        work = job / "work"
        work.mkdir()
        for name, data in (files or {}).items():
            target = (work / name).resolve()
            if work.resolve() not in target.parents:
                raise ValueError(f"input file name {name!r} escapes the working directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        (job / "main.py").write_text(code, encoding="utf-8")
        status_path = job / STATUS_FILE
        cfg = _settings(job, status_path, timeout=timeout, mem_mb=mem_mb, require=st.ok, setup=setup,
                        teardown=teardown)
        cmd = [*prefix, sys.executable, "-I", str(CHILD), json.dumps(cfg)]
        with _stdin_file(stdin) as fin:
            proc = subprocess.Popen(cmd, cwd=work, env=_child_env(job), stdin=fin, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True, close_fds=True)
        watch = _Watch(proc, job, deadline=t0 + timeout, max_stream_bytes=max_stream_bytes)
        end = watch.run()
        rc = proc.returncode
        stdout = watch.out.decode("utf-8", "replace")
        stderr = watch.err.decode("utf-8", "replace")[-MAX_STDERR_CHARS:]
        kind, message = _classify(end, rc, _read_status(status_path), stderr, timeout, mem_mb, max_stream_bytes)
        got: dict[str, bytes] = {}
        if kind == "ok":
            for name in outputs:
                data, problem = _read_output(work, name, max_output_bytes)
                if problem:
                    kind, message = "missing_output", problem
                    break
                got[name] = data
    return RunResult(kind == "ok", message, kind, rc, time.monotonic() - t0, stdout, stderr, got)


_warned: list[bool] = []


def _warn_unsafe_once(st: SandboxStatus) -> None:
    if _warned:
        return
    _warned.append(True)
    log.warning("running generated code WITHOUT the full sandbox (%s=1 / --unsafe-executor): %s", UNSAFE_ENV, st.line)


class _stdin_file:
    """The child's stdin: an unlinked temporary file holding `data` (it never sees a path), or /dev/null."""

    def __init__(self, data: bytes | str | None):
        self.data = data.encode() if isinstance(data, str) else data

    def __enter__(self):
        if self.data is None:
            self.f = open(os.devnull, "rb")
        else:
            self.f = tempfile.TemporaryFile()
            self.f.write(self.data)
            self.f.seek(0)
        return self.f

    def __exit__(self, *exc):
        self.f.close()


class _Watch:
    """Reads the child's stdout/stderr until it exits, the deadline passes, the output cap or the
    job folder's budget is exceeded; then kills the whole process group and drains what is left.
    It never waits for the pipes to close: a process that kept them open would hold the call."""

    def __init__(self, proc: subprocess.Popen, job: Path, *, deadline: float, max_stream_bytes: int):
        self.proc, self.job, self.deadline, self.cap = proc, job, deadline, max_stream_bytes
        self.out, self.err = bytearray(), bytearray()
        self.bufs = {proc.stdout.fileno(): self.out, proc.stderr.fileno(): self.err}
        for fd in self.bufs:
            os.set_blocking(fd, False)

    def run(self) -> str:
        """'exited' | 'timeout' | 'output_limit' | 'disk_limit'"""
        poller = select.poll()
        for fd in self.bufs:
            poller.register(fd, select.POLLIN)
        pidfd = _pidfd(self.proc.pid)
        if pidfd is not None:
            poller.register(pidfd, select.POLLIN)
        next_disk = 0.0
        try:
            while True:
                now = time.monotonic()
                if now >= self.deadline:
                    end = "timeout"
                    break
                tick = 0.2 if pidfd is not None else 0.02
                for fd, _ev in poller.poll(max(1, int(min(self.deadline - now, tick) * 1000))):
                    if fd in self.bufs and not self._read(fd):
                        poller.unregister(fd)
                if len(self.out) + len(self.err) > self.cap:
                    end = "output_limit"
                    break
                if self.proc.poll() is not None:
                    end = "exited"
                    break
                if now >= next_disk:
                    next_disk = now + 0.1
                    if _over_budget(self.job):
                        end = "disk_limit"
                        break
        finally:
            if pidfd is not None:
                os.close(pidfd)
            _kill_group(self.proc)
            try:
                self.proc.wait(timeout=KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
            self._drain(time.monotonic() + KILL_GRACE_S / 2)
            self.proc.stdout.close()
            self.proc.stderr.close()
        return end

    def _read(self, fd: int) -> bool:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not chunk:
            return False
        room = self.cap + 1 - len(self.out) - len(self.err)
        self.bufs[fd] += chunk[:max(room, 0)]  # one byte over the cap marks the overflow
        return True

    def _drain(self, until: float) -> None:
        open_fds = set(self.bufs)
        while open_fds and time.monotonic() < until and len(self.out) + len(self.err) <= self.cap:
            r, _, _ = select.select(list(open_fds), [], [], max(0.0, until - time.monotonic()))
            if not r:
                break
            for fd in r:
                if not self._read(fd):
                    open_fds.discard(fd)


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _over_budget(job: Path) -> bool:
    """True when the job folder holds more than MAX_JOB_MB or MAX_JOB_FILES (checked every 0.1 s:
    RLIMIT_FSIZE bounds each file, this bounds their number and total)."""
    total, count, stack = 0, 0, [str(job)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    count += 1
                    if count > MAX_JOB_FILES:
                        return True
                    st = e.stat(follow_symlinks=False)
                    total += st.st_blocks * 512
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
        except OSError:
            continue
    return total > MAX_JOB_MB * 2**20


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_status(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(10_000))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _classify(end: str, rc: int | None, status: dict, stderr: str, timeout: float, mem_mb: int,
              max_stream_bytes: int) -> tuple[str, str]:
    if end == "timeout":
        return "timeout", f"the code ran longer than {timeout:g} s and was stopped"
    if end == "output_limit":
        return "output_limit", f"the code printed more than {max_stream_bytes / 2**20:g} MiB and was stopped"
    if end == "disk_limit":
        return "disk_limit", (f"the code wrote more than {MAX_JOB_MB} MiB or {MAX_JOB_FILES} files "
                              "and was stopped")
    kind = status.get("kind")
    if rc == 0 and kind == "ok":
        return "ok", ""
    if kind == "unavailable":
        return "unavailable", "the sandbox could not be installed in the child: " + json.dumps(status.get("layers"))
    if kind == "memory" or "MemoryError" in stderr[-2000:]:
        return "memory", f"the code tried to use more than {mem_mb} MB of memory and was stopped"
    if kind == "blocked":
        what = str(status.get("detail", "")).removeprefix("viscodex sandbox: ")
        return "blocked", (f"the code was stopped: {what} (the sandbox has no network and cannot start or "
                           "signal programs)")
    if rc is not None and rc < 0:
        sig = -rc
        if sig == signal.SIGXCPU:
            return "timeout", f"the code used more than {timeout:g} s of CPU time and was stopped"
        if sig == signal.SIGXFSZ:
            return "disk_limit", f"the code wrote a file larger than {MAX_FILE_MB} MiB and was stopped"
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
MAX_CHART_PIXELS = 16_000_000  # checked in the PNG header before anything decodes it
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
    fig = plt.figure(plt.get_fignums()[-1])
    w, h = fig.get_size_inches() * 100
    if w * h > MAX_PIXELS:  # refuse before rendering: the child's memory, then the parent's
        raise ValueError(f"the figure would be {w:.0f}x{h:.0f} pixels; the limit is {MAX_PIXELS} pixels")
    fig.savefig("chart.png", dpi=100)
elif not os.path.exists("chart.png"):
    pngs = sorted((p for p in os.listdir(".") if p.lower().endswith(".png")), key=os.path.getmtime)
    if pngs:
        os.replace(pngs[-1], "chart.png")
'''.replace("MAX_PIXELS", str(MAX_CHART_PIXELS))


@dataclass
class ChartResult:
    png: bytes | None
    message: str  # "" when a chart was produced
    run: RunResult


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, without decoding; None when it is not a PNG."""
    if len(data) < 24 or not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def render_chart(code: str, *, timeout: float = DEFAULT_TIMEOUT, mem_mb: int = DEFAULT_MEM_MB,
                 network_isolation: str = "auto") -> ChartResult:
    """Run matplotlib code in the sandbox and return the PNG of its (last) figure, or a message
    (also when the sandbox is unavailable: the refusal is the message)."""
    if not code or not code.strip():
        return ChartResult(None, "there is no code to run", RunResult(False, "no code", "error", None, 0.0))
    try:
        r = run_python(code, timeout=timeout, mem_mb=mem_mb, outputs=[CHART_FILE], setup=_CHART_SETUP,
                       teardown=_CHART_TEARDOWN, network_isolation=network_isolation)
    except SandboxUnavailable as e:
        return ChartResult(None, str(e), RunResult(False, str(e), "unavailable", None, 0.0))
    if not r.ok:
        msg = r.message
        if r.kind == "missing_output":
            msg = "the code ran but drew no matplotlib figure"
        return ChartResult(None, msg, r)
    size = png_size(r.outputs[CHART_FILE])
    if size is None:
        return ChartResult(None, "the code wrote chart.png but it is not a PNG image", r)
    if size[0] * size[1] > MAX_CHART_PIXELS:
        return ChartResult(None, f"the chart is {size[0]}x{size[1]} pixels; the limit is {MAX_CHART_PIXELS} pixels", r)
    return ChartResult(r.outputs[CHART_FILE], "", r)


__all__ = ["run_python", "render_chart", "RunResult", "ChartResult", "SandboxStatus", "SandboxUnavailable",
           "status", "require", "allow_unsafe", "unsafe_allowed", "netns_prefix", "png_size"]
