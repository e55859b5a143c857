"""The fork server: a forked worker is what a freshly started one would be, only sooner."""
from __future__ import annotations

import os
import signal
import time

import pytest

from autograder import forkserver
from autograder.client import Limits, WorkerClient
from autograder.errors import WorkerCrashed

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
