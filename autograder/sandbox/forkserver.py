"""A fork server for student workers: torch is imported once, each worker is a fork of that.

Starting a worker from scratch costs an interpreter plus ``import torch`` (about 2 s on a CPU
machine), and a grading run starts several: the student's, the reference's for timing, and a
new one after every crash or timeout. The fork server is a clean process, started like a worker
(``python -I -m autograder.sandbox.forkserver FD``), that imports torch and the worker module and then
only forks on request. It never runs student or grading code and holds nothing secret, so a
fork of it is what a fresh worker would be, in milliseconds.

The grader keeps the server's socket (a ``SOCK_SEQPACKET`` pair; file descriptors travel with
``SCM_RIGHTS``). The server reaps its children and reports their exit status, which is why
:class:`ForkedProcess` offers the part of ``subprocess.Popen`` the client uses. Where the server
cannot start or stops answering, :func:`server_for` returns None and workers start the slow way.

Each child closes every descriptor except its own pipes and log before it becomes a worker (the
server's socket included: student code must never be able to ask for processes), starts a new
session, takes the environment, folder and arguments it was given, and runs
:func:`autograder.sandbox.worker.main`, which confines it exactly as it does a freshly started worker.

The same machinery serves the grader's own pytest process: :mod:`autograder.grading.hostserver`
starts servers of its own module (``serve`` with its own preload and child), and the registry here
keeps both kinds, told apart by the first word of their key (:func:`server_pids`). This module never imports grading code.
"""
from __future__ import annotations

import atexit
import fcntl
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

UNKNOWN_EXIT = -1000  # the worker is gone and nobody could say how it ended
_MAX_MESSAGE = 1 << 20
_SERVER_ENV_KEYS = ("PATH", "LD_LIBRARY_PATH", "VIRTUAL_ENV", "CUDA_VISIBLE_DEVICES", "TRITON_INTERPRET")


class ForkServerError(Exception):
    """The fork server did not start or stopped answering."""


# --------------------------------------------------------------------------- grader side


@dataclass
class ForkedProcess:
    """A worker forked by the server: ``pid``, ``poll()`` and ``wait()`` as on ``subprocess.Popen``."""

    pid: int
    server: ForkServer
    returncode: int | None = None
    _pidfd: int | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        try:  # readable once the process has ended: liveness without asking the server
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            self._pidfd = None

    def __del__(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def _running(self) -> bool:
        if self._pidfd is not None:
            try:
                return not select.select([self._pidfd], [], [], 0)[0]
            except (OSError, ValueError):
                pass
        return _exists(self.pid)

    def poll(self) -> int | None:
        """As ``Popen.poll``; called before every request, so it asks the server only once the
        worker has ended (a round trip to the server costs about half a millisecond)."""
        if self.returncode is None and self._running():
            return None
        return self.wait(0.0, _raise=False)

    def wait(self, timeout: float | None = None, _raise: bool = True) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.exit_status(self.pid, 3600.0 if timeout is None else timeout,
                                                      running=self._running)
        if self.returncode is None and _raise and timeout is not None:
            raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout)
        if self.returncode is not None and self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        return self.returncode


@dataclass
class ForkServer:
    """The grader's handle on one fork server (see the module docstring)."""

    env: dict[str, str]
    start_s: float = 120.0
    module: str = "autograder.sandbox.forkserver"  # run as `python -I -m MODULE FD`; its serve() decides what forks do
    _sock: socket.socket | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # batch grades in threads
    _popen: subprocess.Popen | None = field(default=None, repr=False)
    _home: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._home = tempfile.TemporaryDirectory(prefix="ag-forkserver-")
        try:
            self._popen = subprocess.Popen(
                [sys.executable, "-I", "-m", self.module, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, cwd=self._home.name, env=self.env, start_new_session=True)
        finally:
            theirs.close()
        self._sock = ours
        ready = self._ask({"op": "ping"}, self.start_s)
        if ready.get("pong") is not True:
            raise ForkServerError(f"the fork server answered {ready!r} to a ping")

    @property
    def pid(self) -> int | None:
        if self._popen is None or self._popen.poll() is not None:
            return None
        return self._popen.pid

    def alive(self) -> bool:
        return self._sock is not None and self.pid is not None

    def _ask(self, message: dict, timeout: float, fds: list[int] = ()) -> dict:
        with self._lock:  # one request at a time: replies carry no request id
            sock = self._sock
            if sock is None:
                raise ForkServerError("the fork server is not running")
            try:
                sock.settimeout(max(timeout, 0.001))
                socket.send_fds(sock, [json.dumps(message).encode()], list(fds))
                data, _, _, _ = socket.recv_fds(sock, _MAX_MESSAGE, 0)
                if not data:
                    raise ForkServerError("the fork server closed its socket")
                reply = json.loads(data)
            except (OSError, ValueError) as e:
                failed = e
            else:
                failed = None
        if failed is not None:
            self.close()
            raise ForkServerError(f"the fork server stopped answering ({failed})") from None
        if not isinstance(reply, dict) or "error" in reply:
            raise ForkServerError(f"the fork server refused {message.get('op')!r}: {reply!r}")
        return reply

    def spawn(self, args: list[str], env: dict[str, str], cwd: str, stdout_fd: int,
              keep_fds: tuple[int, ...] = ()) -> ForkedProcess:
        """Fork a child running ``autograder.sandbox.worker.main(args)`` (a host server: ``pytest.main(args)``);
        ``keep_fds`` keep their numbers in the child (the pipes named in a worker's ``args``),
        ``stdout_fd`` becomes its stdout and stderr."""
        reply = self._ask({"op": "spawn", "args": args, "env": env, "cwd": cwd, "keep": list(keep_fds)},
                          self.start_s, [stdout_fd, *keep_fds])
        return ForkedProcess(int(reply["pid"]), self)

    def exit_status(self, pid: int, timeout: float, running=None) -> int | None:
        """The exit status of a child that has ended, waiting up to ``timeout``; None while it runs.
        ``running()`` says whether it still runs once the server is gone (a pidfd cannot be fooled
        by a reused pid; the default looks the pid up)."""
        if self.alive():
            try:
                return self._ask({"op": "wait", "pid": pid, "timeout": timeout}, timeout + 10.0).get("code")
            except ForkServerError:
                pass
        # The server is gone: its children were handed to the nearest subreaper (the grader, when
        # it is one), which may reap them; else all we can tell is whether the process still exists.
        deadline = time.monotonic() + timeout
        while True:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    return os.waitstatus_to_exitcode(status)
            except ChildProcessError:
                if not (running() if running is not None else _exists(pid)):
                    return UNKNOWN_EXIT
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.01)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()  # the server exits when its socket closes
        if self._popen is not None:
            try:
                self._popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()
        if self._home is not None:
            self._home.cleanup()
            self._home = None


def _exists(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


_SERVERS: dict[str, ForkServer] = {}
_FAILED: set[str] = set()  # keys whose server did not start or died
_START_LOCK = threading.Lock()  # batch grading starts host servers from several threads


def enabled() -> bool:
    return os.environ.get("AUTOGRADER_FORKSERVER", "1") != "0" and sys.platform.startswith("linux")


def server_for(env: dict[str, str], start_s: float = 120.0) -> ForkServer | None:
    """The running fork server for workers started with ``env`` (one per set of the variables that
    matter when an interpreter starts), started on first use; None where it cannot be had."""
    if not enabled():
        return None
    server_env = {k: env[k] for k in _SERVER_ENV_KEYS if k in env}
    # (PYTHONHASHSEED is left out: `-I` ignores every PYTHON* variable, the worker's included.)
    server_env |= {"OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1")}
    key = "worker " + json.dumps(server_env, sort_keys=True)
    return _running_or_started(key, lambda: ForkServer(server_env, start_s))


def _running_or_started(key: str, make, keep: int | None = None) -> ForkServer | None:
    """The live server under ``key``, else a new one from ``make()``; None once one failed under
    that key in this process. ``keep``: at most that many servers of the key's kind stay alive
    (the least recently used are closed)."""
    with _START_LOCK:
        if key in _FAILED:
            return None  # it failed once in this process: the slow, independent way from now on
        server = _SERVERS.pop(key, None)
        if server is not None and server.alive():
            _SERVERS[key] = server  # now the most recently used
            return server
        if keep is not None:
            kind = key.split(" ", 1)[0]
            same = [k for k in _SERVERS if k.split(" ", 1)[0] == kind]
            for old in same[:max(0, len(same) - keep + 1)]:  # each holds torch in memory
                _SERVERS.pop(old).close()
        if server is None:
            server = make()
            try:
                server.start()
            except (ForkServerError, OSError):
                pass
        if not server.alive():
            server.close()
            _FAILED.add(key)
            return None
        _SERVERS[key] = server
        return server


def server_pids() -> set[int]:
    """Process ids of the live fork servers (kept alive by the sweep for leftover processes)."""
    return {pid for s in _SERVERS.values() if (pid := s.pid) is not None}


@atexit.register
def shutdown() -> None:
    for server in list(_SERVERS.values()):
        server.close()
    _SERVERS.clear()
    _FAILED.clear()


# --------------------------------------------------------------------------- server side


def _child(message: dict, fds: list[int], run: Callable[[list[str]], None], needs_fds: bool = True) -> None:
    """In the forked child: take the descriptors, session, environment and folder it was given, then
    ``run(args)`` (a worker's main; pytest for a host server). Never returns."""
    try:
        stdout_fd, passed = fds[0], fds[1:]
        keep = [int(k) for k in message["keep"]]
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(stdout_fd, 1)
        os.dup2(stdout_fd, 2)
        # The descriptors arrive under new numbers; the worker's arguments name the old ones. Moved
        # above all of those first, so that no dup2 below closes one that is still to be moved.
        if (not keep and needs_fds) or len(keep) != len(passed) or (keep and min(keep) < 3):
            raise ValueError(f"bad descriptors to keep: {keep}")
        moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, max(keep) + 1) for fd in passed]
        for src, dst in zip(moved, keep):
            os.dup2(src, dst, inheritable=False)
        low = 3  # everything else goes: the server's socket above all
        for k in sorted(keep):
            os.closerange(low, k)
            low = k + 1
        os.closerange(low, max(os.sysconf("SC_OPEN_MAX"), 1 << 20))
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        cwd = str(message["cwd"])
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in message["env"].items()})
        if _COERCED_LOCALE and not {"LC_ALL", "LC_CTYPE", "LANG"} & set(os.environ):
            os.environ["LC_CTYPE"] = _COERCED_LOCALE  # what a new interpreter would have set (PEP 538)
        tempfile.tempdir = None  # gettempdir() must read this worker's TMPDIR
        if "numpy" in sys.modules:  # imported with torch: each worker draws its own seed, as a new process does
            sys.modules["numpy"].random.seed()
        run([str(a) for a in message["args"]])
    except BaseException:  # noqa: BLE001 - the child must never return into the server's loop
        import traceback

        traceback.print_exc()
        os._exit(70)
    os._exit(0)


_COERCED_LOCALE = ""


def preload_worker() -> None:
    """What every worker would otherwise import first (never initialise CUDA here)."""
    import torch  # noqa: F401 - the reason this process exists

    import autograder.sandbox.confinement  # noqa: F401
    import autograder.sandbox.worker  # noqa: F401


def run_worker(args: list[str]) -> None:
    sys.argv = ["autograder.sandbox.worker", *args]
    from autograder.sandbox import worker

    worker.main(args)


def serve(fd: int, preload: Callable[[], None] = preload_worker, run: Callable[[list[str]], None] = run_worker,
          needs_fds: bool = True) -> None:
    """The server's loop: ``preload()``, then fork on request; each child ends in ``run(args)``."""
    global _COERCED_LOCALE
    # Set by PEP 538's coercion when the server was started without LC_ALL, LC_CTYPE or LANG (a
    # worker server always is); a child whose environment has none of them gets it back, as a new
    # interpreter started with that environment would.
    _COERCED_LOCALE = os.environ.get("LC_CTYPE", "")
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    preload()

    codes: dict[int, int] = {}
    children: set[int] = set()

    def reap() -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                children.clear()
                return
            if pid == 0:
                return
            children.discard(pid)
            codes[pid] = os.waitstatus_to_exitcode(status)

    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, _MAX_MESSAGE, 16)
        except OSError:
            return
        if not data:
            return
        try:
            message = json.loads(data)
            op = message.get("op")
            if op == "ping":
                reply = {"pong": True, "pid": os.getpid()}
            elif op == "spawn":
                pid = os.fork()
                if pid == 0:
                    sock.close()
                    _child(message, fds, run, needs_fds)
                children.add(pid)
                reply = {"pid": pid}
            elif op == "wait":
                pid = int(message["pid"])
                deadline = time.monotonic() + float(message.get("timeout", 0.0))
                reap()
                while pid in children and time.monotonic() < deadline:
                    time.sleep(0.005)
                    reap()
                # Not ours, or asked about twice: nobody can tell how it ended.
                reply = {"code": None if pid in children else codes.pop(pid, UNKNOWN_EXIT)}
            else:
                reply = {"error": f"unknown operation {op!r}"}
        except Exception as e:  # noqa: BLE001 - a bad request must not stop the server
            reply = {"error": f"{type(e).__name__}: {e}"}
        finally:
            for passed in fds:
                os.close(passed)
        try:
            socket.send_fds(sock, [json.dumps(reply).encode()], [])
        except OSError:
            return


if __name__ == "__main__":
    serve(int(sys.argv[1]))
