"""Benchmark: does grading fit Gradescope's container (½ vCPU, 768 MB, 10-minute timeout)?

Grades several submissions, each exactly as Gradescope's ``run_autograder`` would (the zip from
``autograder.commands.build.build`` unpacked into a source/, submission/, results/ layout, ``bash
run_autograder`` with AUTOGRADER_ROOT and AUTOGRADER_PYTHON set), and prints for each: wall
time, CPU-seconds of the whole process tree, peak memory of the whole tree (PSS summed over
every process of the tree, sampled every ~0.1 s from /proc/<pid>/smaps_rollup), the number of
processes at that peak, processes left behind, whether results.json is complete and valid, and
the score. Figures only: a grading over budget is reported, not an error (exit status 0); the
exit status is nonzero only when the benchmark itself breaks.

Submissions, generated at run time from the reference (nothing committed):
  reference         reference/transformer_lab as is (no answers notebook)
  template          student_template/transformer_lab
  hang_forward      reference, MultiHeadAttention.forward starts with a loop that never ends
  segfault_forward  reference, MultiHeadAttention.forward starts with a NULL read (segfault)
  memory_forward    reference, MultiHeadAttention.forward starts by allocating 64 MB tensors forever

CPU-seconds: getrusage(RUSAGE_CHILDREN) after minus before, once run_autograder and every process
adopted from its tree were reaped (this process is a child subreaper, so orphans of the tree
come back to it); the wait4 rusage of run_autograder alone and a /proc sample are in the JSON.
AUTOGRADER_PYTHON is this interpreter, except as root when the sandbox account cannot run it: then a
venv of the system Python with this environment's packages and the zip's wheel (sandbox_python).
A grading past --limit-s, or whose tree's PSS passes --mem-guard-mb (a shared machine's safety, far
above the container's 768 MB), is killed, tree and all, and its row says so.

With --container (root, cgroup v1 or v2 writable), each grading runs inside a real cgroup with
the memory limit and CPU quota of assignment.toml's [gradescope] (by default 768 MB and ½ CPU), as
on Gradescope: the kernel then enforces both, and the row says how many processes it killed for
memory (oom_kill) and the cgroup's own peak usage.

Usage: python benchmarks/gradescope_fit.py [--only NAME ...] [--pin CPU] [--container] [--json OUT]
                                           [--limit-s N] [--mem-guard-mb MB] [--keep DIR]
"""
from __future__ import annotations

import argparse
import ast
import ctypes
import json
import os
import platform
import pwd
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT = ROOT / "assignments" / "transformer"
MANIFEST = ASSIGNMENT / "tests" / "manifest.json"
PACKAGE = "transformer_lab"
SAMPLE_S = 0.1
_INCOMPLETE = "The grading run did not complete:"  # the grader's note when the run stopped early (scoring.py)
CPU_METHOD = ("getrusage(RUSAGE_CHILDREN) delta around each grading, after reaping run_autograder "
              "(wait4) and every orphan of its tree adopted by this process (child subreaper)")

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_CHILD_SUBREAPER = 36


# --------------------------------------------------------------------------- measuring a process tree

@dataclass
class ProcInfo:
    ppid: int
    start: int  # start time in clock ticks since boot: (pid, start) names one process, pid reuse aside
    cpu_ticks: int  # utime + stime of the process itself (not of its children)
    state: str


def proc_table() -> dict[int, ProcInfo]:
    """Every process of the machine, from /proc/<pid>/stat (processes that vanish while read are skipped)."""
    table: dict[int, ProcInfo] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        rest = raw[raw.rfind(b")") + 2:].split()  # the command name may hold spaces and parentheses
        try:
            table[int(name)] = ProcInfo(ppid=int(rest[1]), start=int(rest[19]),
                                        cpu_ticks=int(rest[11]) + int(rest[12]), state=rest[0].decode())
        except (IndexError, ValueError):
            continue
    return table


def descendants(roots: Iterable[int], table: dict[int, ProcInfo] | None = None) -> list[int]:
    """``roots`` (those still alive) and every process below them, parents before children."""
    table = proc_table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, info in table.items():
        children.setdefault(info.ppid, []).append(pid)
    out = [r for r in roots if r in table]
    seen = set(out)
    i = 0
    while i < len(out):
        for child in children.get(out[i], ()):
            if child not in seen:
                seen.add(child)
                out.append(child)
        i += 1
    return out


def pss_kb(pid: int) -> int:
    """Proportional set size of one process in KiB (its own pages plus its share of shared ones);
    0 for a process that is gone, a zombie, or unreadable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def describe(pid: int) -> str:
    """``user: command line`` of a process, shortened (for the breakdown at the peak)."""
    try:
        user = pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name
    except (OSError, KeyError):
        user = "?"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = "?"
    return f"{user}: {cmd[:90]}"


class TreeSampler:
    """Samples a process tree: PSS summed over every process of it, and the CPU ticks each one has used.

    ``roots()`` gives the tree's top processes at each sample (a callable, so that processes adopted
    later can join). ``sample()`` returns (total PSS in KiB, number of processes) and keeps the peak,
    the number of processes at the peak and a per-process breakdown of it. ``cpu_s`` is the sum over
    every process ever seen of its last sampled utime+stime: a lower bound (CPU used after a process's
    last sample is missed), useful as a cross-check of the rusage figure.
    """

    def __init__(self, roots: Callable[[], Iterable[int]]):
        self.roots = roots
        self.peak_kb = 0
        self.peak_procs = 0
        self.peak_detail: list[tuple[int, str]] = []  # (KiB, "pid user: cmdline") at the peak
        self.samples = 0
        self.last_kb = 0
        self.last_procs = 0
        self._cpu: dict[tuple[int, int], int] = {}

    def sample(self) -> tuple[int, int]:
        table = proc_table()
        pids = descendants(list(self.roots()), table)
        values = {pid: pss_kb(pid) for pid in pids}
        for pid in pids:
            info = table[pid]
            self._cpu[(pid, info.start)] = max(self._cpu.get((pid, info.start), 0), info.cpu_ticks)
        total = sum(values.values())
        live = sum(1 for pid in pids if table[pid].state != "Z")
        self.samples += 1
        self.last_kb, self.last_procs = total, live
        if total > self.peak_kb:
            self.peak_kb, self.peak_procs = total, live
            self.peak_detail = sorted(((kb, f"{pid} {describe(pid)}") for pid, kb in values.items() if kb),
                                      reverse=True)
        return total, live

    @property
    def cpu_s(self) -> float:
        return sum(self._cpu.values()) / _CLK_TCK


def children_cpu_s() -> float:
    """User + system CPU-seconds of every child of this process that has been waited for, and of
    their waited-for descendants (getrusage(RUSAGE_CHILDREN)); take the difference around a run."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def become_subreaper() -> bool:
    """Make this process a child subreaper (Linux): orphans of its descendants (double forks,
    daemons) are reparented to it instead of init, so they stay in its tree and get reaped here."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def kill_tree(roots: Callable[[], Iterable[int]], rounds: int = 20) -> int:
    """Freeze every process of the tree (SIGSTOP, again until no new one appears: nothing forks
    past it), then SIGKILL them all. Returns how many processes were killed."""
    stopped: set[int] = set()
    for _ in range(rounds):
        new = [p for p in descendants(list(roots())) if p not in stopped and p != os.getpid()]
        if not new:
            break
        for pid in new:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                pass
            stopped.add(pid)
    for pid in stopped:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(stopped)


def reap_adopted(keep: set[int], timeout_s: float = 10.0) -> int:
    """Reap every child of this process that is not in ``keep`` (zombies adopted as subreaper,
    whose CPU time then enters RUSAGE_CHILDREN). Waits up to ``timeout_s`` for the last to exit."""
    reaped = 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        table = proc_table()
        mine = [pid for pid, info in table.items() if info.ppid == os.getpid() and pid not in keep]
        if not mine:
            break
        for pid in mine:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
                reaped += bool(done)
            except ChildProcessError:
                pass
        time.sleep(0.05)
    return reaped


@dataclass
class Measurement:
    wall_s: float = 0.0
    cpu_s: float = 0.0  # RUSAGE_CHILDREN delta (see CPU_METHOD)
    cpu_wait4_s: float = 0.0  # run_autograder's own rusage from wait4 (its waited-for descendants)
    cpu_sampled_s: float = 0.0  # /proc sample, lower bound
    peak_pss_mb: float = 0.0
    procs_at_peak: int = 0
    peak_breakdown: list[str] = field(default_factory=list)
    returncode: int | None = None
    killed: str | None = None  # why the benchmark killed the tree, if it did
    strays: int | None = 0  # processes of the tree alive after run_autograder exited (None: we killed it)
    samples: int = 0


def measure(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
            limit_s: float = 900.0, mem_guard_mb: float = 0.0, adopt_orphans: bool = False,
            progress: Callable[[float, TreeSampler], None] | None = None, progress_every_s: float = 30.0,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn: Callable[[], None] | None = None) -> Measurement:
    """Run ``cmd`` and measure its whole process tree until it exits: wall time, CPU-seconds
    (RUSAGE_CHILDREN delta), peak PSS summed over the tree (sampled every SAMPLE_S), processes at
    the peak. Past ``limit_s``, or when the tree's PSS passes ``mem_guard_mb`` (0: no guard), the
    whole tree is frozen and killed and ``killed`` says why. Processes of the tree still alive
    when ``cmd`` exits are counted as ``strays`` and killed. With ``adopt_orphans`` (needs
    :func:`become_subreaper` first) orphans reparented to this process belong to the tree and
    are reaped here; without it only ``cmd``'s own descendants are seen and nothing else of this
    process's children is touched."""
    me = os.getpid()
    before_children = {pid for pid, info in proc_table().items() if info.ppid == me}
    cpu0 = children_cpu_s()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                            start_new_session=True, preexec_fn=preexec_fn)
    alive = [True]

    def roots() -> list[int]:
        out = [proc.pid] if alive[0] else []
        if adopt_orphans:
            out += [pid for pid, info in proc_table().items()
                    if info.ppid == me and pid != proc.pid and pid not in before_children]
        return out

    sampler = TreeSampler(roots)
    m = Measurement()
    next_progress = t0 + progress_every_s
    status = None
    rusage = None
    try:
        while True:
            waited, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if waited:
                proc.returncode = os.waitstatus_to_exitcode(status)
                alive[0] = False
                break
            tick = time.monotonic()
            total_kb, _ = sampler.sample()
            now = time.monotonic()
            if now - t0 > limit_s:
                m.killed = f"wall-clock limit {limit_s:g} s"
            elif mem_guard_mb and total_kb / 1024 > mem_guard_mb:
                m.killed = f"memory guard {mem_guard_mb:g} MB"
            if m.killed:
                kill_tree(roots)
                _, status, rusage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                alive[0] = False
                break
            if progress is not None and now >= next_progress:
                progress(now - t0, sampler)
                next_progress += progress_every_s
            time.sleep(max(0.0, SAMPLE_S - (time.monotonic() - tick)))
        m.wall_s = time.monotonic() - t0
        if m.killed:
            m.strays = None  # killed by us: whatever is still dying is not the grader's leftover
        else:
            table = proc_table()  # run_autograder exited and is reaped: what is left, it left behind
            left = [pid for pid in descendants(roots(), table) if table[pid].state != "Z"]
            m.strays = len(left)
            if left:
                kill_tree(roots)
    finally:
        if proc.returncode is None:  # the benchmark itself broke (or ^C): leave nothing running
            kill_tree(roots)
            os.wait4(proc.pid, 0)
            proc.returncode = -9
    if adopt_orphans:
        reap_adopted(before_children)
    m.cpu_s = children_cpu_s() - cpu0
    m.cpu_wait4_s = (rusage.ru_utime + rusage.ru_stime) if rusage is not None else 0.0
    m.cpu_sampled_s = sampler.cpu_s
    m.peak_pss_mb = sampler.peak_kb / 1024
    m.procs_at_peak = sampler.peak_procs
    m.peak_breakdown = [f"{kb / 1024:7.0f} MB  {what}" for kb, what in sampler.peak_detail[:12]]
    m.returncode = proc.returncode
    m.samples = sampler.samples
    return m


# --------------------------------------------------------------------------- a real container

class Cgroup:
    """A cgroup with a memory limit and a CPU quota (v2 where its memory and cpu controllers can be
    enabled, else v1's memory and cpu hierarchies), for running a grading as Gradescope's container
    would. Needs root and a writable /sys/fs/cgroup; :meth:`create` raises OSError otherwise."""

    def __init__(self, name: str, memory_mb: int, cpus: float, base: Path = Path("/sys/fs/cgroup")) -> None:
        self.name, self.memory_mb, self.cpus, self.base = name, memory_mb, cpus, base
        self.dirs: list[Path] = []
        self.version = 0

    def create(self) -> Cgroup:
        period = 100_000
        quota = max(1000, int(self.cpus * period))
        limit = self.memory_mb << 20
        v2 = self.base / "cgroup.controllers"
        if v2.exists() and {"memory", "cpu"} <= set(v2.read_text().split()):
            (self.base / "cgroup.subtree_control").write_text("+memory +cpu")
            d = self.base / self.name
            d.mkdir(exist_ok=True)
            self.dirs, self.version = [d], 2
            (d / "memory.max").write_text(str(limit))
            (d / "memory.swap.max").write_text("0") if (d / "memory.swap.max").exists() else None
            (d / "cpu.max").write_text(f"{quota} {period}")
            return self
        mem, cpu = self.base / "memory" / self.name, self.base / "cpu" / self.name
        mem.mkdir(exist_ok=True)
        cpu.mkdir(exist_ok=True)
        self.dirs, self.version = [mem, cpu], 1
        (mem / "memory.limit_in_bytes").write_text(str(limit))
        (cpu / "cpu.cfs_period_us").write_text(str(period))
        (cpu / "cpu.cfs_quota_us").write_text(str(quota))
        return self

    def enter(self) -> None:
        """Move the calling process into the cgroup (a preexec_fn: its children follow)."""
        for d in self.dirs:
            (d / "cgroup.procs").write_text(str(os.getpid()))

    def oom_kills(self) -> int:
        try:
            if self.version == 2:
                events = (self.dirs[0] / "memory.events").read_text().split()
            else:
                events = (self.dirs[0] / "memory.oom_control").read_text().split()
            return int(events[events.index("oom_kill") + 1])
        except (OSError, ValueError, IndexError):
            return -1

    def peak_mb(self) -> float:
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        try:
            return int((self.dirs[0] / name).read_text()) / (1 << 20)
        except (OSError, ValueError):
            return -1.0

    def remove(self) -> None:
        for d in self.dirs:
            for _ in range(50):  # the last processes may still be exiting
                try:
                    d.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


# --------------------------------------------------------------------------- the submissions

def _method_body_line(source: str, cls: str, method: str) -> tuple[int, int]:
    """(1-based line before which to insert, indentation) for the first statement of ``cls.method``
    after its docstring, found with ``ast``."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == method:
                    body = item.body
                    first = body[0]
                    has_doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                        and isinstance(first.value.value, str)
                    if has_doc and len(body) > 1:
                        return body[1].lineno, body[1].col_offset
                    if has_doc:
                        return first.end_lineno + 1, first.col_offset
                    if first.lineno == item.lineno:
                        raise ValueError(f"{cls}.{method}: body on the def line")
                    return first.lineno, first.col_offset
    raise ValueError(f"no method {cls}.{method}")


def insert_at_start(source: str, cls: str, method: str, code: str) -> str:
    """``source`` with ``code`` (lines, unindented) as the first statements of ``cls.method``."""
    line, indent = _method_body_line(source, cls, method)
    lines = source.splitlines(keepends=True)
    pad = " " * indent
    new = [pad + c + "\n" if c.strip() else "\n" for c in code.strip("\n").splitlines()]
    out = "".join(lines[: line - 1] + new + lines[line - 1:])
    ast.parse(out)  # still Python
    return out


INJECTIONS = {
    "hang_forward": "i = 0\nwhile i < 1:\n    pass",
    "segfault_forward": "import ctypes\nctypes.string_at(0)",
    "memory_forward": "import torch as _torch\n_hog = []\nwhile True:\n"
                      "    _hog.append(_torch.ones(16 * 2**20))  # 64 MB of float32, every page written",
}
SUBMISSIONS = ("reference", "template", *INJECTIONS)


def make_submission(name: str, dest: Path, reference: Path = ROOT / "reference",
                    template: Path = ROOT / "student_template") -> Path:
    """Write submission ``name`` as ``dest/<name>/transformer_lab/*.py`` and return ``dest/<name>``
    (the package's .py files only: no answers notebook)."""
    src = (template if name == "template" else reference) / PACKAGE
    root = dest / name
    pkg = root / PACKAGE
    pkg.mkdir(parents=True)
    for path in sorted(src.glob("*.py")):
        shutil.copy(path, pkg / path.name)
    if name in INJECTIONS:
        mha = pkg / "mha.py"
        mha.write_text(insert_at_start(mha.read_text(), "MultiHeadAttention", "forward", INJECTIONS[name]))
    elif name not in ("reference", "template"):
        raise ValueError(f"unknown submission {name!r} (known: {', '.join(SUBMISSIONS)})")
    return root


# --------------------------------------------------------------------------- the Gradescope layout

def build_zip(out_dir: Path) -> Path:
    """dist/autograder.zip built once with autograder.commands.build.build (as the project's tests do)."""
    from autograder.authoring import config as config_mod
    from autograder.commands.build import build

    cfg = config_mod.load(ASSIGNMENT)
    return build(cfg, out_dir)[0]


def sandbox_python(base: Path, autograder_zip: Path) -> tuple[str, str]:
    """The AUTOGRADER_PYTHON for the layouts, and how it was chosen.

    Not root: this interpreter (the harness is installed in it). As root, run_autograder runs
    student code as the sandbox account, which must be able to run the interpreter; when it cannot
    run this one (e.g. a pyenv build under /root), a venv is made in ``base`` from a system Python
    of the same version, borrowing this environment's packages through a .pth line (as the
    project's tests do) and holding the harness from the zip's wheel, as Gradescope's setup.sh
    installs it."""
    from autograder.authoring import config as config_mod
    from autograder.sandbox.confinement import can_reach, ensure_user

    if os.geteuid() != 0:
        return sys.executable, "this interpreter (not root: student code runs as this user)"
    account = ensure_user(config_mod.load(ASSIGNMENT).sandbox.user)
    if account is None:
        return sys.executable, "this interpreter (no sandbox account could be made)"
    uid, gid = account.pw_uid, account.pw_gid
    import sysconfig

    deps = Path(sysconfig.get_paths()["purelib"])
    if can_reach(Path(sys.executable), uid, gid) and can_reach(Path(os.__file__), uid, gid):
        return sys.executable, f"this interpreter ({account.pw_name} can run it)"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    system = next((c for c in (f"/usr/bin/python{version}", f"/usr/local/bin/python{version}")
                   if os.path.exists(c) and can_reach(Path(c), uid, gid)), None)
    if system is None or not can_reach(deps / "torch", uid, gid):
        raise RuntimeError(f"as root, the sandbox account {account.pw_name} cannot run {sys.executable} and "
                           f"there is no Python {version} it may run with this environment's packages")
    venv = base / "venv"
    subprocess.run([system, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "borrowed-deps.pth").write_text(f"{deps}\n")
    with zipfile.ZipFile(autograder_zip) as zf:
        wheel = next(n for n in zf.namelist() if n.startswith("wheels/") and n.endswith(".whl"))
        with zipfile.ZipFile(zf.open(wheel)) as whl:
            whl.extractall(site)
    return str(py), (f"a venv of {system} with this environment's packages and the zip's {Path(wheel).name} "
                     f"({account.pw_name} cannot run {os.path.realpath(sys.executable)})")


def make_layout(base: Path, name: str, autograder_zip: Path, submission: Path) -> Path:
    """An /autograder-like folder (source/, run_autograder, submission/, submission_metadata.json),
    laid out as tests/conftest.py's run_gradescope does."""
    root = base / f"autograder-{name}"
    root.mkdir()
    os.chmod(root, 0o755)
    (root / "source").mkdir()
    zipfile.ZipFile(autograder_zip).extractall(root / "source")
    shutil.copy(root / "source" / "run_autograder", root / "run_autograder")
    shutil.copytree(submission, root / "submission")
    (root / "submission_metadata.json").write_text(json.dumps({"id": 1, "users": [{"name": "S"}]}))
    return root


def check_results(path: Path, manifest_path: Path = MANIFEST) -> dict:
    """Whether results.json parses with Results.read and lists every non-GPU test of the manifest
    (by number, name matching) as passed or failed with 0 <= score <= its points, and the total
    within 0 and the non-GPU maximum (bonus included). GPU tests are not required: on a machine
    without a GPU the grader lists them without a status and with 0 points (gpu_policy exclude).
    ``run_note`` tells a complete results.json that is the grader's fallback, or whose run stopped
    early (the grader's "The grading run did not complete:" note)."""
    from autograder.grading.manifest import read_manifest
    from autograder.grading.results import Results

    entries = [e for e in read_manifest(manifest_path) if not e.gpu]
    bonus = _bonus_parts()
    out = {"exists": path.is_file(), "valid": False, "complete": False, "problems": [], "score": None,
           "max_score": sum(e.max_score for e in entries if e.part not in bonus),
           "bonus_max": sum(e.max_score for e in entries if e.part in bonus), "passed": 0, "tests": 0,
           "fallback": False, "run_note": None}
    if not out["exists"]:
        out["problems"].append("no results.json")
        return out
    try:
        res = Results.read(path)
    except Exception as exc:  # noqa: BLE001 - reported, not raised: that is the measurement
        out["problems"].append(f"does not parse: {str(exc)[:200]}")
        return out
    out["valid"] = True
    out["score"] = res.score
    out["fallback"] = (res.output or "").startswith(("**The autograder could not grade",
                                                     "The autograder failed to start"))
    by_number = {t.number: t for t in res.tests or [] if t.number is not None}
    out["tests"] = len(res.tests or [])
    problems = out["problems"]
    missing = [e.number for e in entries if e.number not in by_number]
    if missing:
        problems.append(f"{len(missing)} non-GPU test(s) missing (first: {', '.join(missing[:5])})")
    for e in entries:
        t = by_number.get(e.number)
        if t is None:
            continue
        if t.name != e.name:
            problems.append(f"test {e.number}: name {t.name!r} != manifest {e.name!r}")
        if t.status not in ("passed", "failed"):
            problems.append(f"test {e.number}: status {t.status!r}")
        if t.score is None or not -1e-9 <= t.score <= e.max_score + 1e-9:
            problems.append(f"test {e.number}: score {t.score} outside [0, {e.max_score}]")
        out["passed"] += t.status == "passed"
    top = out["max_score"] + out["bonus_max"]
    if res.score is None or not -1e-9 <= res.score <= top + 1e-9:
        problems.append(f"score {res.score} outside [0, {top:g}]")
    elif abs(res.score - sum(t.score or 0.0 for t in res.tests or [])) > 1e-3:
        problems.append(f"score {res.score} is not the sum of the tests' scores")
    out["complete"] = not problems
    if out["fallback"]:
        out["run_note"] = "fallback results: the grading itself failed"
    stopped = next((line for line in (res.output or "").splitlines() if _INCOMPLETE in line), None)
    if stopped:
        out["run_note"] = stopped.strip(" -*").replace("**", "")[:300]
    return out


def _bonus_parts() -> set[str]:
    from autograder.authoring import config as config_mod

    return {p.name for p in config_mod.load(ASSIGNMENT).parts if p.bonus}


def _container() -> dict:
    """The [gradescope] budgets of assignment.toml (defaults when the table is absent)."""
    from autograder.authoring import config as config_mod

    gs = getattr(config_mod.load(ASSIGNMENT), "gradescope", None)
    return {"timeout_s": float(getattr(gs, "timeout_s", 600)), "reserve_s": float(getattr(gs, "reserve_s", 0)),
            "memory_mb": float(getattr(gs, "memory_mb", 768)), "cpus": float(getattr(gs, "cpus", 0.5))}


# --------------------------------------------------------------------------- the report

COLUMNS = ("submission", "wall s", "CPU s", "CPU s / cpus", "peak PSS MB", "procs", "strays",
           "results.json", "score", "notes")


def row_cells(r: dict, container: dict) -> list[str]:
    res = r["results"]
    if not res["exists"]:
        state = "missing"
    elif not res["valid"]:
        state = "invalid"
    else:
        state = "complete" if res["complete"] else "incomplete"
    score = "-" if res["score"] is None else f"{res['score']:g}/{res['max_score']:g}"
    notes = []
    if r["killed"]:
        notes.append(f"killed by the benchmark ({r['killed']})")
    if r["wall_s"] > container["timeout_s"]:
        notes.append(f"over the {container['timeout_s']:g} s timeout")
    if r["cpu_s"] / container["cpus"] > container["timeout_s"]:
        notes.append(f"over the timeout at {container['cpus']:g} vCPU")
    if r["peak_pss_mb"] > container["memory_mb"]:
        notes.append(f"over {container['memory_mb']:g} MB")
    if r.get("oom_kills", 0) > 0:
        notes.append(f"{r['oom_kills']} process(es) killed by the cgroup for memory")
    if res["problems"] and res["valid"]:
        notes.append(res["problems"][0])
    if res.get("run_note"):
        notes.append(res["run_note"][:160])
    return [r["name"], f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}", f"{r['cpu_s'] / container['cpus']:.0f}",
            f"{r['peak_pss_mb']:.0f}", str(r["procs_at_peak"]), "-" if r["strays"] is None else str(r["strays"]),
            state, score,
            "; ".join(notes) or "fits"]


def plain_table(rows: list[list[str]]) -> str:
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(f"`{c}`" if i == 0 else c for i, c in enumerate(r)) + " |" for r in rows]
    return "\n".join(lines)


def print_table(rows: list[list[str]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(plain_table(rows))
        return
    table = Table(title="Grading in the Gradescope layout")
    for c in COLUMNS:
        table.add_column(c, justify="right" if c not in ("submission", "results.json", "notes") else "left")
    for r in rows:
        table.add_row(*r)
    Console(width=max(shutil.get_terminal_size().columns, 160)).print(table)


def machine() -> str:
    import torch

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return (f"{platform.machine()}, {os.cpu_count()} cores ({affinity} usable), "
            f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB, "
            f"Python {platform.python_version()}, torch {torch.__version__}, cuda={torch.cuda.is_available()}")


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=SUBMISSIONS, metavar="NAME",
                        help=f"grade only this submission (repeatable; {', '.join(SUBMISSIONS)})")
    parser.add_argument("--pin", metavar="CPU", help="run each grading under `taskset -c CPU` (e.g. 0: one core)")
    parser.add_argument("--container", action="store_true",
                        help="run each grading in a real cgroup with [gradescope]'s memory and CPUs (root)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the figures to this JSON file")
    parser.add_argument("--limit-s", type=float, default=900.0,
                        help="wall-clock limit of one grading; past it its whole tree is killed (default 900)")
    parser.add_argument("--mem-guard-mb", type=float, default=4096.0,
                        help="kill a grading whose tree's PSS passes this many MB, to spare a shared "
                             "machine (default 4096; 0: no guard)")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="build the layouts in DIR and leave them there (default: a temp folder, removed)")
    args = parser.parse_args(argv)
    names = [n for n in SUBMISSIONS if n in (args.only or SUBMISSIONS)]
    if args.pin is not None and shutil.which("taskset") is None:
        parser.error("--pin needs taskset (util-linux)")

    container = _container()
    print(f"machine: {machine()}", flush=True)
    print(f"container budget (assignment.toml [gradescope]): {container}", flush=True)
    print(f"CPU-seconds: {CPU_METHOD}", flush=True)
    print(f"peak memory: PSS summed over the tree, /proc/<pid>/smaps_rollup every {SAMPLE_S:g} s", flush=True)

    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        base = Path(tempfile.mkdtemp(prefix="gradescope-fit-", dir=args.keep))
    else:
        base = Path(tempfile.mkdtemp(prefix="gradescope-fit-"))
    os.chmod(base, 0o755)  # the sandbox account must reach the layout, as in the project's tests
    try:
        t0 = time.monotonic()
        print("building autograder.zip (autograder.commands.build.build) ...", flush=True)
        ag_zip = build_zip(base / "dist")
        print(f"  built in {time.monotonic() - t0:.0f} s", flush=True)
        python, why = sandbox_python(base, ag_zip)
        print(f"AUTOGRADER_PYTHON: {python}: {why}", flush=True)
        subs = base / "submissions"
        subs.mkdir()
        adopt = become_subreaper()
        rows: list[dict] = []
        for i, name in enumerate(names, 1):
            layout = make_layout(base, name, ag_zip, make_submission(name, subs))
            env = {**os.environ, "AUTOGRADER_ROOT": str(layout), "AUTOGRADER_PYTHON": python}
            cmd = ["bash", str(layout / "run_autograder")]
            if args.pin is not None:
                cmd = ["taskset", "-c", args.pin, *cmd]
            print(f"[{i}/{len(names)}] {name}: grading{' on CPU ' + args.pin if args.pin else ''} "
                  f"(limit {args.limit_s:g} s) ...", flush=True)

            def progress(elapsed: float, s: TreeSampler, name: str = name) -> None:
                print(f"  {name}: {elapsed:5.0f} s, PSS now {s.last_kb / 1024:.0f} MB in {s.last_procs} "
                      f"processes (peak {s.peak_kb / 1024:.0f} MB)", flush=True)

            box = None
            if args.container:
                box = Cgroup(f"ag-fit-{os.getpid()}-{i}", int(container["memory_mb"]), float(container["cpus"]))
                try:
                    box.create()
                except OSError as e:
                    parser.exit(2, f"--container: cannot make a cgroup here ({e}); run as root with a "
                                   "writable /sys/fs/cgroup\n")
            try:
                with open(layout / "run_autograder.log", "wb") as log:
                    m = measure(cmd, env=env, cwd=layout, limit_s=args.limit_s, mem_guard_mb=args.mem_guard_mb,
                                adopt_orphans=adopt, progress=progress, stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=box.enter if box else None)
                cg = {"oom_kills": box.oom_kills(), "cgroup_peak_mb": round(box.peak_mb()),
                      "cgroup_version": box.version} if box else {}
            finally:
                if box:
                    box.remove()
            res = check_results(layout / "results" / "results.json")
            row = {"name": name, **asdict(m), **cg, "results": res}
            if cg:
                print(f"  cgroup v{cg['cgroup_version']} ({container['memory_mb']:g} MB, {container['cpus']:g} CPU):"
                      f" peak {cg['cgroup_peak_mb']} MB (page cache included), {cg['oom_kills']} process(es)"
                      " killed for memory", flush=True)
            rows.append(row)
            print(f"  {name}: {m.wall_s:.1f} s wall, {m.cpu_s:.1f} CPU-s (wait4 {m.cpu_wait4_s:.1f}, "
                  f"sampled {m.cpu_sampled_s:.1f}), peak PSS {m.peak_pss_mb:.0f} MB in {m.procs_at_peak} "
                  f"processes, {'-' if m.strays is None else m.strays} strays, exit {m.returncode}"
                  + (f", KILLED: {m.killed}" if m.killed else "")
                  + f"; results.json: {'valid' if res['valid'] else 'NOT valid'}, "
                  f"{'complete' if res['complete'] else 'incomplete'}, score {res['score']}", flush=True)
            for problem in res["problems"][:3] + ([res["run_note"]] if res["run_note"] else []):
                print(f"    problem: {problem}", flush=True)
            print("    at the peak:", flush=True)
            for line in m.peak_breakdown[:8]:
                print(f"      {line}", flush=True)
        cells = [row_cells(r, container) for r in rows]
        print()
        print_table(cells)
        print(f"\nCPU s / cpus: CPU-seconds divided by the container's {container['cpus']:g} vCPU, a lower "
              f"bound of the wall time there (timeout {container['timeout_s']:g} s, "
              f"reserve {container['reserve_s']:g} s, {container['memory_mb']:g} MB).")
        print("\nMarkdown (docs/benchmarks.md):\n")
        print(f"{time.strftime('%Y-%m-%d')}, {machine()}"
              + (f", each grading pinned to CPU {args.pin} (`taskset -c {args.pin}`)" if args.pin else "")
              + (f", each grading in a cgroup of {container['memory_mb']:g} MB and {container['cpus']:g} CPU "
                 "(`--container`)" if args.container else "")
              + f", `python benchmarks/gradescope_fit.py{' --pin ' + args.pin if args.pin else ''}`. "
              f"CPU s: the whole process tree's CPU-seconds ({CPU_METHOD}); CPU s / cpus: those divided by "
              f"the container's {container['cpus']:g} vCPU, a lower bound of its wall time there "
              f"(timeout {container['timeout_s']:g} s); peak PSS: summed over every process of the tree, "
              f"sampled every {SAMPLE_S:g} s; procs: processes at that peak; strays: processes of the tree "
              "still alive after run_autograder exited.\n")
        print(markdown_table(cells))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"machine": machine(), "pin": args.pin, "limit_s": args.limit_s,
                                             "mem_guard_mb": args.mem_guard_mb, "cpu_method": CPU_METHOD,
                                             "container": container, "rows": rows}, indent=1) + "\n")
            print(f"\nfigures written to {args.json}")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"layouts kept in {base}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
