"""Grader side of the trust boundary: start, talk to, time and restart the student worker.

``WorkerClient`` owns one worker process for an implementation root. ``Remote`` is the proxy
tests use: ``student.attention.softmax(x)`` or ``m = student.mha.MultiHeadAttention(8, 2)``
followed by ``m(x)``. Attribute access builds a path locally; only calls and :func:`fetch`
send a request. A crash, exit or hang fails only the current request; the next request
starts a fresh worker.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import forkserver
from .errors import StaleObject, StudentCodeError, WorkerCrashed, WorkerTimeout
from .protocol import ChannelClosed, Handle, ProtocolError, pack, read_frame, write_frame
from .sandbox import Sandbox

OUTPUT_HEAD = 6_000
OUTPUT_TAIL = 4_000


@dataclass
class Limits:
    call_s: float = 30.0
    import_s: float = 30.0
    start_s: float = 120.0


def describe_exit(code: int | None) -> str:
    if code is None:
        return "was stopped"
    if code == forkserver.UNKNOWN_EXIT:
        return "ended (how, nobody could tell)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        extra = {"SIGSEGV": " (segmentation fault)", "SIGKILL": " (killed, maybe out of memory)",
                 "SIGABRT": " (aborted)", "SIGBUS": " (bus error)", "SIGXCPU": " (CPU time limit)",
                 "SIGXFSZ": " (output file size limit)"}.get(name, "")
        return f"was killed by {name}{extra}"
    return f"exited with code {code} (did your code call os._exit or exit the interpreter?)"


@dataclass
class _Process:
    popen: subprocess.Popen | forkserver.ForkedProcess
    to_worker: int
    from_worker: int
    generation: int


@dataclass
class WorkerClient:
    """One worker process for ``root`` (a directory containing ``package/``)."""

    root: Path
    package: str
    limits: Limits = field(default_factory=Limits)
    threads: int = 1
    label: str = "your code"
    env: dict[str, str] = field(default_factory=dict)
    sandbox: Sandbox | None = None  # confinement the worker applies to itself (None: none)
    fork: bool = True  # start workers as forks of a fork server (see autograder.forkserver)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self._proc: _Process | None = None
        self._generation = 0
        self.sandbox_report: dict = {}
        # The worker's home and cwd (its own to write), and apart from it, in a folder only the
        # grader can enter, the log its stdout/stderr go to: student code cannot swap the log for
        # a link to a file it may not read, which the grader would then show.
        self._scratch = tempfile.TemporaryDirectory(prefix="ag-worker-")
        self._private = tempfile.TemporaryDirectory(prefix="ag-log-")
        if self.sandbox is not None and self.sandbox.uid is not None:
            os.chown(self._scratch.name, self.sandbox.uid, self.sandbox.gid or -1)
        self._log_path = Path(self._private.name) / "output.log"
        self._log_path.touch()
        self._import_failures: dict[str, Exception] = {}
        self._imported: set[tuple[int, str]] = set()

    # ------------------------------------------------------------------ lifecycle
    @property
    def generation(self) -> int:
        return self._generation

    def _start(self) -> _Process:
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": self._scratch.name,
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            "OMP_NUM_THREADS": str(self.threads or 1),
            "AUTOGRADER_THREADS": str(self.threads),
            "TMPDIR": self._scratch.name,
        }
        for key in ("TRITON_INTERPRET", "CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "VIRTUAL_ENV"):
            if key in os.environ:
                env[key] = os.environ[key]
        env.update(self.env)
        if self.sandbox is not None:
            env["AG_SANDBOX"] = self.sandbox.to_json()
        def worker_args() -> list[str]:
            return [str(self.root), self.package, str(to_r), str(from_w)]

        args = worker_args()
        log = open(self._log_path, "ab")
        try:
            server = forkserver.server_for(env, self.limits.start_s) if self.fork else None
            popen = None
            if server is not None:
                try:  # a fork of a process that has imported torch already: milliseconds
                    popen = server.spawn(args, env, self._scratch.name, log.fileno(), (to_r, from_w))
                except forkserver.ForkServerError:
                    # A late fork may hold these pipes: the worker started instead gets new ones.
                    for fd in (to_r, to_w, from_r, from_w):
                        os.close(fd)
                    to_r, to_w = os.pipe()
                    from_r, from_w = os.pipe()
                    args = worker_args()
            if popen is None:
                popen = subprocess.Popen(
                    [sys.executable, "-I", "-m", "autograder.worker", *args],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    pass_fds=(to_r, from_w),
                    cwd=self._scratch.name,
                    env=env,
                    start_new_session=True,
                )
        finally:
            log.close()
            os.close(to_r)
            os.close(from_w)
        self._generation += 1
        proc = _Process(popen, to_w, from_r, self._generation)
        self._proc = proc
        try:
            # Answered before any student code is imported, so the sandbox report is the worker's own.
            hello = self._exchange(proc, {"op": "hello"}, self.limits.start_s, "starting the worker")
            if isinstance(hello, dict) and isinstance(hello.get("sandbox"), dict):
                self.sandbox_report = hello["sandbox"]
        except WorkerTimeout:
            raise WorkerTimeout(
                f"The worker that runs {self.label} did not start within {self.limits.start_s:.0f} s."
            ) from None
        return proc

    def _ensure(self) -> _Process:
        if self._proc is None or self._proc.popen.poll() is not None:
            if self._proc is not None:
                self._discard()
            return self._start()
        return self._proc

    def _discard(self) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        try:
            os.killpg(proc.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            code = proc.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        for fd in (proc.to_worker, proc.from_worker):
            try:
                os.close(fd)
            except OSError:
                pass
        return code

    def close(self) -> None:
        self._discard()
        self._scratch.cleanup()
        self._private.cleanup()

    @property
    def pid(self) -> int | None:
        """The live worker's process id (None when there is none)."""
        if self._proc is None or self._proc.popen.poll() is not None:
            return None
        return self._proc.popen.pid

    # ------------------------------------------------------------------ requests
    def _exchange(self, proc: _Process, message: dict, timeout: float, what: str) -> Any:
        try:
            write_frame(proc.to_worker, pack(message))
            reply = read_frame(proc.from_worker, time.monotonic() + timeout)
        except TimeoutError:
            self._discard()
            label = self.label[0].upper() + self.label[1:]
            note = f"{label} did not finish within {timeout:g} s ({what}); its worker was stopped."
            raise WorkerTimeout(note) from None
        except (ChannelClosed, BrokenPipeError, ProtocolError) as e:
            try:
                code = proc.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
            self._discard()
            reason = describe_exit(code)
            if isinstance(e, ProtocolError) and not isinstance(e, ChannelClosed):
                reason = f"sent an invalid reply ({e}) and was stopped"
            raise WorkerCrashed(f"The worker running {self.label} {reason} during {what}.") from None
        except BaseException:
            # Interrupted mid-request (test timeout, Ctrl-C): the worker state is unknown.
            self._discard()
            raise
        if not isinstance(reply, dict) or "ok" not in reply:
            self._discard()
            raise WorkerCrashed(f"The worker running {self.label} sent a malformed reply during {what}.")
        if reply["ok"] is True:
            return reply.get("value")
        err = reply.get("error") if isinstance(reply.get("error"), dict) else {}
        raise StudentCodeError(
            what,
            str(err.get("type", "Exception"))[:200],
            str(err.get("message", ""))[:4000],
            str(err.get("traceback", ""))[:4000],
        )

    def request(self, message: dict, what: str, timeout: float | None = None) -> Any:
        proc = self._ensure()
        return self._exchange(proc, message, timeout or self.limits.call_s, what)

    def ensure_imported(self, module: str) -> None:
        """Import ``package.module`` once per worker; failures are remembered for the whole run."""
        if module in self._import_failures:
            raise self._import_failures[module]
        proc = self._ensure()
        if (proc.generation, module) in self._imported:
            return
        what = f"import of {self.package}.{module}"
        try:
            self._exchange(proc, {"op": "import", "module": module}, self.limits.import_s, what)
        except (StudentCodeError, WorkerCrashed, WorkerTimeout) as e:
            self._import_failures[module] = e
            raise
        self._imported.add((proc.generation, module))

    # ------------------------------------------------------------------ output
    def output_mark(self) -> int:
        try:
            return self._log_path.stat().st_size
        except OSError:
            return 0

    def output_since(self, mark: int) -> str:
        """The worker's stdout/stderr since ``mark``, truncated in the middle."""
        try:
            size = self._log_path.stat().st_size
        except OSError:
            return ""
        n = size - mark
        if n <= 0:
            return ""
        with open(self._log_path, "rb") as f:
            f.seek(mark)
            if n <= OUTPUT_HEAD + OUTPUT_TAIL:
                data = f.read(n).decode("utf-8", "replace")
            else:
                head = f.read(OUTPUT_HEAD).decode("utf-8", "replace")
                f.seek(size - OUTPUT_TAIL)
                tail = f.read(OUTPUT_TAIL).decode("utf-8", "replace")
                data = f"{head}\n... [{n - OUTPUT_HEAD - OUTPUT_TAIL} bytes of output omitted] ...\n{tail}"
        return data

    def truncate_log(self) -> None:
        """Drop output already reported so a flood cannot fill the disk across tests.

        The worker writes with O_APPEND, so after truncation its next write lands at offset 0.
        """
        try:
            os.truncate(self._log_path, 0)
        except OSError:
            pass

    def release_all(self) -> None:
        """Forget every object handle made so far (between tests)."""
        if self._proc is not None and self._proc.popen.poll() is None:
            try:
                self._exchange(self._proc, {"op": "release", "handles": None}, self.limits.call_s,
                               "cleaning up after the test")
            except Exception:
                pass

    # ------------------------------------------------------------------ proxies
    def root_ref(self) -> Remote:
        return Remote(self, None, ())

    def encode_args(self, value: Any) -> Any:
        if isinstance(value, Remote):
            return value._ag_handle()
        if isinstance(value, list):
            return [self.encode_args(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.encode_args(v) for v in value)
        if isinstance(value, dict):
            return {k: self.encode_args(v) for k, v in value.items()}
        return value

    def wrap(self, value: Any) -> Any:
        if isinstance(value, Handle):
            return Remote(self, (value.id, self._generation), (), value.type_name)
        if isinstance(value, list):
            return [self.wrap(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.wrap(v) for v in value)
        if isinstance(value, dict):
            return {k: self.wrap(v) for k, v in value.items()}
        return value


class Remote:
    """Proxy to something in the worker: a module path, or an object handle plus attribute path."""

    __slots__ = ("_ag_client", "_ag_handle_id", "_ag_path", "_ag_type")

    def __init__(self, client: WorkerClient, handle: tuple[int, int] | None, path: tuple[str, ...],
                 type_name: str = "") -> None:
        object.__setattr__(self, "_ag_client", client)
        object.__setattr__(self, "_ag_handle_id", handle)
        object.__setattr__(self, "_ag_path", path)
        object.__setattr__(self, "_ag_type", type_name)

    def __getattr__(self, name: str) -> Remote:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return Remote(self._ag_client, self._ag_handle_id, self._ag_path + (name,), "")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("remote objects are read-only; call a method instead")

    def __repr__(self) -> str:
        return f"<remote {self._ag_describe()}>"

    def __bool__(self) -> bool:
        # An object left in the worker has no truth value here: `assert student.f()` must not
        # pass because f returned something that could not be sent.
        raise TypeError(f"{self._ag_describe()} is an object in the worker, not a value (it has no truth value)")

    def _ag_describe(self) -> str:
        client = self._ag_client
        if self._ag_handle_id is None:
            return ".".join((client.package,) + self._ag_path)
        base = self._ag_type or "object"
        return ".".join((base,) + self._ag_path) if self._ag_path else base

    def _ag_target(self) -> dict:
        if self._ag_handle_id is None:
            return {"path": list(self._ag_path)}
        h, gen = self._ag_handle_id
        if gen != self._ag_client.generation:
            raise StaleObject(
                f"{self._ag_describe()} was created before the worker running your code was restarted "
                "(after an earlier crash or timeout), so it no longer exists."
            )
        return {"handle": h, "path": list(self._ag_path)}

    def _ag_handle(self) -> Handle:
        if self._ag_handle_id is None or self._ag_path:
            raise TypeError("only objects created in the worker can be passed as arguments")
        target = self._ag_target()
        return Handle(target["handle"], self._ag_type)

    def _ag_request(self, op: str, what: str, timeout: float | None = None, **fields: Any) -> Any:
        client = self._ag_client
        if self._ag_handle_id is None and self._ag_path:
            client.ensure_imported(self._ag_path[0])
        message = {"op": op, "target": self._ag_target(), **fields}
        return client.wrap(client.request(message, what, timeout))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        client = self._ag_client
        return self._ag_request(
            "call", f"{self._ag_describe()}(...)",
            args=client.encode_args(list(args)), kwargs=client.encode_args(kwargs),
        )


# Helpers kept off Remote so they never shadow a student's attribute names.


def fetch(ref: Remote) -> Any:
    """The value of a remote attribute (tensors and plain data come back; objects stay remote)."""
    return ref._ag_request("getattr", f"reading {ref._ag_describe()}")


def typename(ref: Remote) -> str:
    return ref._ag_request("typename", f"inspecting {ref._ag_describe()}")


def store(client: WorkerClient, value: Any) -> Remote:
    """Keep ``value`` (e.g. input tensors) in the worker and return a handle to pass as argument."""
    message = {"op": "store", "value": client.encode_args(value)}
    return client.wrap(client.request(message, "sending inputs"))


def forward_backward(ref: Remote, args: list, grad_output: Any, wrt: list[int],
                     kwargs: dict | None = None, params: bool = False) -> dict:
    """Run ``ref(*args)`` in the worker and backpropagate ``grad_output``.

    Returns ``{"output", "grads" (one per index in wrt), "param_grads" (name -> grad)}``.
    """
    client = ref._ag_client
    return ref._ag_request(
        "forward_backward", f"forward+backward of {ref._ag_describe()}",
        args=client.encode_args(list(args)), kwargs=client.encode_args(kwargs or {}),
        grad_output=grad_output, wrt=wrt, params=params,
    )


def repeat(ref: Remote, args: list | Remote, n: int, kwargs: dict | None = None,
           timeout: float | None = None) -> None:
    """Call ``ref(*args)`` n times under no_grad; the caller times the request with its own clock.

    ``args`` may be a handle from :func:`store` holding the argument list (no resending).
    """
    client = ref._ag_client
    star = isinstance(args, Remote)
    ref._ag_request(
        "repeat", f"timed calls of {ref._ag_describe()}", timeout,
        args=client.encode_args([args] if star else list(args)), star_args=star,
        kwargs=client.encode_args(kwargs or {}), n=n,
    )


def routine(client: WorkerClient, name: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
    """Run the harness routine ``name`` (see :mod:`autograder.routines`) inside the worker.

    Whatever it returns was computed next to student code: use it for progress, never for grading.
    """
    message = {"op": "routine", "name": name, "args": client.encode_args(list(args)),
               "kwargs": client.encode_args(kwargs)}
    return client.wrap(client.request(message, f"running {name} on your code", timeout))
