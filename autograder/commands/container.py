"""The limits this process really runs under (memory, CPUs), and what to raise when they are short.

On Gradescope a run killed for memory or by the timeout gives the student 0 and no feedback, and
the only sign of it is a bare "Killed". So run_autograder reads its own container's limits at
start (:func:`read_limits`) and, when they fall short of ``[gradescope]`` in assignment.toml,
still grades but tells the instructor which Autograder Setting to raise (:func:`advice`).

Sources: the process's own cgroup as /proc/self/cgroup names it, and its ancestors up to the
mount's root (a namespaced container sees only its own cgroup, as the root), cgroup v2
(``memory.max``, ``cpu.max``) else v1 (``memory/memory.limit_in_bytes``,
``cpu/cpu.cfs_quota_us`` / ``cpu.cfs_period_us``); ``os.sched_getaffinity`` and
/proc/meminfo's MemTotal. A missing, unreadable or malformed file never raises: what cannot be
read stays unknown (None) and is never reported as a shortfall.

Testing aid: the filesystem root those paths are read under is the ``root`` argument, else
``$AUTOGRADER_CGROUP_ROOT``, else ``/``; a test points it at a faked tree.
"""
from __future__ import annotations

import math
import os
import posixpath
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autograder.authoring.config import Platform

ROOT_ENV = "AUTOGRADER_CGROUP_ROOT"
MIB = 1 << 20
# v1 writes "no limit" as a page-aligned LONG_MAX (9223372036854771712); no real limit is this big.
_UNLIMITED_BYTES = 1 << 60
SETTINGS = "the assignment's Autograder Settings on Gradescope"


@dataclass(frozen=True)
class ContainerLimits:
    """Effective limits (``memory_bytes``, ``cpus``) and the figures they come from; None = unknown.

    ``memory_cgroup``/``cpu_cgroup`` name the hierarchy ("v2", "v1") a limit was read from, None
    when none could be read; read but None ``cgroup_*`` values mean "no cgroup limit".
    """

    memory_bytes: int | None = None
    cpus: float | None = None
    cgroup_memory_bytes: int | None = None
    cgroup_cpus: float | None = None
    machine_memory_bytes: int | None = None
    usable_cpus: int | None = None
    memory_cgroup: str | None = None
    cpu_cgroup: str | None = None

    @property
    def memory_mb(self) -> float | None:
        return None if self.memory_bytes is None else self.memory_bytes / MIB

    def describe(self) -> str:
        """One line for run_autograder's log, e.g. ``memory 512 MB (cgroup v2 limit; machine 16 GB), CPUs 0.5 (...)``."""
        if self.memory_bytes is None:
            memory = "memory unknown"
        elif self.cgroup_memory_bytes is not None and self.cgroup_memory_bytes == self.memory_bytes:
            memory = f"memory {format_mb(self.memory_bytes / MIB)} (cgroup {self.memory_cgroup} limit" + \
                (f"; machine {format_mb(self.machine_memory_bytes / MIB)})" if self.machine_memory_bytes else ")")
        else:
            why = "no cgroup limit" if self.memory_cgroup else "cgroup limit unknown"
            memory = f"memory {format_mb(self.memory_bytes / MIB)} (the machine's; {why})"
        if self.cpus is None:
            cpus = "CPUs unknown"
        elif self.cgroup_cpus is not None and self.cgroup_cpus == self.cpus:
            cpus = f"CPUs {self.cpus:.3g} (cgroup {self.cpu_cgroup} quota" + \
                (f"; {self.usable_cpus} usable)" if self.usable_cpus else ")")
        else:
            why = "no cgroup quota" if self.cpu_cgroup else "cgroup quota unknown"
            cpus = f"CPUs {self.cpus:.3g} (usable by this process; {why})"
        return f"{memory}, {cpus}"

    def to_dict(self) -> dict:
        """For results.json's extra_data: MB rather than bytes, and the one-line description."""
        mb = {k: None if v is None else round(v / MIB, 1) for k, v in asdict(self).items() if k.endswith("_bytes")}
        rest = {k: v for k, v in asdict(self).items() if not k.endswith("_bytes")}
        return {**{k.replace("_bytes", "_mb"): v for k, v in mb.items()}, **rest, "description": self.describe()}


def format_mb(mb: float) -> str:
    if mb >= 1024:
        return f"{mb / 1024:.1f}".removesuffix(".0") + " GB"
    return f"{mb:.0f} MB"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except (OSError, ValueError):
        return None


def _is_dir(path: Path) -> bool:
    """Path.is_dir, but False (not PermissionError) where we may not look."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _own_cgroups(root: Path) -> dict[str, str]:
    """controller -> cgroup path from /proc/self/cgroup; "" is the v2 (unified) entry."""
    text = _read(root / "proc" / "self" / "cgroup") or ""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(","):
            paths.setdefault(controller, parts[2])
    return paths


def _lineage(mount: Path, cgroup_path: str | None) -> list[Path]:
    """The cgroup's folder under ``mount`` and its ancestors, ending with the mount itself (a limit
    on any of them applies; a path outside this namespace's view leaves just the mount)."""
    rel = posixpath.normpath("/" + (cgroup_path or "/")).lstrip("/")
    if rel.startswith("..") or rel == ".":
        rel = ""
    dirs = []
    parts = rel.split("/") if rel else []
    for i in range(len(parts), 0, -1):
        d = mount.joinpath(*parts[:i])
        if _is_dir(d):
            dirs.append(d)
    return dirs + [mount]


def _memory_value(text: str | None) -> tuple[bool, int | None]:
    """(parsed, bytes or None for no limit)."""
    if text is None:
        return False, None
    value = text.strip()
    if value == "max":
        return True, None
    try:
        n = int(value)
    except ValueError:
        return False, None
    if n < 0:
        return False, None
    return (True, None) if n >= _UNLIMITED_BYTES else (True, n)


def _smallest(values: list[tuple[bool, float | None]]) -> tuple[bool, float | None]:
    """Across a cgroup and its ancestors: read at all?, and the tightest limit (None = none)."""
    parsed = [v for ok, v in values if ok]
    limits = [v for v in parsed if v is not None]
    return bool(parsed), (min(limits) if limits else None)


def _cpu_v2(text: str | None) -> tuple[bool, float | None]:
    if text is None:
        return False, None
    fields = text.split()
    try:
        period = float(fields[1]) if len(fields) > 1 else 100000.0
        if not fields or period <= 0:
            return False, None
        if fields[0] == "max":
            return True, None
        quota = float(fields[0])
    except ValueError:
        return False, None
    return (True, quota / period) if quota > 0 and math.isfinite(quota / period) else (False, None)


def _cpu_v1(quota_text: str | None, period_text: str | None) -> tuple[bool, float | None]:
    try:
        quota = int((quota_text or "").strip())
        period = int((period_text or "").strip())
    except ValueError:
        return False, None
    if quota < 0:  # -1: no quota
        return True, None
    if quota == 0 or period <= 0:
        return False, None
    return True, quota / period


def _cgroup_limits(root: Path) -> tuple[str | None, int | None, str | None, float | None]:
    """(memory hierarchy, memory bytes, cpu hierarchy, cpus) from the cgroup files."""
    base = root / "sys" / "fs" / "cgroup"
    own = _own_cgroups(root)
    mem_v: str | None = None
    mem: float | None = None
    cpu_v: str | None = None
    cpu: float | None = None
    # v2: a unified mount at /sys/fs/cgroup (a hybrid host's /sys/fs/cgroup/unified has no controllers).
    if _read(base / "cgroup.controllers") is not None:
        dirs = _lineage(base, own.get(""))
        ok, mem = _smallest([_memory_value(_read(d / "memory.max")) for d in dirs])
        mem_v = "v2" if ok else None
        ok, cpu = _smallest([_cpu_v2(_read(d / "cpu.max")) for d in dirs])
        cpu_v = "v2" if ok else None
    if mem_v is None:
        dirs = _lineage(base / "memory", own.get("memory"))
        ok, mem = _smallest([_memory_value(_read(d / "memory.limit_in_bytes")) for d in dirs])
        mem_v = "v1" if ok else None
    if cpu_v is None:
        for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
            if _is_dir(base / name):
                dirs = _lineage(base / name, own.get("cpu"))
                ok, cpu = _smallest([_cpu_v1(_read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us"))
                                     for d in dirs])
                if ok:
                    cpu_v = "v1"
                    break
    if mem_v is None:
        mem = None
    if cpu_v is None:
        cpu = None
    return mem_v, None if mem is None else int(mem), cpu_v, cpu


def _machine_memory(root: Path) -> int | None:
    for line in (_read(root / "proc" / "meminfo") or "").splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "MemTotal:":
            try:
                kib = int(fields[1])
            except ValueError:
                return None
            return kib * 1024 if kib > 0 else None
    return None


def _usable_cpus() -> int | None:
    try:
        return len(os.sched_getaffinity(0)) or None
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count()


def read_limits(root: str | Path | None = None) -> ContainerLimits:
    """This process's limits, read under ``root`` (default ``$AUTOGRADER_CGROUP_ROOT``, else ``/``).

    Never raises: run_autograder calls it before anything else and must still write results.json.
    """
    try:
        base = Path(root if root is not None else os.environ.get(ROOT_ENV) or "/")
        mem_v, cg_mem, cpu_v, cg_cpu = _cgroup_limits(base)
        machine = _machine_memory(base)
        usable = _usable_cpus()
        known_mem = [m for m in (cg_mem, machine) if m is not None]
        known_cpu = [c for c in (cg_cpu, usable) if c is not None]
        return ContainerLimits(
            memory_bytes=min(known_mem) if known_mem else None, cpus=float(min(known_cpu)) if known_cpu else None,
            cgroup_memory_bytes=cg_mem, cgroup_cpus=cg_cpu, machine_memory_bytes=machine, usable_cpus=usable,
            memory_cgroup=mem_v, cpu_cgroup=cpu_v)
    except Exception:  # noqa: BLE001 - unknown stays unknown; grading goes on
        return ContainerLimits()


def shortfalls(limits: ContainerLimits, platform: Platform) -> list[str]:
    """One sentence per limit below ``platform`` (``cfg.gradescope``): what there is, what is
    needed, and the Autograder Setting to raise. Unknown limits are never reported."""
    out = []
    # Gradescope's "768MB" may mean 768 MiB or 768 million bytes; either reading is enough.
    if limits.memory_bytes is not None and limits.memory_bytes < platform.memory_mb * 10**6:
        need = format_mb(platform.memory_mb)
        out.append(f"This container has {format_mb(limits.memory_bytes / MIB)} of memory; this assignment needs "
                   f"{need}: raise the memory limit in {SETTINGS} to at least {need}.")
    if limits.cpus is not None and limits.cpus < platform.cpus - 1e-6:
        out.append(f"This container has {limits.cpus:.3g} CPUs; this assignment needs {platform.cpus:g}: raise "
                   f"the CPU allocation in {SETTINGS} to at least {platform.cpus:g}.")
    return out


def advice(limits: ContainerLimits, platform: Platform) -> str:
    """Markdown for the top of results.json's output when the container is short of ``platform``
    (``cfg.gradescope``); "" when it is not (or when its limits are unknown)."""
    lines = shortfalls(limits, platform)
    if not lines:
        return ""
    head = ("**For the course staff:** this submission was graded, but in a smaller container than the "
            "assignment needs; a run killed for memory or by the timeout gives the student 0 and no feedback.")
    return "\n".join([head, "", *(f"- {line}" for line in lines)])
