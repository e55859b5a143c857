"""The student worker: the only process that imports student code.

Started by :class:`autograder.client.WorkerClient` as
``python -I -m autograder.worker ROOT PACKAGE IN_FD OUT_FD [DUMP_FD]``, or forked by the fork
server (:mod:`autograder.forkserver`), which then calls :func:`main` with the same arguments. It
serves requests read from ``IN_FD`` and answers on ``OUT_FD`` (see :mod:`autograder.protocol`); stdout/stderr are files the
grader reads per test. Objects that cannot be sent (modules, caches, ...) stay here in a handle
table and travel as handles. On ``SIGUSR1`` it writes the Python stacks of its threads to
``DUMP_FD`` (:mod:`faulthandler`): the grader asks for that before it kills a call that ran past
its time limit, to tell the student where their code was.
"""
from __future__ import annotations

import collections.abc
import importlib
import os
import signal
import sys
import traceback
import types
from typing import Any

MAX_ITEMS = 100_000
MAX_MESSAGE = 4000


class Worker:
    def __init__(self, root: str, package: str, sandbox: dict | None = None) -> None:
        self.root = root
        self.package = package
        self.sandbox = sandbox or {}
        self.objects: dict[int, Any] = {}
        self.ids: dict[int, int] = {}  # id(obj) -> handle
        self.next_handle = 1

    # -------------------------------------------------------------- handles
    def handle_for(self, obj: Any):
        from autograder.protocol import Handle

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
        from autograder.protocol import Handle

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
    def import_module(self, name: str) -> types.ModuleType:
        if not name.isidentifier():
            raise ValueError(f"bad module name {name!r}")
        return importlib.import_module(f"{self.package}.{name}")

    def resolve(self, target: dict) -> Any:
        path = list(target.get("path", []))
        if "handle" in target:
            h = int(target["handle"])
            if h not in self.objects:
                raise LookupError(f"object handle {h} no longer exists in the worker")
            obj = self.objects[h]
        else:
            if not path:
                obj = importlib.import_module(self.package)
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
        from autograder.protocol import Handle

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
        """Run a harness routine (autograder.routines) on worker objects, e.g. a training loop."""
        from autograder import routines

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
            out.backward(self.resolve_args(msg["grad_output"]))
        return {
            "output": out.detach(),
            "grads": [args[i].grad for i in wrt],
            "param_grads": {name: p.grad for name, p in params.items()},
        }

    # -------------------------------------------------------------- loop
    def serve(self, in_fd: int, out_fd: int) -> None:
        from autograder.protocol import ChannelClosed, pack, read_frame, write_frame

        while True:
            try:
                msg = read_frame(in_fd)
            except ChannelClosed:
                return
            op = msg.get("op")
            handler = getattr(self, f"op_{op}", None)
            try:
                if handler is None:
                    raise ValueError(f"unknown operation {op!r}")
                value = handler(msg)
                reply = pack({"ok": True, "value": value}, make_handle=self.handle_for)
            except BaseException as e:  # noqa: BLE001 - student code may raise anything, SystemExit included
                reply = pack({"ok": False, "error": describe(e, self.root)})
            sys.stdout.flush()
            sys.stderr.flush()
            write_frame(out_fd, reply)


def qualified_type(obj: Any) -> str:
    """``module.QualName`` of ``type(obj)`` (``numpy.ndarray``; builtins without a module), or ""."""
    from autograder.protocol import MAX_TYPE_NAME

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
        from autograder.sandbox import Sandbox, confine

        report = confine(Sandbox.from_json(spec))
    import torch  # noqa: F401 - imported before student code so its import time is not charged to them

    if threads > 0:
        torch.set_num_threads(threads)
    sys.path.insert(0, root)
    os.set_inheritable(in_fd, False)
    os.set_inheritable(out_fd, False)
    Worker(root, package, report).serve(in_fd, out_fd)
    # Never run interpreter teardown hooks the student may have registered.
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
