"""Issue 13: every attack a hostile model-written program tried against the old sandbox, each
asserting that the attack fails AND that the host is unharmed. Run as root here and in CI, so no
layer that root bypasses (uid checks, RLIMIT_NPROC, file modes) is what stops them.

Attacks on the parent (its environment, its memory, its life) run under a separate "host" process
started with a secret in its real environment (/proc/<pid>/environ shows the environment a process
started with, so monkeypatching os.environ would prove nothing) and in its own session, so that a
sandbox failure would take down only that host, never pytest.
"""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from PIL import Image

from viscodex import sandbox
from viscodex.app import compare
from viscodex.app.tasks import TASKS
from viscodex.evaluation import chartmimic, mmcode
from viscodex.evaluation.mmcode_harness import run_problem, stdio_matches
from viscodex.sandbox import render_chart, run_python

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("requires_sandbox")
CHART = "import matplotlib.pyplot as plt\nplt.bar([0, 1, 2], [3, 1, 2], color='red')\n"


@pytest.fixture
def token() -> str:
    return "hf_" + uuid.uuid4().hex


@pytest.fixture
def sleeper(token):
    """A `sleep` argument no other process has (a valid number: an invalid one would exit at once).
    Sleepers a failing sandbox let start are killed afterwards (only those: the number is unique)."""
    mark = f"1000.{int(token[3:11], 16)}"
    yield mark
    for pid in processes_with(mark):
        os.kill(pid, signal.SIGKILL)


def processes_with(mark: str) -> list[int]:
    """Pids whose command line contains `mark` (a unique token only an attack would use)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if mark.encode() in (d / "cmdline").read_bytes():
                    found.append(int(d.name))
            except OSError:
                pass
    return found


HOST = r'''
import json, os, resource, sys, ctypes
from viscodex import sandbox
kw = json.loads(sys.argv[2])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if kw.pop("chart", False):
    c = sandbox.render_chart(sys.argv[1], **kw)
    r, png = c.run, c.png
else:
    r, png = sandbox.run_python(sys.argv[1], **kw), None
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
dumpable = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
print(json.dumps({"kind": r.kind, "message": r.message, "stdout": r.stdout, "stderr": r.stderr, "seconds": r.seconds,
                  "outputs": {k: v.decode("latin-1") for k, v in r.outputs.items()},
                  "png": png.decode("latin-1") if png else None, "rss_growth_kb": after - before,
                  "dumpable": dumpable, "pid": os.getpid(), "alive": True}))
'''


def host_run(code: str, secret: str, **kw) -> dict:
    """run_python(code, **kw) inside a fresh host process whose real environment holds HF_TOKEN."""
    env = {**os.environ, "HF_TOKEN": secret, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", HOST, code, json.dumps(kw)], env=env, capture_output=True, text=True,
                       timeout=120, start_new_session=True)
    assert p.returncode == 0, f"the host process died (rc {p.returncode}): {p.stderr[-2000:]}"
    return json.loads(p.stdout.splitlines()[-1])


# ---------------------------------------------------------------- starting programs
def test_subprocess_with_the_audit_hook_bypassed_starts_nothing(tmp_path, sleeper):
    """The old bypass: _posixsubprocess.fork_exec is never audited. Here subprocess's own `sys`
    is swapped for one whose audit() does nothing, so Popen reaches fork_exec: the kernel refuses."""
    marker = tmp_path / "started"
    code = f"""
import subprocess, sys, types
quiet = types.ModuleType("sys"); quiet.__dict__.update(sys.__dict__); quiet.audit = lambda *a: None
subprocess.sys = quiet
subprocess.Popen(["/bin/sh", "-c", "touch {marker}; exec sleep {sleeper}"], start_new_session=True)
"""
    r = run_python(code, timeout=20)
    assert r.kind == "error" and "PermissionError" in r.message  # refused by seccomp, not by the audit hook
    time.sleep(0.3)
    assert not marker.exists() and processes_with(sleeper) == []


def test_raw_fork_clone_and_exec_system_calls_fail(tmp_path):
    marker = tmp_path / "exec-ran"
    code = f"""
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
for name, args in (("fork", (57,)), ("vfork", (58,)), ("clone", (56, 17, 0, 0, 0, 0)),
                   ("clone3", (435, 0, 0))):
    r = libc.syscall(*args)
    if r == 0:
        os._exit(0)  # a child would leave here and never print
    print(name, r, errno.errorcode[ctypes.get_errno()], flush=True)
argv = (ctypes.c_char_p * 4)(b"/bin/sh", b"-c", b"touch {marker}", None)
print("execve", libc.execve(b"/bin/sh", argv, None), errno.errorcode[ctypes.get_errno()])
"""
    r = run_python(code, timeout=20)
    assert r.ok, r.message
    assert r.stdout.splitlines() == ["fork -1 EPERM", "vfork -1 EPERM", "clone -1 EPERM", "clone3 -1 ENOSYS",
                                     "execve -1 EPERM"]
    assert not marker.exists()


def test_another_architectures_system_call_table_kills_the_child():
    r = run_python("import ctypes\nctypes.CDLL(None).syscall(0x40000000 | 57)  # x32 fork\nprint('survived')",
                   timeout=20)
    assert r.kind == "killed" and "SIGSYS" in r.message and "survived" not in r.stdout


# ---------------------------------------------------------------- the parent's secrets
def test_parent_environment_memory_and_token_files_stay_out_of_stdout_files_and_png(tmp_path, token):
    token_file = tmp_path / "token"
    token_file.write_text(token)
    steal = f"""
import os
stolen = []
ppid = os.getppid()
for path in (f"/proc/{{ppid}}/environ", f"/proc/{{ppid}}/cmdline", f"/proc/{{ppid}}/maps", "{token_file}",
             "/etc/shadow", "/root/.cache/huggingface/token", "/proc/1/environ"):
    try:
        with open(path, "rb") as f:
            stolen.append(f.read().decode("latin-1"))
        print("READ", path)
    except OSError as e:
        print("denied", path, type(e).__name__)
try:  # the parent's heap, where os.environ's copy lives
    with open(f"/proc/{{ppid}}/mem", "rb") as f:
        stolen.append(f.read(1 << 20).decode("latin-1"))
    print("READ mem")
except OSError as e:
    print("denied mem", type(e).__name__)
stolen.append(os.environ.get("HF_TOKEN", ""))
blob = "|".join(stolen)
print(blob)
open("loot.txt", "w").write(blob)
"""
    r = host_run(steal, token, outputs=["loot.txt"], timeout=20)
    assert r["kind"] == "ok", r["message"]
    assert "READ" not in r["stdout"] and r["stdout"].count("denied") == 8
    assert "PermissionError" in r["stdout"]  # Landlock's refusal, not a missing file
    assert token not in r["stdout"] + r["stderr"] + r["outputs"]["loot.txt"]
    assert r["dumpable"] == 0  # the host marked itself non-dumpable before the first child
    # the same theft drawn into the chart the visitor sees (as text and as PNG metadata)
    chart = steal.replace('open("loot.txt", "w").write(blob)', """
import matplotlib.pyplot as plt
plt.text(0, 0, blob[:200])
plt.savefig("chart.png", metadata={"Description": blob})
""")
    r = host_run(chart, token, chart=True, timeout=30)
    assert r["png"] and r["png"].startswith("\x89PNG") and token not in r["png"]


# ---------------------------------------------------------------- the parent's life
def test_signals_to_the_parent_fail_and_it_stays_alive(token):
    code = """
import ctypes, errno, os, signal
libc = ctypes.CDLL(None, use_errno=True)
ppid = os.getppid()
def attempt(name, fn):
    try:
        r = fn()
        print(name, r, errno.errorcode.get(ctypes.get_errno()), flush=True)
    except OSError as e:
        print(name, type(e).__name__, flush=True)
attempt("kill", lambda: libc.kill(ppid, signal.SIGKILL))
attempt("tgkill", lambda: libc.syscall(234, ppid, ppid, signal.SIGKILL))
attempt("killpg", lambda: libc.kill(-os.getpgid(ppid), signal.SIGKILL))
attempt("pidfd", lambda: libc.syscall(434, ppid, 0))
attempt("sigqueue", lambda: libc.syscall(129, ppid, signal.SIGKILL, 0))
os.kill(ppid, signal.SIGKILL)
"""
    r = host_run(code, token, timeout=20)
    assert r["alive"]
    assert r["stdout"].splitlines() == ["kill -1 EPERM", "tgkill -1 EPERM", "killpg -1 EPERM", "pidfd -1 EPERM",
                                        "sigqueue -1 EPERM"]
    assert r["kind"] == "blocked" and "signalling processes is blocked (os.kill)" in r["message"]


# ---------------------------------------------------------------- the deadline
def test_a_grandchild_holding_the_pipes_cannot_stretch_the_deadline(sleeper):
    """Inside the sandbox no grandchild can start; the program then runs forever."""
    code = f"""
import subprocess, sys, types
quiet = types.ModuleType("sys"); quiet.__dict__.update(sys.__dict__); quiet.audit = lambda *a: None
subprocess.sys = quiet
try:
    subprocess.Popen(["sleep", "{sleeper}"], start_new_session=True)
except OSError as e:
    print("no grandchild:", type(e).__name__, flush=True)
while True:
    pass
"""
    t = time.monotonic()
    r = run_python(code, timeout=3)
    assert time.monotonic() - t < 3 + 1
    assert r.kind == "timeout" and r.stdout == "no grandchild: PermissionError\n"
    assert processes_with(sleeper) == []


def test_the_watch_returns_at_the_deadline_even_when_an_escaped_process_holds_the_pipes(tmp_path, sleeper):
    """The reading loop itself, on an unsandboxed process that leaves a session-escaped sleeper
    holding stdout/stderr open (what the old communicate() waited 30 s or forever for)."""
    mark = sleeper
    proc = subprocess.Popen([sys.executable, "-c", f"import subprocess, time\nsubprocess.Popen(['setsid', 'sleep', '{mark}'])\n"
                             "print('spawned', flush=True)\ntime.sleep(100)"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    t = time.monotonic()
    watch = sandbox._Watch(proc, tmp_path, deadline=t + 2, max_stream_bytes=1 << 20)
    end = watch.run()
    assert time.monotonic() - t < 2 + 1
    assert end == "timeout" and watch.out == b"spawned\n"
    assert proc.returncode == -signal.SIGKILL and processes_with(mark)  # the sleeper still holds the pipes


# ---------------------------------------------------------------- the disk
def test_files_cannot_be_written_outside_the_job_folder(tmp_path, token):
    targets = [tmp_path / "escape.txt", Path("/tmp") / f"viscodex-escape-{token}", Path(sandbox.__file__).with_name(f"x{token}.py"),
               Path.home() / f".viscodex-escape-{token}", Path("/dev/shm") / token]
    code = f"""
import os
for t in {[str(t) for t in targets]!r}:
    try:
        with open(t, "w") as f:
            f.write("x")
        print("WROTE", t)
    except OSError as e:
        print("denied", type(e).__name__)
open("inside.txt", "w").write("ok")
"""
    try:
        r = run_python(code, timeout=20, outputs=["inside.txt"])
        assert r.ok and r.outputs == {"inside.txt": b"ok"}
        assert r.stdout.splitlines() == ["denied PermissionError"] * len(targets)
        assert not any(t.exists() for t in targets)
    finally:  # a failing sandbox must not leave the files behind (their names are this test's own)
        for t in targets:
            t.unlink(missing_ok=True)


def test_many_large_files_are_stopped_by_the_job_budget():
    code = """
import os
block = b"x" * (1 << 20)
for i in range(40):
    with open(f"f{i}.bin", "wb") as f:
        for _ in range(60):
            f.write(block)
    print(i, flush=True)
"""
    t = time.monotonic()
    r = run_python(code, timeout=60)
    assert r.kind == "disk_limit" and r.message == "the code wrote more than 256 MiB or 2000 files and was stopped"
    written = len(r.stdout.splitlines())
    assert 3 <= written < 12  # 60 MiB files: the 256 MiB budget, plus at most one 0.1 s watch interval of writing
    assert time.monotonic() - t < 30


def test_one_file_over_the_size_limit_and_many_small_files_are_stopped():
    r = run_python("open('big.bin', 'wb').write(b'x' * (65 * 2**20))", timeout=20)
    assert r.kind == "error" and "File too large" in r.message  # RLIMIT_FSIZE: EFBIG (Python ignores SIGXFSZ)
    r = run_python("for i in range(100000):\n    open(f'{i}', 'w').close()", timeout=30)
    assert r.kind == "disk_limit"


# ---------------------------------------------------------------- the parent's memory
def test_a_stdout_flood_leaves_the_parent_memory_bounded(token):
    r = host_run("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", token, timeout=20)
    assert r["kind"] == "output_limit" and r["message"] == "the code printed more than 4 MiB and was stopped"
    assert r["seconds"] < 10 and len(r["stdout"]) <= 4 * 2**20 + 1
    assert r["rss_growth_kb"] < 64 * 1024  # the old sandbox grew the parent by ~770 MB


def test_a_huge_figure_is_refused_before_anyone_decodes_it(token):
    r = host_run("import matplotlib.pyplot as plt\nplt.figure(figsize=(94, 94))\nplt.plot([1, 2])", token, chart=True,
                 timeout=30)
    assert r["png"] is None and "the figure would be 9400x9400 pixels; the limit is 16000000 pixels" in r["message"]
    assert r["rss_growth_kb"] < 64 * 1024
    # a program that writes the PNG itself: the header is read, the pixels are never decoded
    forged = ("import struct, zlib\nihdr = struct.pack('>IIBBBBB', 100000, 100000, 8, 2, 0, 0, 0)\n"
              "open('chart.png', 'wb').write(b'\\x89PNG\\r\\n\\x1a\\n' + struct.pack('>I', 13) + b'IHDR' + ihdr"
              " + struct.pack('>I', zlib.crc32(b'IHDR' + ihdr)))\n")
    c = render_chart(forged, timeout=20)
    assert c.png is None and c.message == "the chart is 100000x100000 pixels; the limit is 16000000 pixels"


# ---------------------------------------------------------------- the network
@pytest.fixture
def listener():
    """A TCP server on the host's loopback that records every connection."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.settimeout(0.2)
    hits, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                hits.append(1)
                conn.close()
            except OSError:
                pass

    th = threading.Thread(target=accept, daemon=True)
    th.start()
    yield srv.getsockname()[1], hits
    stop.set()
    th.join(2)
    srv.close()


@pytest.mark.parametrize("isolation", ["auto", "hook"])
def test_loopback_listener_receives_nothing_even_below_python_and_after_setns(listener, isolation):
    port, hits = listener
    code = f"""
import ctypes, errno, os, socket, struct
libc = ctypes.CDLL(None, use_errno=True)
def err():
    return errno.errorcode.get(ctypes.get_errno())
try:  # rejoin the host's network namespace (init's), as root could
    fd = os.open("/proc/1/ns/net", os.O_RDONLY)
    print("setns", libc.setns(fd, 0), err())
except OSError as e:
    print("ns", type(e).__name__)
print("setns-any", libc.syscall(308, 0, 0x40000000), err())
s = libc.socket(2, 1, 0)  # AF_INET, SOCK_STREAM below Python's audit hook
print("socket", s, err())
addr = struct.pack("<HH4s8x", 2, socket.htons({port}), bytes([127, 0, 0, 1]))
print("connect", libc.connect(s, addr, 16), err())
print("unix", libc.socket(1, 1, 0), err())
socket.create_connection(("127.0.0.1", {port}), timeout=2)
"""
    r = run_python(code, timeout=20, network_isolation=isolation)
    assert r.stdout.splitlines() == ["ns PermissionError", "setns-any -1 EPERM", "socket -1 EPERM",
                                     "connect -1 EPERM", "unix -1 EPERM"]
    assert r.kind == "blocked" and "network access is blocked" in r.message
    time.sleep(0.3)
    assert hits == []


# ---------------------------------------------------------------- evaluation answers
def test_an_mmcode_program_cannot_read_the_expected_answers():
    sample = mmcode.MMCode().load("sample", limit=1)[0]
    cheat = f"""
import io, json, sys
data = sys.stdin.read()
for line in io.open({str(mmcode.SAMPLE_FILE)!r}):  # io.open: the harness's patched open() only echoes the input
    io = json.loads(json.loads(line)["input_output"])
    for i, o in zip(io["inputs"], io["outputs"]):
        if i == data:
            print(o)
"""
    res = run_problem(cheat, sample.reference)
    assert res["score"] == 0.0 and "PermissionError" in res["message"] and "mmcode_sample.jsonl" in res["message"]
    # the same program, given the answers file as its own input, would have passed: the test can fail
    answers = mmcode.SAMPLE_FILE.read_bytes()
    inp = sample.reference["inputs"][0]
    r = run_python(cheat.replace(repr(str(mmcode.SAMPLE_FILE)), "'answers.jsonl'"), stdin=inp,
                   files={"answers.jsonl": answers}, timeout=20)
    assert stdio_matches(r.stdout.splitlines(), sample.reference["outputs"][0])


def test_a_chart_program_cannot_copy_the_reference_image():
    ref = chartmimic.SAMPLE_DIR / "bar_1.png"
    r = render_chart(f"import shutil\nshutil.copy({str(ref)!r}, 'chart.png')", timeout=20)
    assert r.png is None and "PermissionError" in r.message


def test_legitimate_chart_and_mmcode_programs_still_work():
    c = render_chart(CHART, timeout=60)
    im = Image.open(io.BytesIO(c.png)).convert("RGB")
    assert c.message == "" and im.size == (640, 480)
    for s in mmcode.MMCode().load("sample"):
        res = run_problem(s.reference["solutions"][0], s.reference)
        assert res["score"] == 1.0 and res["passed"] == 1.0, (s.id, res)


# ---------------------------------------------------------------- failing closed
def test_without_seccomp_generated_code_is_refused_with_a_clear_message(no_seccomp, tmp_path):
    st = sandbox.status()
    assert not st.ok and st.line.startswith("sandbox unavailable: rlimits on, landlock ABI 7, seccomp off")
    assert "generated code will NOT run" in st.line
    msg = ("generated code was not run: this machine cannot sandbox it (seccomp off (OSError: seccomp filters are "
           f"not supported)). An operator can set {sandbox.UNSAFE_ENV}=1 to run it with weaker protection.")
    marker = tmp_path / "ran"
    with pytest.raises(sandbox.SandboxUnavailable) as e:
        run_python(f"open({str(marker)!r}, 'w')")
    assert str(e.value) == msg and not marker.exists()
    p = compare.render_preview(f"```python\n{CHART}```", TASKS["Matplotlib chart"])
    assert p.png is None and p.message == msg  # what the app's preview slot shows (see test_app for the page)
    with pytest.raises(sandbox.SandboxUnavailable), mmcode.MMCode().scorer():
        pass
    sandbox.allow_unsafe()  # the operator's explicit opt-in (`viscodex eval --unsafe-executor`)
    assert "UNSAFE" in sandbox.status().line
    assert render_chart(CHART, timeout=60).png is not None


def test_root_cannot_raise_its_limits_or_keep_capabilities():
    code = """
import ctypes, resource
libc = ctypes.CDLL(None, use_errno=True)
print("cap_sys_admin", libc.prctl(23, 21, 0, 0, 0))  # PR_CAPBSET_READ
try:
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    print("raised")
except (ValueError, OSError) as e:
    print("limit kept")
"""
    r = run_python(code, timeout=20)
    assert r.stdout.splitlines() == ["cap_sys_admin 0", "limit kept"]
