"""A real one-node Slurm cluster on this machine, for the tests of `autograder batch --slurm`.

Debian's ``slurm-wlm`` and ``munge`` (installed with apt-get when missing and we are root) run
from a private folder: their own munge key and socket, a slurm.conf on free ports (found through
``SLURM_CONF``), no cgroups (``proctrack/linuxproc``, ``task/none``: they work in a container),
no accounting database (so ``sacct`` is unavailable, as on a cluster without slurmdbd, and state
comes from ``squeue``/``scontrol``). ``KillWait=2`` and ``OverTimeLimit=0`` make a time limit kill
promptly. Nothing touches the system's own munge or Slurm configuration.

Run alone (``python tests/slurm_cluster.py``) it starts a cluster, prints the SLURM_CONF to
export, and waits until Ctrl-C.
"""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd")


class Unavailable(Exception):
    """Slurm cannot run here; the message says why (the tests skip with it)."""


def _find(name: str) -> str | None:
    return shutil.which(name) or next((str(p) for d in ("/usr/sbin", "/sbin", "/usr/bin")
                                       if (p := Path(d) / name).exists()), None)


def ensure_installed() -> None:
    """Install Debian's slurm-wlm and munge when they are missing (as root, with apt-get)."""
    if all(_find(d) for d in DAEMONS) and _find("sbatch"):
        return
    if os.geteuid() != 0:
        raise Unavailable("slurm-wlm and munge are not installed and installing them needs root")
    if not shutil.which("apt-get"):
        raise Unavailable("slurm-wlm and munge are not installed and there is no apt-get to install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]):
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            raise Unavailable(f"`{' '.join(cmd)}` took more than 15 minutes") from None
        if proc.returncode != 0:
            raise Unavailable(f"`{' '.join(cmd)}` failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
    if not all(_find(d) for d in DAEMONS):
        raise Unavailable("apt-get installed slurm-wlm and munge but their daemons are not found")


def _free_ports(count: int) -> list[int]:
    socks, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _memory_mb() -> int:
    """What the node line may claim: the machine's memory less a margin (slurmd drains a node that
    claims more than it has)."""
    with open("/proc/meminfo") as f:
        total_kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    return max(256, total_kb // 1024 - 1024)


class Cluster:
    """munged, slurmctld and slurmd for one node named after this host, under ``base``."""

    def __init__(self, base: Path, cpus: int = 2) -> None:
        self.base = base
        self.cpus = cpus
        self.node = socket.gethostname().split(".")[0]
        self.conf = base / "slurm.conf"
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def _write_config(self) -> None:
        b = self.base
        for d in ("munge", "state", "spool", "log"):
            (b / d).mkdir(parents=True, exist_ok=True)
        os.chmod(b / "munge", 0o700)
        key = b / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        ctld_port, slurmd_port = _free_ports(2)
        user = pwd.getpwuid(os.getuid()).pw_name
        self.conf.write_text(f"""# A one-node test cluster (tests/slurm_cluster.py)
ClusterName=agtest
SlurmctldHost={self.node}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={b / 'munge' / 'munge.socket'}
StateSaveLocation={b / 'state'}
SlurmdSpoolDir={b / 'spool'}
SlurmctldPidFile={b / 'slurmctld.pid'}
SlurmdPidFile={b / 'slurmd.pid'}
SlurmctldLogFile={b / 'log' / 'slurmctld.log'}
SlurmdLogFile={b / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
# a time limit kills at once: no grace, 2 s between SIGTERM and SIGKILL
OverTimeLimit=0
KillWait=2
# finished jobs stay visible to squeue/scontrol (there is no accounting database)
MinJobAge=3600
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
MessageTimeout=20
SchedulerParameters=sched_interval=2
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={_memory_mb()} State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")

    def _start(self, name: str, cmd: list[str]) -> None:
        with open(self.base / "log" / f"{name}.out", "ab") as log:
            self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                                start_new_session=True)

    def _log_tail(self, name: str) -> str:
        texts = []
        for path in (self.base / "log" / f"{name}.out", self.base / "log" / f"{name}.log"):
            if path.exists():
                texts.append(path.read_text(errors="replace")[-1500:])
        return "\n".join(texts)

    def start(self, timeout: float = 60.0) -> None:
        self._write_config()
        m = self.base / "munge"
        self._start("munged", [_find("munged") or "munged", "--foreground", "--force",
                               f"--key-file={m / 'munge.key'}", f"--socket={m / 'munge.socket'}",
                               f"--pid-file={m / 'munged.pid'}", f"--log-file={self.base / 'log' / 'munged.log'}",
                               f"--seed-file={m / 'munged.seed'}"])
        self._wait(lambda: (m / "munge.socket").exists(), "munged", 15)
        self._start("slurmctld", [_find("slurmctld") or "slurmctld", "-D", "-c", "-i", "-f", str(self.conf)])
        self._start("slurmd", [_find("slurmd") or "slurmd", "-D", "-f", str(self.conf), "-N", self.node])

        def node_idle() -> bool:
            proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env, capture_output=True, text=True)
            return proc.returncode == 0 and proc.stdout.strip().rstrip("*") in ("idle", "mixed", "allocated")

        self._wait(node_idle, "slurmctld/slurmd (node idle)", timeout)

    def _wait(self, ready, what: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    tail = self._log_tail(name)
                    self.stop()
                    raise Unavailable(f"{name} exited with code {proc.returncode} at start:\n{tail}")
            if ready():
                return
            time.sleep(0.5)
        tails = "\n".join(f"--- {n}\n{self._log_tail(n)}" for n in self.procs)
        self.stop()
        raise Unavailable(f"{what} not ready after {timeout:g} s:\n{tails}")

    def stop(self) -> None:
        """Cancel what is left, then stop the daemons (slurmd, slurmctld, munged: the reverse order)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--user", str(os.getuid())], env=self.env, capture_output=True, timeout=30)
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        self.procs.clear()


def start_cluster(base: Path | None = None, cpus: int = 2) -> Cluster:
    """Install when needed and start a cluster; raises :class:`Unavailable` with the reason."""
    ensure_installed()
    base = base or Path(tempfile.mkdtemp(prefix="ag-slurm-"))
    cluster = Cluster(base, cpus=cpus)
    cluster.start()
    return cluster


if __name__ == "__main__":  # pragma: no cover - a manual aid
    c = start_cluster()
    print(f"export SLURM_CONF={c.conf}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        c.stop()
