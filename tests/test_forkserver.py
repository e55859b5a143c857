"""The fork server: a forked worker is what a freshly started one would be, only sooner."""
from __future__ import annotations

import os
import signal
import time

import pytest

from autograder.grading import hostserver
from autograder.sandbox import forkserver
from autograder.sandbox.client import Limits, WorkerClient
from autograder.sandbox.errors import WorkerCrashed

MOD = '''
import ctypes, os, sys, tempfile

def add(a, b):
    return a + b

def state():
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return {"cwd": os.getcwd(), "home": os.environ.get("HOME"), "tmp": tempfile.gettempdir(),
            "path0": sys.path[0], "env": sorted(os.environ), "sid": os.getsid(0) == os.getpid(),
            "fds": fds, "argv": sys.argv[1:]}

def segfault():
    ctypes.string_at(0)

def hard_exit():
    os._exit(7)

def server_pid():
    return os.getppid()
'''


@pytest.fixture
def root(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "mod.py").write_text(MOD)
    return tmp_path


def client_for(root, fork: bool) -> WorkerClient:
    return WorkerClient(root, "pkg", Limits(call_s=10, import_s=10, start_s=60), fork=fork)


def _comparable(state: dict, client: WorkerClient) -> dict:
    scratch = client._scratch.name
    fds = state.pop("fds")
    state["fd_numbers"] = sorted(n for n, target in fds.items() if n > 2 and not target.startswith("/proc/"))
    state["sockets"] = [t for t in fds.values() if t.startswith("socket:")]
    for key in ("cwd", "home", "tmp", "path0"):
        state[key] = state[key].replace(scratch, "<scratch>")
    state["argv"] = state["argv"][:2]
    return state


def test_a_forked_worker_looks_like_a_started_one(root):
    seen = {}
    for fork in (True, False):
        client = client_for(root, fork)
        try:
            seen[fork] = _comparable(client.root_ref().mod.state(), client)
        finally:
            client.close()
    assert seen[True] == seen[False]
    assert seen[True]["sockets"] == []  # the server's socket never reaches student code
    assert seen[True]["sid"] and seen[True]["cwd"] == seen[True]["home"] == seen[True]["tmp"] == "<scratch>"


def test_restarts_after_a_crash_are_forks_and_exit_codes_are_reported(root):
    client = client_for(root, True)
    try:
        s = client.root_ref()
        assert s.mod.add(1, 2) == 3
        server = s.mod.server_pid()
        assert server in forkserver.server_pids()
        for crash, needle in ((s.mod.segfault, "SIGSEGV"), (s.mod.hard_exit, "exited with code 7")):
            with pytest.raises(WorkerCrashed, match=needle):
                crash()
            t0 = time.monotonic()
            assert s.mod.add(2, 2) == 4
            restart = time.monotonic() - t0
            assert s.mod.server_pid() == server, "the new worker should come from the same server"
        print(f"restart after a crash: {restart * 1000:.0f} ms")
    finally:
        client.close()


def test_a_dead_server_means_workers_start_the_slow_way(root):
    client = client_for(root, True)
    try:
        s = client.root_ref()
        server = s.mod.server_pid()
        os.kill(server, signal.SIGKILL)  # the running worker outlives it
        deadline = time.monotonic() + 10
        while server in forkserver.server_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert s.mod.add(1, 1) == 2
        with pytest.raises(WorkerCrashed, match="exited with code 7|ended"):
            s.mod.hard_exit()
        assert s.mod.add(3, 4) == 7  # started without the server
        assert s.mod.server_pid() == os.getpid()
    finally:
        client.close()
        forkserver.shutdown()  # forget the dead one, so later tests get a fresh server


def test_a_server_that_failed_is_not_started_again(root, monkeypatch):
    forkserver.shutdown()
    starts = []

    def broken(self):
        starts.append(1)
        raise forkserver.ForkServerError("cannot start")

    monkeypatch.setattr(forkserver.ForkServer, "start", broken)
    try:
        client = client_for(root, True)
        try:
            s = client.root_ref()
            for _ in range(3):
                with pytest.raises(WorkerCrashed):
                    s.mod.hard_exit()
            assert s.mod.add(1, 1) == 2 and s.mod.server_pid() == os.getpid()
        finally:
            client.close()
        assert starts == [1]
    finally:
        forkserver.shutdown()


def test_switched_off_by_the_environment(root, monkeypatch):
    monkeypatch.setenv("AUTOGRADER_FORKSERVER", "0")
    client = client_for(root, True)
    try:
        assert client.root_ref().mod.server_pid() == os.getpid()
    finally:
        client.close()


def test_bad_requests_do_not_stop_the_server(root):
    server = forkserver.server_for({"PATH": os.environ["PATH"]}, 60)
    assert server is not None
    with pytest.raises(forkserver.ForkServerError, match="unknown operation"):
        server._ask({"op": "exec", "args": ["/bin/sh"]}, 10)
    r, w = os.pipe()
    try:  # the child refuses to run with descriptors it cannot keep (stdin, stdout) and exits
        proc = server.spawn(["x", "pkg", "0", "1"], {}, str(root), w, (1, 2))
        assert proc.wait(10) == 70
    finally:
        os.close(r)
        os.close(w)
    assert server._ask({"op": "ping"}, 10)["pong"] is True


# --------------------------------------------------------------------------- host servers (the
# grader's pytest process forked from a server that has imported torch, pytest and the plugin)

HOST_TESTS = '''
import os, sys, time

def test_env_and_place():
    assert os.environ["AG_HOST_MARK"] == "1" and "PYTEST_CURRENT_TEST" in os.environ
    assert os.getcwd() == os.environ["AG_HOST_CWD"]
    assert sys.argv[0].endswith("pytest/__main__.py")
    print("HOST-PID", os.getpid(), "PARENT", os.getppid())

def test_fails():
    assert 1 == 2, "planted failure"
'''


def _pytest_env(tmp_path, **extra) -> dict:
    from autograder.grading.runner import _env

    return {**_env(), "AG_HOST_MARK": "1", "AG_HOST_CWD": str(tmp_path), **extra}


def _pytest_cmd(*args) -> list[str]:
    import sys

    return [sys.executable, "-I", "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s", *args]


def test_forked_pytest_runs_as_a_started_one(tmp_path, monkeypatch):
    from autograder.grading.runner import run_pytest

    (tmp_path / "test_host.py").write_text(HOST_TESTS)
    env = _pytest_env(tmp_path)
    outputs = {}
    for switch in ("1", "0"):
        monkeypatch.setenv("AUTOGRADER_HOSTSERVER", switch)
        code, out = run_pytest(_pytest_cmd(str(tmp_path / "test_host.py")), str(tmp_path), env, 120)
        assert code == 1 and "1 failed, 1 passed" in out and "planted failure" in out, out
        outputs[switch] = out
    server = forkserver._SERVERS.get("host " + __import__("json").dumps(env, sort_keys=True))
    assert server is not None and server.alive()
    parent = int(outputs["1"].split("PARENT ")[1].split()[0])
    assert parent == server.pid, "the forked run is a child of the host server"
    assert int(outputs["0"].split("PARENT ")[1].split()[0]) == os.getpid()  # the slow way


def test_forked_pytest_past_its_time_is_stopped_with_its_children(tmp_path):
    from autograder.grading.runner import run_pytest

    (tmp_path / "test_slow.py").write_text(
        "import subprocess, time\n"
        "def test_slow():\n"
        "    p = subprocess.Popen(['sleep', '300'])\n"
        "    open('child.pid', 'w').write(str(p.pid))\n"
        "    print('started', flush=True)\n"
        "    time.sleep(300)\n")
    t0 = time.monotonic()
    code, out = run_pytest(_pytest_cmd("test_slow.py"), str(tmp_path), _pytest_env(tmp_path), 6)
    assert code is None and time.monotonic() - t0 < 40
    child = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 10
    while forkserver._exists(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not forkserver._exists(child), "what the run started must be stopped with it"


def test_a_dead_host_server_means_pytest_starts_the_slow_way(tmp_path):
    from autograder.grading.runner import run_pytest

    (tmp_path / "test_host.py").write_text(HOST_TESTS)
    env = _pytest_env(tmp_path, AG_HOST_VARIANT="dead")
    try:
        server = hostserver.host_server_for(env, 120)
        assert server is not None
        os.kill(server.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while server.pid is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        code, out = run_pytest(_pytest_cmd("test_host.py"), str(tmp_path), env, 120)
        assert code == 1 and "1 failed, 1 passed" in out, out
        assert int(out.split("PARENT ")[1].split()[0]) == os.getpid()
        assert hostserver.host_server_for(env, 120) is None  # not started again in this process
    finally:
        forkserver.shutdown()


def test_host_servers_are_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(hostserver, "MAX_HOST_SERVERS", 1)
    try:
        first = hostserver.host_server_for(_pytest_env(tmp_path, AG_HOST_VARIANT="a"), 120)
        second = hostserver.host_server_for(_pytest_env(tmp_path, AG_HOST_VARIANT="b"), 120)
        assert first is not None and second is not None and second.alive()
        assert not first.alive()  # closed to make room: each holds torch in memory
        assert sum(k.startswith("host ") for k in forkserver._SERVERS) == 1
    finally:
        forkserver.shutdown()


def test_a_dead_servers_children_are_judged_by_their_pidfd(monkeypatch):
    dead = forkserver.ForkServer(env={})  # never started: no socket, as after the server died
    monkeypatch.setattr(forkserver, "_exists", lambda pid: True)  # a reused pid looks alive
    not_ours = os.getppid()  # waitpid cannot reap it
    assert dead.exit_status(not_ours, 0.05) is None  # by pid alone: "still running"
    assert dead.exit_status(not_ours, 0.05, running=lambda: False) == forkserver.UNKNOWN_EXIT
