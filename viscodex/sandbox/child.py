"""The sandbox child: `python -I viscodex/sandbox/child.py SETTINGS_JSON`, started by viscodex.sandbox.

It locks itself down before any byte of the untrusted program is read, in this order:
  1. parent-death signal (the child dies with the app), resource limits (address space, CPU
     seconds, file size, open files, core dumps), no_new_privs, capabilities dropped (root too);
  2. Landlock: read beneath the Python installation (less the viscodex package, which ships the
     evaluation samples), the system libraries and fonts; read/write beneath the job's folder;
     no TCP, no signals or abstract sockets outside itself;
  3. seccomp-bpf (seccomp_filter.py): no programs, processes, sockets, namespaces, ...;
then runs the trusted setup snippet, installs an audit hook that turns the common refusals into
clear messages (the kernel layers enforce them), runs the program and the trusted teardown, and
writes a status file. When a required layer cannot be installed it writes kind "unavailable" and
exits without running anything.

Runs outside the package (stdlib + pyseccomp only): the viscodex package folder is not readable
once locked down, so its two helpers are loaded by file path before that.
"""
import ctypes
import importlib.util
import json
import os
import resource
import signal
import sys
import sysconfig
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP = 1, 38, 24
LINUX_CAPABILITY_VERSION_3 = 0x20080522
# system paths a numpy/matplotlib program reads: shared libraries, the loader cache, fonts, zones
SYSTEM_READ = ("/lib", "/lib64", "/lib32", "/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/local/lib",
               "/usr/share/fonts", "/usr/local/share/fonts", "/usr/share/zoneinfo", "/usr/share/matplotlib",
               "/etc/ld.so.cache", "/etc/localtime", "/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")
HIDDEN_PREFIXES = ("viscodex", "__editable__")  # this package (answers and reference charts) and its finder


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def read_roots(extra_hidden: list[str]) -> list[str]:
    """Folders to allow reading: every sys.path folder and the system paths, with the viscodex
    package (by name at the top of a sys.path folder, and the given paths) cut out. Landlock only
    allows, never denies beneath an allowed folder, so a folder holding a hidden path is replaced
    by its other entries, recursively."""
    roots = {os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)}
    roots |= {os.path.realpath(p) for p in (sysconfig.get_config_var("LIBDIR") or "",) if p and os.path.isdir(p)}
    hidden = {os.path.realpath(p) for p in extra_hidden}
    for r in roots:
        hidden |= {os.path.join(r, n) for n in os.listdir(r) if n.startswith(HIDDEN_PREFIXES)}
    out: list[str] = [p for p in SYSTEM_READ if not any(h.startswith(p.rstrip("/") + "/") or h == p for h in hidden)]
    for p in SYSTEM_READ:  # a system folder that holds the package (a Debian or /usr/local install)
        if p not in out and os.path.isdir(p):
            roots.add(p)
    for r in sorted(roots):
        if not any(r.startswith(q + "/") for q in roots):  # a root inside another is covered by it
            _allow_around(r, hidden, out)
    return out


def _allow_around(path: str, hidden: set[str], out: list[str]) -> None:
    if path in hidden:
        return
    if not any(h.startswith(path + "/") for h in hidden):
        out.append(path)
        return
    try:
        names = os.listdir(path)
    except OSError:
        return
    for n in names:
        _allow_around(os.path.join(path, n), hidden, out)


def _set_limits(cfg: dict) -> None:
    for res, value in ((resource.RLIMIT_AS, cfg["mem_mb"] * 2**20), (resource.RLIMIT_CPU, cfg["cpu_s"]),
                       (resource.RLIMIT_FSIZE, cfg["file_mb"] * 2**20), (resource.RLIMIT_NOFILE, cfg["nofile"]),
                       (resource.RLIMIT_CORE, 0), (resource.RLIMIT_MEMLOCK, 0), (resource.RLIMIT_MSGQUEUE, 0)):
        resource.setrlimit(res, (value, value))


def _drop_capabilities(libc) -> None:
    """Root in CI and in many containers: empty the bounding set and every capability set, so
    uid 0 keeps only what plain file ownership gives (Landlock still decides what it may open)."""
    for cap in range(64):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() == 22:  # EINVAL: past the last cap
            break
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable x 2: all zero
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def lock_down(cfg: dict) -> dict:
    """Install every layer it can; returns {layer: "on" / "ABI n" / "off (why)"}. main() then
    refuses to run the program when a strong layer is off and cfg["require"] is set."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    _set_limits(cfg)
    layers = {"rlimits": "on"}
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS failed")
    try:
        _drop_capabilities(libc)
        layers["capabilities"] = "dropped"
    except OSError as e:
        layers["capabilities"] = f"kept ({e.strerror})"
    # both helpers and pyseccomp are loaded first: pyseccomp looks libseccomp up with `ldconfig -p`,
    # a program Landlock would no longer let it start
    try:
        seccomp_filter = _load("seccomp_filter").build_filter()
    except Exception as e:  # noqa: BLE001 - e.g. pyseccomp or libseccomp.so.2 missing
        seccomp_filter, layers["seccomp"] = None, f"off ({type(e).__name__}: {e})"
    try:
        abi = _load("landlock_rules").restrict(read_roots(cfg["hide"]), [cfg["job"]])
        layers["landlock"] = f"ABI {abi}"
    except Exception as e:  # noqa: BLE001 - any failure means the layer is off
        layers["landlock"] = f"off ({e})"
    if seccomp_filter is not None:
        try:
            seccomp_filter.load()
            layers["seccomp"] = "on"
        except Exception as e:  # noqa: BLE001 - a kernel without seccomp filters
            layers["seccomp"] = f"off ({type(e).__name__}: {e})"
    return layers


def strong(layers: dict) -> bool:
    return layers.get("seccomp") == "on" and layers.get("landlock", "").startswith("ABI")


# ------------------------------------------------------------------ after the lockdown
class SandboxBlocked(PermissionError):
    pass


_BLOCKED = ("socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname",
            "socket.gethostbyname_ex", "socket.gethostbyaddr", "socket.sendto", "socket.socketpair",
            "subprocess.Popen", "os.system", "os.fork", "os.forkpty", "os.posix_spawn", "os.exec",
            "os.spawn", "os.startfile", "pty.spawn", "os.kill", "os.killpg")
_hits: list[str] = []


def _hook(event, args):
    """Messages only: the kernel layers enforce these refusals whatever route the code takes."""
    if event in _BLOCKED:
        what = ("network access" if event.startswith("socket") else
                "signalling processes" if "kill" in event else "starting processes")
        if "kill" in event and args and args[0] == os.getpid():
            return  # signalling itself is fine
        msg = f"viscodex sandbox: {what} is blocked ({event})"
        _hits.append(msg)
        raise SandboxBlocked(msg)


def _status(path: str, **kw) -> None:
    with open(path, "w") as f:
        json.dump(kw, f)


def _run(src: str, name: str, env: dict) -> None:
    exec(compile(src, name, "exec"), env)


def probe(cfg: dict, layers: dict) -> dict:
    """Check that the layers hold (used once per app start by viscodex.sandbox.status)."""
    found = dict(layers)
    try:
        os.close(os.open(cfg["probe_file"], os.O_RDONLY))
        found["landlock_holds"] = False
    except PermissionError:
        found["landlock_holds"] = True
    try:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        found["seccomp_holds"] = False
    except PermissionError:
        found["seccomp_holds"] = True
    return found


def main() -> None:
    cfg = json.loads(sys.argv[1])
    status = cfg["status"]
    layers = lock_down(cfg)
    if cfg.get("probe_file"):
        _status(status, kind="probe", layers=probe(cfg, layers))
        return
    if cfg["require"] and not strong(layers):
        _status(status, kind="unavailable", layers=layers)
        sys.exit(5)
    import runpy

    try:
        if cfg["setup"]:
            _run(cfg["setup"], "<sandbox setup>", {"__name__": "__sandbox_setup__"})
        sys.addaudithook(_hook)
        try:
            g = runpy.run_path(cfg["script"], run_name="__main__")
        except SystemExit as e:
            if e.code not in (None, 0):
                raise
            g = {}
        if cfg["teardown"]:
            _run(cfg["teardown"], "<sandbox teardown>", {"__name__": "__sandbox_teardown__", "user_globals": g})
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
        _status(status, kind="exit", code=code)
        sys.exit(code)
    except MemoryError:
        _status(status, kind="memory")
        sys.exit(3)
    except SandboxBlocked as e:
        _status(status, kind="blocked", detail=str(e))
        sys.exit(4)
    except BaseException as e:  # noqa: BLE001 - report whatever the program raised
        if _hits:  # a library wrapped the refusal in its own error (urllib's URLError)
            _status(status, kind="blocked", detail=_hits[0])
            sys.exit(4)
        tb = traceback.format_exception(type(e), e, e.__traceback__)
        _status(status, kind="error", detail="".join(tb[-3:]).strip()[-2000:], error=type(e).__name__)
        sys.exit(1)
    _status(status, kind="ok")


if __name__ == "__main__":
    main()
