"""Atomic output folders: every command that writes a folder writes it here, so that a crash, a
signal or a second command never loses data and never leaves a half-written folder at `--out`.

    with OutputFolder(out, force=force, sources=[vlm_path, coder_path], flag="--out") as tmp:
        ... write files into tmp ...
        # leaving the block without an exception renames tmp into place

What it guarantees (each rule is a defect a user hit, issue 16):

* `--out` may not equal, contain or lie inside a source folder (resolved, symlinks followed): a
  forced overwrite would delete the sources.
* `--force` replaces only a previous viscodex output (a folder holding MARKER or a legacy marker
  such as viscodex_recipe.yaml) or an empty folder; never files the command did not write.
* One writer per `--out`: an exclusive lock file `.<name>.viscodex-lock` beside it (fcntl lock,
  released by the kernel when the process dies, so SIGKILL cannot leave it stuck).
* Work happens in `.<name>.viscodex-tmp-<pid>` beside `--out` (same filesystem, so the final
  rename is atomic); the processes of one torchrun job share `.<name>.viscodex-tmp-job<...>`
  (`job_tag`), taken by rank 0 alone. Its owner (pid + process start time, so a reused pid is not mistaken for the
  owner) is recorded inside; the next run removes temp folders whose owner is gone and says so.
* SIGTERM and SIGHUP are handled like Ctrl-C (the temp folder is removed on the way out).
* Every file and the folder are fsynced before the rename; the parent after it.
* Replacing an old output renames it to `.<name>.viscodex-old-<pid>` first; a kill between the
  two renames is repaired by the next run (the old output is put back).
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import signal
import threading
from pathlib import Path
from typing import Iterable

from ..errors import OutputError

log = logging.getLogger(__name__)

MARKER = ".viscodex-output"  # written into every folder this module commits
OWNER_FILE = ".viscodex-owner"  # inside a temp folder: who is writing it
LEGACY_MARKERS = ("viscodex_recipe.yaml",)  # outputs of viscodex versions before MARKER existed
FREE_SPACE_MARGIN = 64 * 1024**2  # config, tokenizer, index and filesystem overhead


class Terminated(KeyboardInterrupt):
    """SIGTERM/SIGHUP, raised in the main thread so clean-up runs as for Ctrl-C."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


# ------------------------------------------------------------------ process identity
def process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), or None if no such process.
    With the pid it identifies a process uniquely: pids are reused, start times are not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return _alive_without_proc(pid)
    # field 2 (comm) may hold spaces and parentheses: split after its closing parenthesis
    return stat.rsplit(")", 1)[1].split()[19]


def _alive_without_proc(pid: int) -> str | None:
    """No /proc (macOS): liveness only."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "?"


def _owner_alive(folder: Path, pid_from_name: str) -> bool:
    """Whether the process that made `folder` (temp or old) is still running."""
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
        pid, start = int(owner["pid"]), str(owner["start"])
    except (OSError, ValueError, KeyError, TypeError):
        if not pid_from_name.isdigit():
            return False
        pid, start = int(pid_from_name), None
    now = process_start(pid)
    if now is None:
        return False
    return start is None or now == "?" or start == "?" or now == start


# ------------------------------------------------------------------ checks
def _resolved(p: str | os.PathLike) -> Path:
    return Path(os.path.realpath(Path(p).expanduser()))


def check_not_overlapping(out: Path, sources: Iterable[str | os.PathLike], flag: str = "--out") -> None:
    """Refuse an output folder that equals, contains or lies inside a (local) source folder."""
    o = _resolved(out)
    for s in sources:
        if s is None or not Path(s).expanduser().exists():
            continue  # Hub ids: nothing local to protect
        src = _resolved(s)
        if o == src:
            why = "is"
        elif o in src.parents:
            why = "contains"
        elif src in o.parents:
            why = "lies inside"
        else:
            continue
        raise OutputError(f"{flag} {out} {why} the source folder {src}; writing there would destroy it: "
                          f"choose an output folder outside every source")


def is_viscodex_output(folder: Path, markers: Iterable[str] = LEGACY_MARKERS) -> bool:
    return (folder / MARKER).is_file() or any((folder / m).is_file() for m in markers)


def check_out(out: str | os.PathLike, force: bool, *, sources: Iterable = (), flag: str = "--out",
              markers: Iterable[str] = LEGACY_MARKERS) -> Path:
    """All checks that can run before any work: returns the absolute output path."""
    out = Path(out).expanduser().absolute()
    check_not_overlapping(out, sources, flag)
    for p in [out, *out.parents]:
        if p.exists() and not p.is_dir():
            raise OutputError(f"{flag} {out}: {p} is a file, not a folder; choose another {flag}")
        if p.exists():
            break
    if out.exists():
        if not force:
            raise OutputError(f"{out} already exists; pass --force to overwrite it")
        if any(out.iterdir()) and not is_viscodex_output(out, markers):
            raise OutputError(f"{flag} {out} holds files viscodex did not write; --force replaces only a previous "
                              f"viscodex output: choose an empty or new folder")
    return out


def check_free_space(folder: Path, nbytes: int, flag: str = "--out") -> None:
    """Fail before writing when the output cannot fit (its size is known from the plan)."""
    p = folder
    while not p.exists():
        p = p.parent
    free = shutil.disk_usage(p).free
    if free < nbytes + FREE_SPACE_MARGIN:
        raise OutputError(f"{flag} {folder}: needs {nbytes / 1e9:.2f} GB but only {free / 1e9:.2f} GB are free on "
                          f"that disk; free space or choose another {flag}")


# ------------------------------------------------------------------ durability
def fsync_tree(folder: Path) -> None:
    """fsync every file and folder under `folder` (the folder included)."""
    for root, dirs, files in os.walk(folder):
        for f in files:
            fd = os.open(os.path.join(root, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, text: str) -> Path:
    """Replace one file atomically and durably: a kill leaves the old file or the new one, never a
    half-written one, and no temp file (it is removed when the write fails; a SIGKILL can leave
    only `.<name>.tmp-<pid>`, which the next write of that file removes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob_escape(path.name)}.tmp-*"):
        tag = stale.name.rsplit("-", 1)[1]
        if tag.isdigit() and process_start(int(tag)) is None:
            stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _sibling(out: Path, kind: str, tag: str | int) -> Path:
    return out.parent / f".{out.name}.viscodex-{kind}-{tag}"


def job_tag() -> str:
    """The temp-folder tag of this process: its pid, or for the ranks of one torchrun / accelerate
    job a tag they all compute alike (the rendezvous id and port the launcher gave every rank), so
    that the rank that writes and the ranks that only take part in a collective save name one
    folder. Staleness is still judged by the owner (pid + start time) recorded inside."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return str(os.getpid())
    job = f"{os.environ.get('MASTER_PORT', '')}-{os.environ.get('TORCHELASTIC_RUN_ID', '')}"
    return "job" + re.sub(r"[^A-Za-z0-9_-]", "", job)[:48]


def finalize(tmp: Path, out: Path) -> None:
    """Durably and atomically move a finished folder into place, replacing an old output."""
    (tmp / MARKER).write_text(json.dumps({"pid": os.getpid()}) + "\n")
    (tmp / OWNER_FILE).unlink(missing_ok=True)
    fsync_tree(tmp)
    old = None
    if out.exists():
        old = _sibling(out, "old", os.getpid())
        os.rename(out, old)
    os.rename(tmp, out)
    _fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def recover(out: Path) -> list[str]:
    """Repair what killed runs left beside `out` (call while holding the lock). Returns notes."""
    notes = []
    for p in sorted(out.parent.glob(f".{glob_escape(out.name)}.viscodex-*-*")):
        kind, _, tag = p.name[len(out.name) + 11:].partition("-")
        if kind not in ("tmp", "old") or not p.is_dir() or _owner_alive(p, tag):
            continue
        if kind == "old" and not out.exists():
            os.rename(p, out)  # killed between the two renames of finalize(): put the old output back
            notes.append(f"restored {out} from an interrupted replacement ({p.name})")
            continue
        size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        shutil.rmtree(p, ignore_errors=True)
        notes.append(f"removed {p.name} ({size / 1e9:.2f} GB) left by an interrupted run")
    return notes


def glob_escape(s: str) -> str:
    import glob

    return glob.escape(s)


# ------------------------------------------------------------------ lock
@contextlib.contextmanager
def locked(out: Path, flag: str = "--out"):
    """Exclusive lock on `out` for the duration of the block (a lock file beside it)."""
    import fcntl

    path = out.parent / f".{out.name}.viscodex-lock"
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise _os_error(out, e, flag) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputError(f"{flag} {out} is being written by another viscodex command (pid {holder or '?'}); "
                                  f"wait for it to finish or choose another {flag}") from None
            raise
        # the holder before us may have unlinked the file after we opened it: lock the live one
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


# ------------------------------------------------------------------ signals
_received: list[int] = []  # SIGTERM / SIGHUP received inside terminate_as_interrupt


def raise_if_terminated() -> None:
    """Raise Terminated again for a signal already received. Python prints and drops an exception
    raised while a `__del__` runs, so a signal landing there would be lost; long loops (training
    steps) call this at safe points so that it still stops the run."""
    if _received:
        raise Terminated(_received[0])


@contextlib.contextmanager
def terminate_as_interrupt():
    """While the block runs, SIGTERM and SIGHUP raise Terminated (a KeyboardInterrupt) in the main
    thread, so `finally` clean-up runs as for Ctrl-C. No-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        _received.append(signum)
        raise Terminated(signum)

    sigs = [s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    prev = {s: signal.signal(s, handler) for s in sigs}
    try:
        yield
    finally:
        _received.clear()
        for s, h in prev.items():
            signal.signal(s, h)


def _os_error(out: Path, e: OSError, flag: str) -> OutputError:
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"{flag} {out}: cannot write there ({e.strerror}); choose a writable folder")
    if e.errno == errno.ENOSPC:
        return OutputError(f"{flag} {out}: the disk is full; free space or choose another {flag}")
    if e.errno == errno.ENOTDIR:
        return OutputError(f"{flag} {out}: a parent is a file, not a folder; choose another {flag}")
    return OutputError(f"{flag} {out}: {e.strerror or e}")


# ------------------------------------------------------------------ the helper
class OutputFolder:
    """Context manager giving a temp folder that becomes `out` when the block succeeds.

    `check_out` runs in the constructor (before any work); the lock, stale clean-up and temp
    folder are taken on entry. `need_bytes` (optional) is checked against free space on entry or
    later with `reserve`. `tag` names the temp folder (default: this pid; see `job_tag`). The
    output is checked once more just before the rename: a long run (training) must not replace
    what someone else put at `out` meanwhile.
    """

    def __init__(self, out: str | os.PathLike, *, force: bool = False, sources: Iterable = (), flag: str = "--out",
                 markers: Iterable[str] = LEGACY_MARKERS, need_bytes: int | None = None, tag: str | int | None = None):
        self.force, self.flag, self.markers = force, flag, tuple(markers)
        self.sources = [s for s in sources if s is not None]
        self.out = check_out(out, force, sources=self.sources, flag=flag, markers=self.markers)
        self.need_bytes = need_bytes
        self.tmp = _sibling(self.out, "tmp", os.getpid() if tag is None else tag)
        self._stack: contextlib.ExitStack | None = None

    def reserve(self, nbytes: int) -> None:
        check_free_space(self.out, nbytes, self.flag)

    def __enter__(self) -> Path:
        stack = contextlib.ExitStack()
        try:
            try:
                self.out.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise _os_error(self.out, e, self.flag) from None
            stack.enter_context(locked(self.out, self.flag))
            stack.enter_context(terminate_as_interrupt())
            for note in recover(self.out):
                log.info("%s", note)
            # the lock is ours now: re-check what the first check saw (another run may have finished)
            check_out(self.out, self.force, sources=self.sources, flag=self.flag, markers=self.markers)
            if self.need_bytes is not None:
                self.reserve(self.need_bytes)
            shutil.rmtree(self.tmp, ignore_errors=True)
            try:
                self.tmp.mkdir()
                (self.tmp / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(),
                                                               "start": process_start(os.getpid())}))
            except OSError as e:
                raise _os_error(self.out, e, self.flag) from None
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            stack.close()
            raise
        self._stack = stack
        return self.tmp

    def __exit__(self, et, ev, tb) -> None:
        try:
            if et is None:
                check_out(self.out, self.force, sources=self.sources, flag=self.flag, markers=self.markers)
                try:
                    finalize(self.tmp, self.out)
                except OSError as e:
                    raise _os_error(self.out, e, self.flag) from None
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self._stack.close()


__all__ = ["OutputFolder", "OutputError", "Terminated", "check_out", "check_free_space", "finalize", "fsync_tree",
           "job_tag", "raise_if_terminated", "recover", "write_atomic", "locked", "terminate_as_interrupt", "process_start", "MARKER"]
