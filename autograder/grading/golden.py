"""Record the reference's answers once, replay them where the reference cannot go.

The student kit ships the public suites but not the reference solution. When the kit is
built, the public suites run against the reference through :class:`Recorder`, which stores every
value a test obtains from the ``reference`` fixture, in order, per test. In the kit, the
``reference`` fixture is a :class:`Replayer` that hands back those values, so the public tests
run unchanged and give the same verdicts without the solution's code.

Rules for tests that must replay (the public ones): use reference results as data (tensors,
numbers, dicts of tensors); do not backpropagate through them or mutate reference objects.
Values of grader-side oracles (modules the kit does not ship) come through :func:`oracle`.
The kit build replays the suites against the reference and refuses a suite that breaks them.
"""
from __future__ import annotations

import collections.abc
import types
from pathlib import Path
from typing import Any

import torch

from autograder.sandbox.protocol import ProtocolError, pack, unpack

_DATA = (type(None), bool, int, float, str, torch.Tensor, torch.dtype, torch.device, torch.Size)


def _is_data(value: Any, depth: int = 0) -> bool:
    if isinstance(value, _DATA):
        return True
    if depth > 8:
        return False
    if isinstance(value, (list, tuple)):
        return all(_is_data(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and _is_data(v, depth + 1) for k, v in value.items())
    return False


def _freeze(value: Any) -> Any:
    """A detached copy of a data value (what gets stored)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, list):
        return [_freeze(v) for v in value]
    if isinstance(value, dict):
        return {k: _freeze(v) for k, v in value.items()}
    return value


class GoldenMismatch(Exception):
    """The suite asked the replayed reference for something it did not ask when recording."""


class Recorder:
    """Collects, per test, the sequence of values tests got from the reference."""

    def __init__(self) -> None:
        self.tests: dict[str, list[dict]] = {}

    def proxy(self, package: Any, nodeid: str) -> _RecordingProxy:
        self.tests[nodeid] = []
        return _RecordingProxy(package, package.__name__.split(".")[-1], self.tests[nodeid])

    def save(self, path: Path) -> None:
        path.write_bytes(pack({"tests": self.tests}))


class _RecordingProxy:
    __slots__ = ("_obj", "_path", "_log")

    def __init__(self, obj: Any, path: str, log: list[dict]) -> None:
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_log", log)

    def _wrap(self, value: Any, path: str, kind: str) -> Any:
        if isinstance(value, (types.GeneratorType, collections.abc.Iterator)):
            value = list(value)
        if _is_data(value):
            self._log.append({"kind": kind, "path": path, "value": _freeze(value)})
            return value
        self._log.append({"kind": kind, "path": path, "object": True})
        return _RecordingProxy(value, path, self._log)

    def __getattr__(self, name: str) -> Any:
        obj = self._obj
        if isinstance(obj, types.ModuleType) and not hasattr(obj, name):
            import importlib

            value = importlib.import_module(f"{obj.__name__}.{name}")
        else:
            value = getattr(obj, name)
        path = f"{self._path}.{name}"
        if _is_data(value):
            return self._wrap(value, path, "get")
        return _RecordingProxy(value, path, self._log)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        args = tuple(_unwrap(a) for a in args)
        kwargs = {k: _unwrap(v) for k, v in kwargs.items()}
        return self._wrap(self._obj(*args, **kwargs), f"{self._path}()", "call")


def _unwrap(value: Any) -> Any:
    if isinstance(value, _RecordingProxy):
        return object.__getattribute__(value, "_obj")
    return value


class Replayer:
    """Serves recorded reference values to the tests that recorded them."""

    def __init__(self, path: Path) -> None:
        try:
            self.tests: dict[str, list[dict]] = unpack_file(path)["tests"]
        except (OSError, ProtocolError, KeyError) as e:
            raise GoldenMismatch(f"cannot read the recorded reference values {path}: {e}") from None

    def proxy(self, nodeid: str, package_name: str) -> _ReplayProxy:
        if nodeid not in self.tests:
            raise GoldenMismatch(f"no recorded reference values for {nodeid}: the kit is older than this test")
        return _ReplayProxy(package_name, _Cursor(nodeid, list(self.tests[nodeid])))


class _Cursor:
    def __init__(self, nodeid: str, entries: list[dict]) -> None:
        self.nodeid = nodeid
        self.entries = entries
        self.pos = 0

    def peek(self) -> dict | None:
        return self.entries[self.pos] if self.pos < len(self.entries) else None

    def take(self, kind: str, path: str) -> dict:
        entry = self.peek()
        if entry is None or entry["kind"] != kind or entry["path"] != path:
            got = f"{entry['kind']} {entry['path']}" if entry else "nothing"
            raise GoldenMismatch(f"{self.nodeid}: the test asked the reference for {kind} {path}, "
                                 f"but the recording has {got} at this point (rebuild the kit)")
        self.pos += 1
        return entry


class _ReplayProxy:
    __slots__ = ("_path", "_cursor")

    def __init__(self, path: str, cursor: _Cursor) -> None:
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_cursor", cursor)

    def _result(self, entry: dict) -> Any:
        if entry.get("object"):
            return _ReplayProxy(entry["path"], self._cursor)
        return _freeze(entry["value"])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        path = f"{self._path}.{name}"
        entry = self._cursor.peek()
        if entry is not None and entry["kind"] == "get" and entry["path"] == path:
            return self._result(self._cursor.take("get", path))
        return _ReplayProxy(path, self._cursor)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._result(self._cursor.take("call", f"{self._path}()"))


class _Lazy:
    """Submodules import on attribute access (what tests expect of ``reference``)."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        try:
            return getattr(self._module, name)
        except AttributeError:
            import importlib

            return importlib.import_module(f"{self._module.__name__}.{name}")


def measured(reference: Any, what: str, thunk: Any) -> Any:
    """``thunk(reference)``, kept as one recorded value so that it also works in the student kit.

    For measurements that happen around reference code rather than in its return values, such
    as counting FLOPs with FlopCounterMode: replaying the calls inside would measure nothing.
    """
    if isinstance(reference, _ReplayProxy):
        cursor = object.__getattribute__(reference, "_cursor")
        return _freeze(cursor.take("measure", what)["value"])
    if isinstance(reference, _RecordingProxy):
        value = thunk(_Lazy(object.__getattribute__(reference, "_obj")))
        if not _is_data(value):
            raise TypeError(f"measured({what!r}) must return data, got {type(value).__name__}")
        object.__getattribute__(reference, "_log").append({"kind": "measure", "path": what, "value": _freeze(value)})
        return value
    return thunk(reference)


def oracle(reference: Any, target: str, *args: Any, **kwargs: Any) -> Any:
    """The value of the grader-side oracle ``target`` ("module.function") at these arguments, kept as
    one recorded value so that public tests can use it in the student kit.

    Oracle modules (``tests/*_oracles.py``: exact formulas, naive implementations of graded
    functions) are instructor-only: the kit never ships them. A public test therefore names the
    oracle by string instead of importing it; the module is imported only when the value is
    computed (grading, or recording when the kit is built) and the kit replays the recorded value.
    ``reference`` is the test's ``reference`` fixture (the recording is per test, in order).
    """
    module, _, name = target.rpartition(".")
    if not module or not name:
        raise ValueError(f"oracle target must be 'module.function', got {target!r}")

    def compute(_reference: Any) -> Any:
        import importlib

        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    return measured(reference, f"oracle {target}", compute)


def unpack_file(path: Path) -> dict:
    data = Path(path).read_bytes()
    import struct

    head = struct.Struct("<4sQQ")
    if len(data) < head.size:
        raise ProtocolError("file too short")
    _, n_header, n_blob = head.unpack(data[: head.size])
    header = data[head.size: head.size + n_header]
    blob = data[head.size + n_header: head.size + n_header + n_blob]
    return unpack(header, blob, move_to_device=False)
