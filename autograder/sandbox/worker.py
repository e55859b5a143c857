"""The student worker: the only process that imports student code.

Started by :class:`autograder.sandbox.client.WorkerClient` as
``python -I -m autograder.sandbox.worker ROOT PACKAGE IN_FD OUT_FD [DUMP_FD]``, or forked by the fork
server (:mod:`autograder.sandbox.forkserver`), which then calls :func:`main` with the same arguments. It
serves requests read from ``IN_FD`` and answers on ``OUT_FD`` (see :mod:`autograder.sandbox.protocol`); stdout/stderr are files the
grader reads per test. Objects that cannot be sent (modules, caches, ...) stay here in a handle
table and travel as handles. On ``SIGUSR1`` it writes the Python stacks of its threads to
``DUMP_FD`` (:mod:`faulthandler`): the grader asks for that before it kills a call that ran past
its time limit, to tell the student where their code was. On ``SIGUSR2`` it writes a report of the
student frames the main thread is in, marking those that were already running at the previous
``SIGUSR2`` of the same request (:class:`HangWatch`): the grader sends one halfway through a call's
time limit and one when it runs out, so the function that hung is known exactly. Functions that
hung earlier in the run are given back by the grader (``op_breaker``) and then fail at once
(:class:`Breakers`), so one hang costs its time limit once, not in every later test.
"""
from __future__ import annotations

import collections.abc
import importlib
import os
import re
import signal
import sys
import traceback
import types
from typing import Any

from autograder.sandbox.student_imports import package_or_bare

MAX_ITEMS = 100_000
MAX_MESSAGE = 4000
HANG_REPORT_PREFIX = b"AGHANG "
MAX_REPORTED_FRAMES = 64


class HungBefore(BaseException):
    """Raised on entering a function that hung earlier in this grading (a BaseException, so an
    ``except Exception`` around the call does not swallow it). ``index`` names the grader's record."""

    def __init__(self, index: int, name: str) -> None:
        super().__init__(f"{name} hung earlier in this grading; stopped at once this time")
        self.index = index


class HangWatch:
    """The SIGUSR2 side of locating a hang: each signal reports the main thread's student frames
    (innermost first) and keeps them; a frame still running at the next signal of the same request
    is reported as ``held`` (frame objects are compared by identity: a new call is a new frame).

    Runs as a Python signal handler, so only between bytecodes of the main thread (a C call that
    never returns gives no report; the grader then falls back to the faulthandler stacks)."""

    def __init__(self, root: str, package: str, fd: int) -> None:
        self.base = os.path.normpath(os.path.join(root, package)) + os.sep
        self.root = root
        self.fd = fd
        self.marked: list[types.FrameType] = []

    def reset(self) -> None:
        self.marked = []

    def own(self, frame: types.FrameType | None) -> list[types.FrameType]:
        out = []
        while frame is not None and len(out) < MAX_REPORTED_FRAMES:
            path = os.path.normpath(frame.f_code.co_filename)
            if os.path.isabs(path) and path.startswith(self.base):
                out.append(frame)
            frame = frame.f_back
        return out

    def handle(self, signum: int, frame: types.FrameType | None) -> None:
        import json

        frames = self.own(frame)
        report = [{
            "file": os.path.relpath(os.path.normpath(f.f_code.co_filename), self.root),
            "line": f.f_lineno or 0,
            "name": f.f_code.co_name,
            "qualname": getattr(f.f_code, "co_qualname", f.f_code.co_name),
            "first": f.f_code.co_firstlineno,
            "held": any(f is m for m in self.marked),
        } for f in frames]
        self.marked = frames
        try:
            os.write(self.fd, HANG_REPORT_PREFIX + json.dumps({"frames": report}).encode() + b"\n")
        except OSError:
            pass


class Breakers:
    """Functions (and modules, at import) that hung earlier in the run: each is replaced where the
    student's modules and classes hold it by a wrapper that raises :class:`HungBefore` at once.

    A spec names a frame as the grader saw it: ``file`` (relative to the root), ``name``,
    ``first`` (first line), ``index`` (the grader's record). Specs are tried innermost first and
    the first one found is armed; a ``<module>`` spec refuses the module's import instead."""

    def __init__(self, root: str, package: str) -> None:
        self.root, self.package = root, package
        self.chains: list[list[dict]] = []
        self.done: set[int] = set()  # chains armed already
        self.blocked: dict[str, int] = {}  # module name -> index

    def add(self, chains: list[list[dict]]) -> None:
        self.chains = [c for c in chains if isinstance(c, list)][:100]
        self.done = set()
        for i, chain in enumerate(self.chains):
            for spec in chain[:MAX_REPORTED_FRAMES]:
                if isinstance(spec, dict) and spec.get("name") == "<module>":
                    module = self._module_name(str(spec.get("file", "")))
                    if module:
                        self.blocked[module] = int(spec.get("index", i))
                        self.done.add(i)
                    break
        if self.blocked and self not in sys.meta_path:
            sys.meta_path.insert(0, self)  # type: ignore[arg-type]

    def _module_name(self, rel: str) -> str:
        parts = os.path.normpath(rel).split(os.sep)
        if not parts or parts[0] != self.package or not parts[-1].endswith(".py"):
            return ""
        parts[-1] = parts[-1][:-3]
        if parts[-1] == "__init__":
            parts.pop()
        return ".".join(parts)

    # importlib finder protocol: refuse modules whose top level hung
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        index = self.blocked.get(fullname)
        if index is not None:
            raise HungBefore(index, f"importing {fullname}")
        return None

    def arm(self) -> None:
        """Arm every chain not armed yet whose function can be found in the loaded student modules."""
        if len(self.done) == len(self.chains):
            return
        modules = {name: m for name, m in list(sys.modules.items())
                   if m is not None and (name == self.package or name.startswith(self.package + "."))}
        for i, chain in enumerate(self.chains):
            if i in self.done:
                continue
            for spec in chain[:MAX_REPORTED_FRAMES]:
                if isinstance(spec, dict) and self._arm_one(spec, modules, int(spec.get("index", i))):
                    self.done.add(i)
                    break

    def _arm_one(self, spec: dict, modules: dict[str, types.ModuleType], index: int) -> bool:
        target = os.path.normpath(os.path.join(self.root, str(spec.get("file", ""))))
        name, first = spec.get("name"), spec.get("first")

        def matches(fn: Any) -> bool:
            for _ in range(10):  # through decorators that keep __wrapped__
                code = getattr(fn, "__code__", None)
                if isinstance(code, types.CodeType) and code.co_name == name and code.co_firstlineno == first \
                        and os.path.normpath(code.co_filename) == target:
                    return True
                fn = getattr(fn, "__wrapped__", None)
                if fn is None:
                    return False
            return False

        found: dict[int, Any] = {}  # id(original) -> wrapper
        qualname = str(spec.get("qualname") or name)[:200]

        def wrapper_for(fn: Any) -> Any:
            import functools

            if id(fn) not in found:
                @functools.wraps(fn)
                def tripped(*args: Any, **kwargs: Any) -> Any:
                    raise HungBefore(index, qualname)
                found[id(fn)] = tripped
            return found[id(fn)]

        def scan(namespace: dict, owner: Any, depth: int) -> None:
            for key, value in list(namespace.items()):
                raw = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
                if isinstance(raw, types.FunctionType) and matches(raw):
                    new = wrapper_for(raw)
                    if isinstance(value, staticmethod):
                        new = staticmethod(new)
                    elif isinstance(value, classmethod):
                        new = classmethod(new)
                    try:
                        if owner is None:
                            namespace[key] = new
                        else:
                            setattr(owner, key, new)
                    except (AttributeError, TypeError):
                        pass
                elif isinstance(value, type) and depth < 2 and getattr(value, "__module__", "") in modules:
                    scan(dict(vars(value)), value, depth + 1)

        for module in modules.values():
            try:
                scan(vars(module), None, 0)
            except Exception:  # noqa: BLE001 - a strange module of the student's: that chain stays unarmed
                pass
        return bool(found)


class Worker:
    def __init__(self, root: str, package: str, sandbox: dict | None = None) -> None:
        self.root = root
        self.package = package
        self.sandbox = sandbox or {}
        self.objects: dict[int, Any] = {}
        self.ids: dict[int, int] = {}  # id(obj) -> handle
        self.next_handle = 1
        self.breakers = Breakers(root, package)
        self.watch: HangWatch | None = None

    # -------------------------------------------------------------- handles
    def handle_for(self, obj: Any):
        from autograder.sandbox.protocol import Handle

        if isinstance(obj, collections.abc.Iterator):
            items = []
            for i, x in enumerate(obj):
                if i >= MAX_ITEMS:
                    break
                items.append(x)
            return items
        if isinstance(obj, (set, frozenset)):
            return list(obj)
        if hasattr(obj, "_asdict") and isinstance(obj, tuple):
            return tuple(obj)
        h = self.ids.get(id(obj))
        if h is None or self.objects.get(h) is not obj:
            h = self.next_handle
            self.next_handle += 1
            self.objects[h] = obj
            self.ids[id(obj)] = h
        return Handle(h, type(obj).__name__, qualified_type(obj))

    def release(self, handles: list[int] | None) -> None:
        keys = list(self.objects) if handles is None else handles
        for h in keys:
            obj = self.objects.pop(h, None)
            if obj is not None:
                self.ids.pop(id(obj), None)

    def resolve_args(self, value: Any) -> Any:
        from autograder.sandbox.protocol import Handle

        if isinstance(value, Handle):
            if value.id not in self.objects:
                raise LookupError(f"object handle {value.id} no longer exists in the worker")
            return self.objects[value.id]
        if isinstance(value, list):
            return [self.resolve_args(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.resolve_args(v) for v in value)
        if isinstance(value, dict):
            return {k: self.resolve_args(v) for k, v in value.items()}
        return value

    # -------------------------------------------------------------- targets
    def package_module(self) -> types.ModuleType:
        """The student's package (see :func:`package_or_bare`)."""
        return package_or_bare(self.package, self.root)

    def import_module(self, name: str) -> types.ModuleType:
        if not name.isidentifier():
            raise ValueError(f"bad module name {name!r}")
        self.package_module()
        try:
            return importlib.import_module(f"{self.package}.{name}")
        except ImportError as e:
            hint = ungraded_module_hint(e, self.root, self.package)
            if hint:  # the same exception (its traceback names the student's line), told more
                e.msg = f"{e}. {hint}"
                e.args = (e.msg,)
            raise

    def resolve(self, target: dict) -> Any:
        path = list(target.get("path", []))
        if "handle" in target:
            h = int(target["handle"])
            if h not in self.objects:
                raise LookupError(f"object handle {h} no longer exists in the worker")
            obj = self.objects[h]
        else:
            if not path:
                obj = self.package_module()
            else:
                obj = self.import_module(path.pop(0))
        for name in path:
            obj = getattr(obj, name)
        return obj

    # -------------------------------------------------------------- operations
    def op_hello(self, msg: dict) -> Any:
        import torch

        return {
            "pid": os.getpid(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "cuda": bool(torch.cuda.is_available()),
            "sandbox": self.sandbox,
        }

    def op_import(self, msg: dict) -> Any:
        self.import_module(str(msg["module"]))
        self.breakers.arm()
        return None

    def op_breaker(self, msg: dict) -> Any:
        """Functions that hung earlier in this grading (see :class:`Breakers`): fail at once from now."""
        chains = msg.get("chains")
        self.breakers.add(chains if isinstance(chains, list) else [])
        self.breakers.arm()
        return None

    def op_call(self, msg: dict) -> Any:
        fn = self.resolve(msg["target"])
        args = self.resolve_args(msg.get("args", []))
        kwargs = self.resolve_args(msg.get("kwargs", {}))
        return fn(*args, **kwargs)

    def op_getattr(self, msg: dict) -> Any:
        return self.resolve(msg["target"])

    def op_typename(self, msg: dict) -> Any:
        obj = self.resolve(msg["target"])
        return type(obj).__name__

    def op_store(self, msg: dict) -> Any:
        # Handles, not values: the caller wants the object kept here for later calls.
        from autograder.sandbox.protocol import Handle

        value = self.resolve_args(msg["value"])
        h = self.next_handle
        self.next_handle += 1
        self.objects[h] = value
        return Handle(h, type(value).__name__, qualified_type(value))

    def op_release(self, msg: dict) -> Any:
        self.release(msg.get("handles"))
        return None

    def op_repeat(self, msg: dict) -> Any:
        """Call the target ``n`` times without returning outputs (the grader times the request)."""
        import torch

        fn = self.resolve(msg["target"])
        args = self.resolve_args(msg.get("args", []))
        if msg.get("star_args"):  # args[0] is a stored list of the real arguments
            args = list(args[0])
        kwargs = self.resolve_args(msg.get("kwargs", {}))
        n = int(msg.get("n", 1))
        with torch.no_grad():
            for _ in range(n):
                fn(*args, **kwargs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
        return None

    def op_routine(self, msg: dict) -> Any:
        """Run a harness routine (autograder.sandbox.routines) on worker objects, e.g. a training loop."""
        from autograder.sandbox import routines

        name = str(msg["name"])
        fn = routines.REGISTRY.get(name)
        if fn is None:
            raise ValueError(f"unknown routine {name!r}")
        args = self.resolve_args(msg.get("args", []))
        kwargs = self.resolve_args(msg.get("kwargs", {}))
        return fn(*args, **kwargs)

    def op_forward_backward(self, msg: dict) -> Any:
        """Run target(*args), backpropagate ``grad_output``; return output and gradients."""
        import torch

        from autograder.sandbox.backprop import backprop

        fn = self.resolve(msg["target"])
        args = list(self.resolve_args(msg.get("args", [])))
        kwargs = self.resolve_args(msg.get("kwargs", {}))
        wrt = [int(i) for i in msg.get("wrt", [])]
        for i in wrt:
            args[i] = args[i].detach().clone().requires_grad_(True)
        params = {}
        if isinstance(fn, torch.nn.Module) and msg.get("params"):
            fn.zero_grad(set_to_none=True)
            params = dict(fn.named_parameters())
        out = fn(*args, **kwargs)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"expected a tensor output, got {type(out).__name__}")
        if out.requires_grad:
            backprop(out, self.resolve_args(msg["grad_output"]))
        return {
            "output": out.detach(),
            "grads": [args[i].grad for i in wrt],
            "param_grads": {name: p.grad for name, p in params.items()},
        }

    # -------------------------------------------------------------- loop
    def serve(self, in_fd: int, out_fd: int) -> None:
        from autograder.sandbox.protocol import ChannelClosed, pack, read_frame, write_frame

        while True:
            try:
                msg = read_frame(in_fd)
            except ChannelClosed:
                return
            op = msg.get("op")
            handler = getattr(self, f"op_{op}", None)
            if self.watch is not None:
                self.watch.reset()
            try:
                if handler is None:
                    raise ValueError(f"unknown operation {op!r}")
                if op in ("call", "getattr", "repeat", "routine", "forward_backward"):
                    self.breakers.arm()  # modules imported by the student's own imports too
                value = handler(msg)
                reply = pack({"ok": True, "value": value}, make_handle=self.handle_for)
            except BaseException as e:  # noqa: BLE001 - student code may raise anything, SystemExit included
                error = describe(e, self.root)
                if isinstance(e, HungBefore):
                    error["hung_before"] = e.index
                reply = pack({"ok": False, "error": error})
            sys.stdout.flush()
            sys.stderr.flush()
            write_frame(out_fd, reply)


def qualified_type(obj: Any) -> str:
    """``module.QualName`` of ``type(obj)`` (``numpy.ndarray``; builtins without a module), or ""."""
    from autograder.sandbox.protocol import MAX_TYPE_NAME

    try:
        cls = type(obj)
        qualname = type.__dict__["__qualname__"].__get__(cls)  # the type's own, never a student's property
        module = type.__dict__["__module__"].__get__(cls)
        if not isinstance(qualname, str):
            return ""
        if not isinstance(module, str) or module in ("", "builtins"):
            return qualname[:MAX_TYPE_NAME]
        return f"{module}.{qualname}"[:MAX_TYPE_NAME]
    except Exception:  # noqa: BLE001 - a message detail: never worth failing a request for
        return ""


_CANNOT_IMPORT = re.compile(r"cannot import name '(\w+)' from (?:partially initialized module )?'([\w.]+)'")


def ungraded_module_hint(e: ImportError, root: str, package: str) -> str:
    """When ``e`` is about a module of the package that is not in the grading folder, say plainly
    that only the assignment's files are graded (the import error itself suggests a circular import
    or a typo). Empty when the import failed for another reason."""
    missing = ""
    name = e.name if isinstance(e.name, str) else ""
    match = _CANNOT_IMPORT.search(str(e))
    if match and match.group(2) == package:
        missing = match.group(1)
    elif name.startswith(package + "."):
        missing = name[len(package) + 1:].partition(".")[0]
    folder = os.path.join(root, package)
    if not missing or not missing.isidentifier() or os.path.exists(os.path.join(folder, missing + ".py")) \
            or os.path.isdir(os.path.join(folder, missing)):
        return ""
    try:
        graded = sorted(f for f in os.listdir(folder) if f.endswith(".py") and f != "__init__.py")
    except OSError:
        graded = []
    return (f"{package}/{missing}.py is not graded: only the files listed for the assignment are copied for "
            f"grading ({', '.join(graded)}), so it is not there. Move what you need from it into the graded "
            "file that imports it.")


def _is_interpreter_error(e: BaseException) -> bool:
    """Triton's interpreter wraps whatever a kernel raised in an InterpreterError (repr as message)."""
    try:
        module = type.__dict__["__module__"].__get__(type(e))
    except Exception:  # noqa: BLE001 - a class of the student's may have removed it
        return False
    return type(e).__name__ == "InterpreterError" and isinstance(module, str) and module.startswith("triton.")


def describe(e: BaseException, root: str) -> dict:
    """Exception summary with only the traceback frames from the student's files.

    An exception Triton's interpreter wrapped (InterpreterError, with what the kernel raised as its
    cause) is described as what the student's code raised, with the frames of both."""
    tb = list(traceback.extract_tb(e.__traceback__))
    for _ in range(8):
        if not _is_interpreter_error(e):
            break
        # the slot itself: a class of the student's cannot answer through a property
        cause = BaseException.__dict__["__cause__"].__get__(e)
        if not isinstance(cause, BaseException):
            break
        e = cause
        tb += traceback.extract_tb(e.__traceback__)
    frames = [f for f in tb if os.path.abspath(f.filename).startswith(os.path.abspath(root) + os.sep)]
    text = "".join(traceback.format_list(frames[-8:]))
    if isinstance(e, SyntaxError) and e.filename:
        text += "".join(traceback.format_exception_only(type(e), e))
    message = str(e)
    if isinstance(e, SystemExit):
        message = f"your code called sys.exit({e.code!r})"
    return {
        "type": type(e).__name__,
        "message": message[:MAX_MESSAGE],
        "traceback": text[-MAX_MESSAGE:],
    }


def watch_for_hang_reports(worker: Worker, fd: int) -> None:
    """On SIGUSR2, report the student frames running now (see :class:`HangWatch`)."""
    try:
        os.set_blocking(fd, False)  # a full pipe loses the report, it never blocks the worker
        worker.watch = HangWatch(worker.root, worker.package, fd)
        signal.signal(signal.SIGUSR2, worker.watch.handle)
    except (AttributeError, ValueError, OSError):
        worker.watch = None


def watch_for_dump_requests(fd: int) -> None:
    """On SIGUSR1, write every thread's Python stack to ``fd`` (from C, so also while the main
    thread is stuck in a loop or a C call) and carry on. Student code can replace or block the
    handler: then the grader gets no stack and says less, nothing else changes."""
    try:
        import faulthandler

        os.set_inheritable(fd, False)  # not for the student's subprocesses
        faulthandler.register(signal.SIGUSR1, file=fd, all_threads=True, chain=False)
    except (AttributeError, ValueError, OSError, RuntimeError):
        pass


def main(argv: list[str]) -> None:
    root, package, in_fd, out_fd = argv[0], argv[1], int(argv[2]), int(argv[3])
    if len(argv) > 4:  # first: a hang anywhere after this can be located
        watch_for_dump_requests(int(argv[4]))
    threads = int(os.environ.get("AUTOGRADER_THREADS", "0"))
    report: dict = {}
    spec = os.environ.pop("AG_SANDBOX", None)
    if spec:  # first, single-threaded, before student code is imported (a fork has torch already)
        from autograder.sandbox.confinement import Sandbox, confine

        report = confine(Sandbox.from_json(spec))
    import torch  # noqa: F401 - imported before student code so its import time is not charged to them

    if threads > 0:
        torch.set_num_threads(threads)
    sys.path.insert(0, root)
    os.set_inheritable(in_fd, False)
    os.set_inheritable(out_fd, False)
    worker = Worker(root, package, report)
    if len(argv) > 4:
        watch_for_hang_reports(worker, int(argv[4]))
    worker.serve(in_fd, out_fd)
    # Never run interpreter teardown hooks the student may have registered.
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
