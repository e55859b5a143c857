"""Confinement of the student worker, and the removal of every process student code leaves behind.

Grader side: :func:`plan` turns the assignment's ``[sandbox]`` table into a :class:`Sandbox`
(which account, which limits); it travels to the worker as JSON in ``AG_SANDBOX``.

Worker side: :func:`confine` runs first thing in the worker, while it is still single-threaded
and before any student code is imported (a worker started directly has not imported torch yet;
a fork of the fork server has, and is single-threaded as every fork is): resource limits, a
new network namespace, ``no_new_privs``, then the switch to the unprivileged account. Student code cannot undo any of
it. It returns a report (what held, what the kernel refused) that the grader shows.

Leftovers: the grading process is a child subreaper, so whatever student code forks (even a
double-forked, ``setsid`` daemon) stays in its process tree; :func:`kill_strays` freezes and
kills that tree except the live workers, after every test and at the end. :func:`kill_user`
sweeps a dedicated account at the very end of a Gradescope run.
"""
from __future__ import annotations

import ctypes
import functools
import json
import os
import pwd
import resource
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

ENV_KEY = "AG_SANDBOX"
FALLBACK_USER = "nobody"
Privilege = Literal["auto", "require", "off"]

_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NO_NEW_PRIVS = 38
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000


class SandboxError(Exception):
    """The sandbox that was required cannot be set up (the message says what to fix)."""


@dataclass
class Sandbox:
    """What the worker does to itself before it imports student code."""

    cpu_s: int = 3600
    file_mb: int = 512
    processes: int = 256
    memory_mb: int | None = 8192  # None where a GPU is visible (CUDA reserves huge address space)
    isolate_network: bool = True
    user: str | None = None  # switch to this account (the grader runs as root)
    uid: int | None = None
    gid: int | None = None
    notes: list[str] = field(default_factory=list)  # said at planning time, shown with the results

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Sandbox:
        return cls(**json.loads(text))


# --------------------------------------------------------------------------- planning (grader)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def lookup_user(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def ensure_user(name: str) -> pwd.struct_passwd | None:
    """The account ``name``, created (as a system account without a home) when missing and root."""
    found = lookup_user(name)
    if found is None and os.geteuid() == 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        found = lookup_user(name)
    return found


def can_reach(path: Path, uid: int, gid: int) -> bool:
    """Whether ``uid``/``gid`` (no supplementary groups) may read ``path`` and search its folders."""

    def allowed(st: os.stat_result, bits: tuple[int, int, int]) -> bool:
        if st.st_uid == uid:
            return bool(st.st_mode & bits[0])
        if st.st_gid == gid:
            return bool(st.st_mode & bits[1])
        return bool(st.st_mode & bits[2])

    path = Path(os.path.realpath(path))
    try:
        for parent in reversed(path.parents):
            if not allowed(parent.stat(), (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)):
                return False
        st = path.stat()
    except OSError:
        return False
    need = (stat.S_IRUSR | stat.S_IXUSR, stat.S_IRGRP | stat.S_IXGRP, stat.S_IROTH | stat.S_IXOTH) \
        if stat.S_ISDIR(st.st_mode) else (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)
    return allowed(st, need)


def has_cuda() -> bool:
    """Whether a CUDA GPU is visible, without importing torch where it is not imported yet (it costs
    a process about 150 MB, which a 768 MB grading container cannot spare in the grader's parent)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return bool(torch.cuda.is_available())
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return False
    return any(Path("/dev").glob("nvidia[0-9]*"))


def runtime_paths() -> list[Path]:
    """What the worker must read to start: the interpreter, the standard library, torch, the harness
    (found without importing torch)."""
    import importlib.util

    import autograder

    spec = importlib.util.find_spec("torch")
    torch_dir = Path(spec.origin).parent if spec is not None and spec.origin else Path(os.__file__).parent
    return [Path(sys.executable), Path(os.__file__), torch_dir, Path(autograder.__file__).parent]


def plan(limits, privilege: Privilege = "auto", gpu: bool | None = None) -> Sandbox:
    """The sandbox for a grading run, from ``[sandbox]`` (``limits``) and who we are.

    ``privilege``: as root, "require" runs student code as ``limits.user`` (created if missing,
    else ``nobody``) or raises :class:`SandboxError`; "auto" does the same where it can and says
    so where it cannot; "off" never switches account. Not root: the worker keeps our account.
    """
    if gpu is None:
        gpu = has_cuda()
    box = Sandbox(cpu_s=limits.cpu_s, file_mb=limits.file_mb, processes=limits.processes,
                  memory_mb=None if gpu else limits.memory_mb, isolate_network=limits.isolate_network)
    if os.geteuid() != 0 or privilege == "off":
        return box
    account = ensure_user(limits.user) if privilege == "require" else lookup_user(limits.user)
    account = account or lookup_user(FALLBACK_USER)
    problem = None
    if account is None or account.pw_uid == 0:
        problem = f"there is no unprivileged account ({limits.user!r} or {FALLBACK_USER!r}) to run it as"
    else:
        blocked = [p for p in runtime_paths() if not can_reach(p, account.pw_uid, account.pw_gid)]
        if blocked:
            problem = (f"the account {account.pw_name!r} cannot read {os.path.realpath(blocked[0])} (the Python environment must "
                       "be world-readable, not under a private home folder)")
    if problem is None:
        box.user, box.uid, box.gid = account.pw_name, account.pw_uid, account.pw_gid
        return box
    if privilege == "require":
        raise SandboxError(f"student code must not run as root, but {problem}")
    box.notes.append(f"Student code ran as root: {problem}.")
    return box


def stage_code(src: Path, dest: Path) -> None:
    """Copy a package folder (regular files only, no links) where the sandbox account can read it."""
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o755)
    if not src.is_dir() or src.is_symlink():
        return
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        dirnames[:] = [d for d in dirnames if d != "__pycache__" and not os.path.islink(os.path.join(dirpath, d))]
        target = dest / os.path.relpath(dirpath, src)
        target.mkdir(exist_ok=True)
        os.chmod(target, 0o755)
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            with open(path, "rb") as f, open(target / name, "wb") as g:
                g.write(f.read())
            os.chmod(target / name, 0o644)


# --------------------------------------------------------------------------- confinement (worker)


def _set_limit(kind: int, value: int) -> None:
    soft, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, value if kind != resource.RLIMIT_CPU else value + 5))


def _isolate_network(report: dict) -> None:
    libc = _libc()
    if os.geteuid() == 0:
        ok = libc.unshare(_CLONE_NEWNET) == 0
    else:  # an unprivileged user namespace holding a private network namespace, where allowed
        uid, gid = os.getuid(), os.getgid()
        ok = libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0
        if ok:
            try:
                Path("/proc/self/setgroups").write_text("deny")
                Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
                Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
            except OSError:
                pass
    if ok:
        report["network"] = "isolated"
    else:
        err = ctypes.get_errno()
        report["network"] = "not isolated"
        report["notes"].append(f"Network isolation is not available here ({os.strerror(err)}): "
                               "student code could reach the network.")


def _vm(field: str) -> int:
    """A size of this process's memory in bytes (VmData: its private writable mappings, the heap
    and every anonymous mapping, which RLIMIT_DATA bounds), 0 where /proc cannot tell."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) << 10
    except (OSError, ValueError, IndexError):
        pass
    return 0


def confine(box: Sandbox) -> dict:
    """Apply ``box`` to this process (the worker, before any student code). Returns a report."""
    report: dict = {"user": box.user or pwd.getpwuid(os.getuid()).pw_name, "network": "allowed",
                    "notes": list(box.notes)}
    _set_limit(resource.RLIMIT_CORE, 0)
    try:  # in a container that runs out of memory, the kernel kills student code, never the grader
        Path("/proc/self/oom_score_adj").write_text("1000")
        report["oom_score_adj"] = 1000
    except OSError:
        pass
    _set_limit(resource.RLIMIT_CPU, box.cpu_s)
    _set_limit(resource.RLIMIT_FSIZE, box.file_mb << 20)
    if box.memory_mb:  # on top of what it holds already (torch, Triton): what student code may add
        base = _vm("VmData")
        _set_limit(resource.RLIMIT_DATA, base + (box.memory_mb << 20))
        report["data_mb"] = {"at_start": base >> 20, "limit": (base >> 20) + box.memory_mb}
    if box.isolate_network:
        _isolate_network(report)
    libc = _libc()
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # setuid programs cannot give privileges back
    if box.uid is not None and box.gid is not None:
        # Counted per account, so only meaningful (and only safe) for the dedicated one.
        _set_limit(resource.RLIMIT_NPROC, box.processes)
        os.setgroups([])
        os.setresgid(box.gid, box.gid, box.gid)
        os.setresuid(box.uid, box.uid, box.uid)
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:  # pragma: no cover - the kernel would have to ignore setresuid
            raise SystemExit("the worker could not drop its privileges")
    report["limits"] = {"cpu_s": box.cpu_s, "file_mb": box.file_mb, "memory_mb": box.memory_mb,
                        "processes": box.processes if box.uid is not None else None}
    return report


# --------------------------------------------------------------------------- leftover processes


def become_subreaper() -> bool:
    """Orphans of our descendants become our children (Linux), so none escapes :func:`kill_strays`."""
    if not sys.platform.startswith("linux"):
        return False
    return _libc().prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def _scan(name: str, parse) -> dict[int, tuple[int, int]]:
    """pid -> parse(contents of /proc/PID/<name>) for every process we can see."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/{name}", "rb") as f:
                table[int(entry.name)] = parse(f.read())
        except (OSError, ValueError, KeyError, IndexError):
            continue
    return table


def _owner_and_parent(status: bytes) -> tuple[int, int]:
    fields = dict(line.split(b":", 1) for line in status.splitlines() if b":" in line)
    return int(fields[b"PPid"]), int(fields[b"Uid"].split()[0])


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, real uid) of every process we can see (from /proc/PID/status, which
    also names the real owner of a process that made itself non-dumpable)."""
    return _scan("status", _owner_and_parent)


def _parents() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, -1) of every process, from the short /proc/PID/stat (no owner: cheaper)."""
    return _scan("stat", lambda stat: (int(stat[stat.rindex(b")") + 2:].split(None, 2)[1]), -1))


@functools.cache
def _children_files_work() -> bool:
    return os.path.exists(f"/proc/self/task/{threading.get_native_id()}/children")


def _children(pid: int) -> list[int]:
    """Children of ``pid`` from /proc/PID/task/*/children (no scan of every process on the machine)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                found += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return found


def _walk(root: int, children_of) -> set[int]:
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children_of(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def descendants(root: int, table: dict[int, tuple[int, int]] | None = None) -> set[int]:
    """Every process below ``root``: walked down from it where the kernel lists children (a few
    files per process, which matters as this runs after every test), else from a table of all."""
    if table is None and _children_files_work():
        return _walk(root, _children)
    table = _parents() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    return _walk(root, lambda pid: children.get(pid, []))


def _freeze_and_kill(select, rounds: int = 50) -> int:
    """SIGSTOP what ``select(table)`` returns until nothing new appears, then SIGKILL it all."""
    if not os.path.isdir("/proc"):
        return 0
    stopped: set[int] = set()
    for _ in range(rounds):
        new = select() - stopped
        if not new:
            break
        for pid in new:
            try:
                os.kill(pid, signal.SIGSTOP)
            except (ProcessLookupError, PermissionError):
                pass
        stopped |= new
    for pid in stopped:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + 2
    for pid in stopped:  # reap the ones that were reparented to us
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            time.sleep(0.01)
    return len(stopped)


def kill_strays(keep: set[int] = frozenset(), root: int | None = None) -> int:
    """Kill every descendant of ``root`` (default: this process) except ``keep``; returns how many."""
    root = os.getpid() if root is None else root
    me = os.getpid()
    return _freeze_and_kill(lambda: descendants(root) - set(keep) - {me})


def kill_tree(pid: int) -> int:
    """Kill ``pid`` and everything below it."""
    return _freeze_and_kill(lambda: descendants(pid) | ({pid} if os.path.exists(f"/proc/{pid}") else set()))


def kill_user(uid: int) -> int:
    """Kill every process of the (dedicated, unprivileged) account ``uid``."""
    if uid == 0:
        raise ValueError("refusing to kill root's processes")
    return _freeze_and_kill(lambda: {p for p, (_, u) in _processes().items() if u == uid})
