"""Grader side of the trust boundary: start, talk to, time and restart the student worker.

``WorkerClient`` owns one worker process for an implementation root. ``Remote`` is the proxy
tests use: ``student.attention.softmax(x)`` or ``m = student.mha.MultiHeadAttention(8, 2)``
followed by ``m(x)``. Attribute access builds a path locally; only calls and :func:`fetch`
send a request. A crash, exit or hang fails only the current request; the next request
starts a fresh worker. Before it kills a worker that ran past its time limit, the client asks it
for its Python stacks (``SIGUSR1``, see :func:`autograder.sandbox.worker.watch_for_dump_requests`) and
says where in the student's files it was (:func:`where_it_was`).

Time budget: a call that runs past its limit is located exactly (halfway through the limit and
again at the end the worker reports its student frames, see :class:`autograder.sandbox.worker.HangWatch`:
one still running at both is the function that hung). The client remembers it (:class:`Hang`) and
gives every later worker its list, so later calls of that function fail at once with a message
naming the test where it first hung instead of costing the full limit in every test. No request
runs past ``deadline`` (the grading's time budget, wall clock), whatever its own limit.
"""
from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autograder.sandbox import forkserver
from autograder.sandbox.errors import StaleObject, StudentCodeError, WorkerCrashed, WorkerTimeout
from autograder.sandbox.protocol import MAX_TYPE_NAME, ChannelClosed, Handle, ProtocolError, pack, read_frame, write_frame
from autograder.sandbox.confinement import Sandbox
from autograder.sandbox.worker import HANG_REPORT_PREFIX

OUTPUT_HEAD = 6_000
OUTPUT_TAIL = 4_000
# A worker past its time limit is asked for its stacks, then killed: within DUMP_WAIT_S whatever
# it does (a dump is complete once nothing more came for DUMP_QUIET_S after the request loop's
# frame), at most DUMP_MAX_BYTES read.
DUMP_WAIT_S = 0.5
DUMP_QUIET_S = 0.1
DUMP_MAX_BYTES = 256 * 1024
DUMP_FRAMES_SHOWN = 5
# The hang report (SIGUSR2): within HANG_WAIT_S, at most HANG_MAX_BYTES.
HANG_WAIT_S = 0.3
HANG_MAX_BYTES = 64 * 1024
# Calls shorter than this are never marked halfway (a hang there costs little anyway).
MARK_MIN_S = 2.0


@dataclass(frozen=True)
class Hang:
    """A function of the student's that ran past a call's time limit: ``frames`` are the student
    frames that were running both halfway and at the end (innermost first; file relative to the
    root), ``test`` the test it happened in, ``limit_s`` the limit it ran past."""

    frames: tuple[dict, ...]
    test: str
    limit_s: float

    @property
    def name(self) -> str:
        """How messages name it, at the start of a sentence."""
        f = self.frames[0]
        if f["name"] == "<module>":
            return f"The top level of {f['file']}"
        return f"Your function {f['qualname']} ({f['file']}, line {f['first']})"


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


def _drain(fd: int, deadline: float) -> bool:
    """Discard what the dump pipe holds already: student code wrote it, not the worker's answer to
    the signal about to be sent. False when the pipe is closed or ``deadline`` passed meanwhile."""
    drained = 0
    while drained < 4 * DUMP_MAX_BYTES and select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 1 << 16)
        if not chunk or time.monotonic() >= deadline:
            return False
        drained += len(chunk)
    return True


def stack_dump(proc: _Process) -> str:
    """Ask a worker that ran past its time limit for its Python stacks (SIGUSR1; the worker's
    faulthandler writes them to its dump pipe) and return what came within DUMP_WAIT_S.

    Never raises and never waits longer: a worker that ignores or blocks the signal, dies of it,
    floods the pipe or writes nonsense just gives less (or nothing) here. The text is the
    student's process's to write: it is only ever parsed by :func:`where_it_was`.
    """
    fd = proc.dumps
    if fd < 0:
        return ""
    deadline = time.monotonic() + DUMP_WAIT_S
    data = bytearray()
    try:
        if not _drain(fd, deadline) or proc.popen.poll() is not None:
            return ""
        os.kill(proc.popen.pid, signal.SIGUSR1)
        while len(data) < DUMP_MAX_BYTES:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            # Complete once nothing more came for a while after the request loop's frame (faulthandler
            # lists the main thread, which runs it, last); before that, a pause is not the end.
            complete = b" in serve\n" in data
            if not select.select([fd], [], [], min(left, DUMP_QUIET_S) if complete else left)[0]:
                if complete:
                    break
                continue
            chunk = os.read(fd, DUMP_MAX_BYTES - len(data))
            if not chunk:
                break  # the worker is gone (SIGUSR1 left at its default action kills it)
            data += chunk
    except (OSError, ValueError):
        pass
    return data.decode("ascii", "replace")


def hang_report(proc: _Process, root: Path, package: str) -> list[dict] | None:
    """Ask the worker for its hang report (SIGUSR2) and return its student frames, innermost
    first, each ``{file, line, name, qualname, first, held}``; None when none came in time.

    The report is the student's process's to write: only well-formed frames of files inside
    ``root/package`` are kept, every string is cut short and stripped to printable ASCII."""
    fd = proc.dumps
    if fd < 0 or proc.popen.poll() is not None:
        return None
    deadline = time.monotonic() + HANG_WAIT_S
    data = bytearray()
    try:
        if not _drain(fd, deadline):
            return None
        os.kill(proc.popen.pid, signal.SIGUSR2)
        while b"\n" not in data and len(data) < HANG_MAX_BYTES:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                break
            chunk = os.read(fd, HANG_MAX_BYTES - len(data))
            if not chunk:
                break
            data += chunk
    except (OSError, ValueError):
        return None
    line = bytes(data).split(b"\n", 1)[0]
    if not line.startswith(HANG_REPORT_PREFIX) or b"\n" not in data:
        return None
    try:
        frames = json.loads(line[len(HANG_REPORT_PREFIX):])["frames"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(frames, list):
        return None
    base = os.path.normpath(package)
    out = []
    for f in frames[:64]:
        if not isinstance(f, dict):
            return None
        file, name, qualname = f.get("file"), f.get("name"), f.get("qualname")
        line_no, first, held = f.get("line"), f.get("first"), f.get("held")
        if not (isinstance(file, str) and isinstance(name, str) and isinstance(qualname, str)
                and type(line_no) is int and type(first) is int and type(held) is bool):
            return None
        rel = os.path.normpath(file)
        if os.path.isabs(rel) or not rel.startswith(base + os.sep) or ".." in rel.split(os.sep):
            continue
        out.append({"file": _UNPRINTABLE.sub("?", rel)[:160], "line": line_no, "name": _UNPRINTABLE.sub("?", name)[:80],
                    "qualname": _UNPRINTABLE.sub("?", qualname)[:120], "first": first, "held": held})
    return out


_DUMP_THREAD = re.compile(r"(?:Current thread|Thread) 0x[0-9a-fA-F]+\b")
_DUMP_FRAME = re.compile(r'  File "(.+)", line (\d+) in (.+)')
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def where_it_was(dump: str, root: Path, package: str) -> str:
    """Where the student's code was, from a faulthandler dump of the worker's threads: the
    innermost frames in the student's package, e.g. ``it was in softmax (pkg/attention.py, line
    40), called from forward (pkg/mha.py, line 12)``; "" when the dump shows none.

    Only frames whose file lies inside ``root/package`` are named, with that file relative to
    ``root`` (never the grader's files, the harness's or any other path), and every name is cut
    short and stripped to printable ASCII: the dump comes from the student's process.
    """
    threads: list[list[tuple[str, int, str]]] = []
    for line in dump[:DUMP_MAX_BYTES].splitlines():
        if _DUMP_THREAD.match(line):
            threads.append([])
        elif threads and (m := _DUMP_FRAME.fullmatch(line)):
            threads[-1].append((m[1], int(m[2][:9]), m[3]))

    def serves(frames: list[tuple[str, int, str]]) -> bool:  # the thread running the request loop
        return any(fn == "serve" and os.path.basename(f) == "worker.py"
                   and os.path.basename(os.path.dirname(f)) == "autograder" for f, _, fn in frames)

    base = os.path.normpath(os.path.join(str(root), package)) + os.sep

    def own(frames: list[tuple[str, int, str]]) -> list[tuple[str, int, str]]:
        out = []
        for f, line, fn in frames:
            path = os.path.normpath(f)
            if os.path.isabs(path) and path.startswith(base):
                out.append((os.path.relpath(path, str(root)), line, fn))
        return out

    # The thread serving requests where the dump shows it, else the last one listed with frames
    # of the student's (faulthandler lists the newest thread first, so the main thread last).
    candidates = [t for t in threads if serves(t)] or [t for t in reversed(threads) if own(t)]
    frames = own(candidates[0]) if candidates else []
    if not frames:
        return ""

    def clean(text: str, n: int) -> str:
        text = _UNPRINTABLE.sub("?", text)
        return text if len(text) <= n else text[:n - 3] + "..."

    parts = []
    for rel, line, fn in frames[:DUMP_FRAMES_SHOWN]:
        rel = clean(rel, 160)
        parts.append(f"the top level of {rel} (line {line})" if fn == "<module>"
                     else f"{clean(fn, 80)} ({rel}, line {line})")
    text = "it was in " + ", called from ".join(parts)
    if len(frames) > DUMP_FRAMES_SHOWN:
        text += f" (and {len(frames) - DUMP_FRAMES_SHOWN} more calls in your files further out)"
    return text


@dataclass
class _Process:
    popen: subprocess.Popen | forkserver.ForkedProcess
    to_worker: int
    from_worker: int
    generation: int
    dumps: int = -1  # read end of the pipe the worker writes its stacks to on SIGUSR1


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
    fork: bool = True  # start workers as forks of a fork server (see autograder.sandbox.forkserver)
    # On a timeout, say where in ``root/package`` the code was (off for code whose insides the
    # reader must not see, such as the reference's in a student's message).
    locate_hangs: bool = True
    # The grading's time budget (time.time()): no request waits past it. None: no budget.
    deadline: float | None = None
    # The test running now (its name in results.json), for messages about hangs in later tests.
    test_name: str = ""

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
        self.hangs: list[Hang] = []  # functions that ran past a limit, for the workers' breakers

    # ------------------------------------------------------------------ lifecycle
    @property
    def generation(self) -> int:
        return self._generation

    def _start(self) -> _Process:
        # (No PYTHON* variables: the worker runs `python -I`, which ignores them all.)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": self._scratch.name,
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

        # Requests go to_r -> worker, replies worker -> from_r, stack dumps worker -> dump_r. Each
        # descriptor is closed once, by name: a failure halfway (EMFILE) closes only what exists.
        fds: dict[str, int] = {}

        def open_pipes() -> None:
            for r, w in (("to_r", "to_w"), ("from_r", "from_w"), ("dump_r", "dump_w")):
                fds[r], fds[w] = os.pipe()

        def close(*names: str) -> None:
            for name in names:
                fd = fds.pop(name, -1)
                if fd >= 0:
                    try:
                        os.close(fd)
                    except OSError:
                        pass

        def worker_args() -> list[str]:
            return [str(self.root), self.package, str(fds["to_r"]), str(fds["from_w"]), str(fds["dump_w"])]

        worker_ends = ("to_r", "from_w", "dump_w")
        log = None
        try:
            open_pipes()
            log = open(self._log_path, "ab")
            server = forkserver.server_for(env, self.limits.start_s) if self.fork else None
            popen = None
            if server is not None:
                try:  # a fork of a process that has imported torch already: milliseconds
                    popen = server.spawn(worker_args(), env, self._scratch.name, log.fileno(),
                                         tuple(fds[n] for n in worker_ends))
                except forkserver.ForkServerError:
                    # A late fork may hold these pipes: the worker started instead gets new ones.
                    close(*list(fds))
                    open_pipes()
            if popen is None:
                popen = subprocess.Popen(
                    [sys.executable, "-I", "-m", "autograder.sandbox.worker", *worker_args()],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    pass_fds=tuple(fds[n] for n in worker_ends),
                    cwd=self._scratch.name,
                    env=env,
                    start_new_session=True,
                )
        except BaseException:
            close("to_w", "from_r", "dump_r")
            raise
        finally:
            if log is not None:
                log.close()
            close(*worker_ends)
        to_w, from_r, dump_r = fds["to_w"], fds["from_r"], fds["dump_r"]
        self._generation += 1
        proc = _Process(popen, to_w, from_r, self._generation, dump_r)
        self._proc = proc
        try:
            # Answered before any student code is imported, so the sandbox report is the worker's own.
            hello = self._exchange(proc, {"op": "hello"}, self.limits.start_s, "starting the worker")
            if isinstance(hello, dict) and isinstance(hello.get("sandbox"), dict):
                self.sandbox_report = hello["sandbox"]
        except WorkerTimeout:
            if self.deadline is not None and time.time() >= self.deadline - 1.0:  # the budget cut the wait
                raise WorkerTimeout(f"The worker that runs {self.label} was still starting when the grading's "
                                    "time budget was used up.") from None
            raise WorkerTimeout(
                f"The worker that runs {self.label} did not start within {self.limits.start_s:.0f} s."
            ) from None
        if self.hangs:
            chains = [[{**f, "index": i} for f in h.frames] for i, h in enumerate(self.hangs)]
            self._exchange(proc, {"op": "breaker", "chains": chains}, self.limits.start_s, "starting the worker")
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
        for fd in (proc.to_worker, proc.from_worker, proc.dumps):
            try:
                os.close(fd)
            except OSError:
                pass
        return code

    def stop(self) -> None:
        """Stop the worker (a new one starts, forked in milliseconds, on the next request)."""
        self._discard()

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
        budget_cut = False
        if self.deadline is not None:
            left = self.deadline - time.time()
            if left < timeout:
                timeout, budget_cut = max(left, 0.5), True
        try:
            write_frame(proc.to_worker, pack(message))
            start = time.monotonic()
            if self.locate_hangs and timeout >= MARK_MIN_S and proc.dumps >= 0:
                # halfway: mark the frames running now (a function still running at the end hung)
                if not select.select([proc.from_worker], [], [], timeout / 2)[0] and proc.popen.poll() is None:
                    try:
                        os.kill(proc.popen.pid, signal.SIGUSR2)
                    except OSError:
                        pass
            reply = read_frame(proc.from_worker, start + timeout)
        except TimeoutError:
            where, frames = "", None
            try:
                if self.locate_hangs:
                    frames = hang_report(proc, self.root, self.package)
                    where = where_it_was(stack_dump(proc), self.root, self.package)
            except Exception:  # noqa: BLE001 - a detail of the message
                where = ""
            finally:  # also when a test timeout or Ctrl-C lands during the dump wait: never a stale worker
                self._discard()
            label = self.label[0].upper() + self.label[1:]
            note = f"{label} did not finish within {timeout:g} s ({what}) and was stopped"
            note += (": the grading's time budget was used up." if budget_cut else ".")
            if where:
                note += f" At that moment {where}."
            hang = self._note_hang(frames or [], timeout)
            if hang is not None and not budget_cut:
                note += (f" {hang.name} had been running for at least {timeout / 2:g} s:"
                         f" from now on every call of it in this grading fails at once"
                         f" instead of waiting {timeout:g} s again.")
            raise WorkerTimeout(note) from None
        except (ChannelClosed, BrokenPipeError, ProtocolError) as e:
            invalid = isinstance(e, ProtocolError) and not isinstance(e, ChannelClosed)
            code = None
            if not invalid:  # it is ending: how? (a worker that sent garbage is stopped at once)
                try:
                    code = proc.popen.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            self._discard()
            reason = f"sent an invalid reply ({e}) and was stopped" if invalid else describe_exit(code)
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
        index = err.get("hung_before")
        if type(index) is int and 0 <= index < len(self.hangs):
            hang = self.hangs[index]
            where = f'in an earlier test, "{hang.test}",' if hang.test else "in an earlier call"
            text = (f"{hang.name} did not finish {where} where it was stopped after {hang.limit_s:g} s;"
                    f" so this call of it ({what}) was stopped at once instead of waiting again."
                    " Fix that hang first.")
            trace = str(err.get("traceback", ""))[:4000].rstrip()
            raise WorkerTimeout(text + (f"\nCalled from:\n{trace}" if trace else ""))
        raise StudentCodeError(
            what,
            str(err.get("type", "Exception"))[:200],
            str(err.get("message", ""))[:4000],
            str(err.get("traceback", ""))[:4000],
        )

    def _note_hang(self, frames: list[dict], limit_s: float) -> Hang | None:
        """Remember the functions that were running both halfway and at the end of a call that ran
        past its limit (innermost first): later workers fail their calls at once."""
        held = tuple({k: f[k] for k in ("file", "name", "qualname", "first")} for f in frames if f.get("held"))
        if not held:
            return None
        for old in self.hangs:
            if old.frames == held:
                return old
        if len(self.hangs) >= 50:
            return None
        hang = Hang(held, self.test_name, limit_s)
        self.hangs.append(hang)
        return hang

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
            return Remote(self, (value.id, self._generation), (), value.type_name, value.qualname)
        if isinstance(value, list):
            return [self.wrap(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.wrap(v) for v in value)
        if isinstance(value, dict):
            return {k: self.wrap(v) for k, v in value.items()}
        return value


class Remote:
    """Proxy to something in the worker: a module path, or an object handle plus attribute path."""

    __slots__ = ("_ag_client", "_ag_handle_id", "_ag_path", "_ag_type", "_ag_qualname", "_ag_origin")

    def __init__(self, client: WorkerClient, handle: tuple[int, int] | None, path: tuple[str, ...],
                 type_name: str = "", qualname: str = "", origin: str = "") -> None:
        object.__setattr__(self, "_ag_client", client)
        object.__setattr__(self, "_ag_handle_id", handle)
        object.__setattr__(self, "_ag_path", path)
        object.__setattr__(self, "_ag_type", type_name)
        object.__setattr__(self, "_ag_qualname", qualname)  # e.g. numpy.ndarray, as the worker said
        # where the grader read it (pkg.flash.flash_attention), for a function or class fetched by
        # name: messages name it so rather than by its type ("function")
        object.__setattr__(self, "_ag_origin", origin)

    def __getattr__(self, name: str) -> Remote:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        # keeps what its object is called (m.fc reads "MultiHeadAttention.fc"), not what it is
        return Remote(self._ag_client, self._ag_handle_id, self._ag_path + (name,), self._ag_type, "", self._ag_origin)

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
        base = self._ag_origin or self._ag_type or "object"
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


# Types whose name says nothing about the object: a fetched one is named by where it was read.
_CALLABLE_TYPES = ("function", "method", "builtin_function_or_method", "type", "functools.partial", "JITFunction",
                   "InterpretedFunction")


def fetch(ref: Remote) -> Any:
    """The value of a remote attribute (tensors and plain data come back; objects stay remote)."""
    value = ref._ag_request("getattr", f"reading {ref._ag_describe()}")
    if isinstance(value, Remote) and value._ag_type in _CALLABLE_TYPES:
        return Remote(value._ag_client, value._ag_handle_id, (), value._ag_type, value._ag_qualname,
                      ref._ag_describe())
    return value


def typename(ref: Remote) -> str:
    return ref._ag_request("typename", f"inspecting {ref._ag_describe()}")


def remote_type(ref: Remote) -> str:
    """The qualified type name the worker gave for the object behind ``ref`` when it sent the
    handle (``numpy.ndarray``), without asking it again; "" when unknown (an attribute path, or
    an older worker). Printable ASCII, at most 200 characters: text for messages only."""
    if ref._ag_handle_id is None or ref._ag_path:
        return ""
    return _UNPRINTABLE.sub("?", ref._ag_qualname)[:MAX_TYPE_NAME]


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


# What each routine does to the student's code, for messages ({} is its first argument): a
# student reads "raised ... in training your TransformerLM", never a routine's name.
_ROUTINE_WHAT = {"train_lm": "training {}", "audit_call": "{}", "cuda_time": "timed GPU runs of {}",
                 "cuda_peak_memory": "measuring the GPU memory of {}"}


def _routine_what(name: str, args: tuple) -> str:
    first = args[0] if args else None
    template = _ROUTINE_WHAT.get(name, "{}")
    if isinstance(first, Remote) and first._ag_origin and not first._ag_path:
        subject = f"{first._ag_origin}(...)"  # a function fetched by name: pkg.flash.flash_attention(...)
    elif isinstance(first, Remote) and first._ag_type not in ("", *_CALLABLE_TYPES):
        subject = f"your {first._ag_describe()}"  # an object: training your TransformerLM
    else:
        subject = "a call of your function" if template == "{}" else "your function"
    return template.format(subject)


def routine(client: WorkerClient, name: str, *args: Any, timeout: float | None = None, what: str | None = None,
            **kwargs: Any) -> Any:
    """Run the harness routine ``name`` (see :mod:`autograder.sandbox.routines`) inside the worker.

    ``what`` says in messages what it runs, in the student's terms (e.g.
    ``transformer_lab.flash.flash_attention(...)``); by default it is made from the routine and its
    first argument. Whatever it returns was computed next to student code: use it for progress,
    never for grading.
    """
    message = {"op": "routine", "name": name, "args": client.encode_args(list(args)),
               "kwargs": client.encode_args(kwargs)}
    return client.wrap(client.request(message, what or _routine_what(name, args), timeout))
