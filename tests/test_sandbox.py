"""The sandbox's pieces on their own: planning, staging, confinement, and the leftover sweep."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

from autograder.sandbox import confinement as sandbox
from autograder.grading.submission import safe_extract
from autograder.sandbox.client import Limits, WorkerClient
from autograder.authoring.config import SandboxLimits
from autograder.sandbox.errors import StudentCodeError
from autograder.sandbox.confinement import Sandbox, SandboxError, can_reach, plan, stage_code
from autograder.grading.submission import copy_submission


def test_stage_code_copies_regular_files_only(tmp_path):
    src = tmp_path / "pkg"
    (src / "sub").mkdir(parents=True)
    (src / "a.py").write_text("a = 1\n")
    (src / "sub" / "b.py").write_text("b = 2\n")
    secret = tmp_path / "secret.py"
    secret.write_text("hidden\n")
    os.symlink(secret, src / "mha.py")
    os.symlink(tmp_path, src / "linked_dir")
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    dest = tmp_path / "staged" / "pkg"
    stage_code(src, dest)
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    assert files == ["a.py", "sub", "sub/b.py"]
    assert stat.S_IMODE((dest / "a.py").stat().st_mode) == 0o644
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755


def test_can_reach_follows_every_folder_on_the_way(tmp_path):
    other = 12345  # an account that owns nothing here
    outer = tmp_path / "outer"
    (outer / "inner").mkdir(parents=True)
    target = outer / "inner" / "f.py"
    target.write_text("")
    for p in (tmp_path, outer, outer / "inner"):
        os.chmod(p, 0o755)
    os.chmod(target, 0o644)
    chain_open = all(os.stat(p).st_mode & stat.S_IXOTH for p in Path(tmp_path).parents)
    assert can_reach(target, other, other) == chain_open
    os.chmod(outer, 0o700)
    assert not can_reach(target, other, other)
    os.chmod(outer, 0o755)
    os.chmod(target, 0o600)
    assert not can_reach(target, other, other)
    assert not can_reach(tmp_path / "missing.py", other, other)


def test_plan_as_a_normal_user_keeps_the_account(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    box = plan(SandboxLimits(memory_mb=1024), "require", gpu=False)
    assert box.uid is None and box.memory_mb == 1024 and box.isolate_network
    assert plan(SandboxLimits(), "auto", gpu=True).memory_mb is None  # CUDA needs its address space


def test_plan_as_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(sandbox, "ensure_user", lambda name: None)
    monkeypatch.setattr(sandbox, "lookup_user", lambda name: None)
    with pytest.raises(SandboxError, match="must not run as root"):
        plan(SandboxLimits(), "require", gpu=False)
    box = plan(SandboxLimits(), "auto", gpu=False)
    assert box.uid is None and "ran as root" in box.notes[0]
    assert plan(SandboxLimits(), "off", gpu=False).notes == []


def test_plan_refuses_an_environment_the_account_cannot_read(monkeypatch, tmp_path):
    import pwd

    fake = pwd.struct_passwd(("ag-test", "x", 4242, 4242, "", "/", "/bin/false"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(sandbox, "ensure_user", lambda name: fake)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "python").write_text("")
    monkeypatch.setattr(sandbox, "runtime_paths", lambda: [private / "python"])
    with pytest.raises(SandboxError, match="cannot read"):
        plan(SandboxLimits(), "require", gpu=False)


MOD = '''
import os, resource, socket

def limits():
    return {name: list(resource.getrlimit(getattr(resource, name)))
            for name in ("RLIMIT_DATA", "RLIMIT_FSIZE", "RLIMIT_CPU", "RLIMIT_CORE")}

def grab(mb):
    import torch
    return float(torch.ones(mb << 18).sum())  # written: really allocated

def oom_score_adj():
    return int(open("/proc/self/oom_score_adj").read())

def connect(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return "connected"
    except OSError as e:
        return type(e).__name__
'''


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "started"])
def test_worker_confines_itself(tmp_path, fork):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "mod.py").write_text(MOD)
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    box = Sandbox(cpu_s=600, file_mb=64, memory_mb=300, isolate_network=True)
    client = WorkerClient(tmp_path, "pkg", Limits(call_s=10, import_s=10, start_s=60), sandbox=box, fork=fork)
    try:
        got = client.root_ref().mod.limits()
        start = client.sandbox_report["data_mb"]["at_start"]
        assert abs(got["RLIMIT_DATA"][0] - ((start + 300) << 20)) < 1 << 20  # on top of what it held at start
        assert client.root_ref().mod.grab(100) == 100 << 18  # 100 MB more: fine
        with pytest.raises(StudentCodeError, match="allocate"):  # 400 MB more: refused, in the student's code
            client.root_ref().mod.grab(400)
        assert client.root_ref().mod.oom_score_adj() == 1000  # the first a full container's kernel kills
        assert got["RLIMIT_FSIZE"] == [64 << 20] * 2
        assert got["RLIMIT_CPU"][0] == 600 and got["RLIMIT_CORE"] == [0, 0]
        report = client.sandbox_report
        assert report["limits"]["memory_mb"] == 300
        outcome = client.root_ref().mod.connect(server.getsockname()[1])
        if report["network"] == "isolated":
            assert outcome != "connected"
        else:
            assert "Network isolation is not available" in report["notes"][0]
    finally:
        client.close()
        server.close()


def test_kill_strays_reaches_double_forked_daemons(tmp_path):
    """In a child process (it becomes a subreaper): a grandchild that double-forks and calls
    setsid leaves our tree only to be reparented to us, and the sweep kills it."""
    pids = tmp_path / "pids"
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
        from autograder.sandbox.confinement import become_subreaper, descendants, kill_strays
        assert become_subreaper()
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                open({str(pids)!r}, "a").write(f"{{os.getpid()}}\\n")
                time.sleep(60)
            os._exit(0)
        time.sleep(1.0)
        daemon = int(open({str(pids)!r}).read())
        assert daemon in descendants(os.getpid()), "the daemon should be ours now"
        killed = kill_strays()
        assert killed >= 1
        try:
            os.kill(daemon, 0)
            print("ALIVE")
        except ProcessLookupError:
            print("DEAD")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "DEAD"


def test_walking_down_the_tree_finds_what_the_full_table_finds():
    """The fast path (each process's children list) and the scan of every process agree."""
    procs = [subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); "
                               "time.sleep(30)"]) for _ in range(2)]
    # Compared below the two processes started here: this pytest may have other children (servers that
    # earlier tests left running, or start meanwhile), which could appear between two of the snapshots.
    def below(method) -> set[int]:
        return set().union(*(method(p.pid) for p in procs))

    try:
        deadline = time.monotonic() + 20
        while any(not sandbox.descendants(p.pid, sandbox._parents()) for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        full = below(lambda pid: sandbox.descendants(pid, sandbox._parents()))
        assert len(full) == 2 and not {p.pid for p in procs} & full
        assert below(lambda pid: sandbox.descendants(pid, sandbox._processes())) == full
        if sandbox._children_files_work():
            assert below(lambda pid: sandbox._walk(pid, sandbox._children)) == full
    finally:
        assert sandbox.kill_strays() >= 4
        for p in procs:
            p.wait(timeout=10)


def test_remote_objects_have_no_truth_value(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "mod.py").write_text("class Yes:\n    def __bool__(self):\n        return True\n")
    client = WorkerClient(tmp_path, "pkg", Limits(call_s=10, import_s=10, start_s=60))
    try:
        obj = client.root_ref().mod.Yes()
        with pytest.raises(TypeError, match="no truth value"):
            assert obj
        assert obj != True  # noqa: E712 - identity, not the student's __eq__
    finally:
        client.close()


def test_symlinked_folders_and_traversal_are_refused(tmp_path, cfg):
    outside = tmp_path / "outside" / cfg.package
    outside.mkdir(parents=True)
    (outside / "mha.py").write_text("reference code\n")
    up = tmp_path / "up"
    up.mkdir()
    os.symlink(outside, up / cfg.package)  # the whole package folder is a link out of the upload
    report = copy_submission(up, tmp_path / "out", cfg)
    assert not (tmp_path / "out" / cfg.package / "mha.py").exists()
    assert any("outside" in n for n in report.notes), report.notes


def test_export_zips_cannot_write_outside_or_plant_links(tmp_path):
    zpath = tmp_path / "export.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("export/ok.txt", "fine")
        zf.writestr("../escaped.txt", "no")
        zf.writestr("export/../../escaped2.txt", "no")
        zf.writestr(str(tmp_path / "absolute.txt"), "no")
        link = zipfile.ZipInfo("export/link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    dest = tmp_path / "dest"
    safe_extract(zpath, dest)
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file() or p.is_symlink())
    assert "export/ok.txt" in files and "export/link" not in files
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path.parent / "escaped2.txt").exists()
    assert not (tmp_path / "absolute.txt").exists()
    assert not any(p.is_symlink() for p in dest.rglob("*"))
