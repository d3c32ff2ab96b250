"""The seccomp-bpf policy of the sandbox child, built with libseccomp (through `pyseccomp`, a
ctypes binding with the API of libseccomp's own Python module, so it needs only libseccomp.so.2,
not a Python built against it).

Default allow, then deny what a numpy/matplotlib program never needs and what would let it leave
its box: starting programs or processes, signalling or inspecting other processes, namespaces,
sockets, sessions, mounts, keys, BPF, io_uring (which would run system calls past this filter),
raising its own limits, kernel and clock administration. Denied calls fail with EPERM (so Python
raises PermissionError, which the child reports as "blocked"); other architectures' system call
tables (x32, i386 via int 0x80) kill the whole process. Stdlib + pyseccomp
only: this file runs in the child.
"""
from __future__ import annotations

import errno
import os

CLONE_THREAD = 0x00010000
TIOCSTI, TIOCLINUX = 0x5412, 0x541C

# Denied outright.
DENY = (
    # programs and processes (clone without CLONE_THREAD: below)
    "execve", "execveat", "fork", "vfork",
    # other processes: signals (own pid: below), tracing, memory, handles
    "tkill", "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "process_mrelease", "kcmp",
    "pidfd_open", "pidfd_send_signal", "pidfd_getfd", "migrate_pages", "move_pages",
    "setpriority", "ioprio_set",
    # namespaces, sessions, identity
    "setns", "unshare", "setsid", "setpgid", "setuid", "setgid", "setreuid", "setregid", "setresuid",
    "setresgid", "setgroups", "setfsuid", "setfsgid", "capset", "personality",
    # network: every socket (the child has no socket fds either)
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    # limits (set by the child before this filter; root could raise them again)
    "setrlimit",
    # mounts and filesystems
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig",
    "fspick", "mount_setattr", "name_to_handle_at", "open_by_handle_at", "mknod", "mknodat", "quotactl",
    "swapon", "swapoff", "acct",
    # kernel objects that reach past this filter or other users
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "fanotify_init",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # kernel and clock administration
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot", "syslog",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname", "setdomainname", "iopl",
    "ioperm", "vhangup", "lookup_dcookie", "uselib", "ustat", "sysfs", "_sysctl", "nfsservctl",
)


def build_filter(pid: int | None = None):
    """The filter for process `pid` (default: this one); `.load()` installs it (needs
    no_new_privs, which libseccomp also sets)."""
    import pyseccomp as sc

    pid = os.getpid() if pid is None else pid
    eperm = sc.ERRNO(errno.EPERM)
    f = sc.SyscallFilter(sc.ALLOW)
    # another architecture's system call table (x32, int 0x80): the whole process dies, not only
    # the calling thread (libseccomp's default), which could leave the rest running
    f.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    for name in DENY:
        _add(sc, f, eperm, name)
    # threads only: clone with CLONE_THREAD; clone3 hides its flags in a struct, so it answers
    # ENOSYS and glibc falls back to clone (what container runtimes do)
    _add(sc, f, eperm, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, 0))
    _add(sc, f, sc.ERRNO(errno.ENOSYS), "clone3")
    # signals to itself only (raise(), faulthandler, threads of its own)
    for name in ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
        _add(sc, f, eperm, name, sc.Arg(0, sc.NE, pid))
    # limits of itself, read-only
    _add(sc, f, eperm, "prlimit64", sc.Arg(0, sc.NE, 0))
    _add(sc, f, eperm, "prlimit64", sc.Arg(2, sc.NE, 0))
    # scheduling of other tasks
    for name in ("sched_setaffinity", "sched_setscheduler", "sched_setparam", "sched_setattr"):
        _add(sc, f, eperm, name, sc.Arg(0, sc.NE, 0))
    # typing into a terminal the parent owns
    for req in (TIOCSTI, TIOCLINUX):
        _add(sc, f, eperm, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, req))
    return f


def _add(sc, f, action, name: str, *args) -> None:
    try:
        nr = sc.resolve_syscall(sc.Arch.NATIVE, name)
    except Exception:  # noqa: BLE001 - libseccomp does not know the name at all
        return
    if nr < 0:  # not a system call of this architecture (e.g. fork on aarch64)
        return
    f.add_rule(action, nr, *args)
