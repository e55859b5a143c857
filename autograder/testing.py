"""Helpers for grading suites: strict comparisons with student-facing messages, and timing.

Messages name the property, the shapes, the largest error and where it is, never the inputs.
Values coming back from the worker are checked for their exact type before anything else:
the grader decides what "equal" means, never the student's objects.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch

# What suites use from the rest of the harness, in one place (suite authors import autograder.testing).
from autograder.grading.golden import measured, oracle  # noqa: F401
from autograder.sandbox.aot import format_report  # noqa: F401
from autograder.sandbox.backprop import backprop  # noqa: F401
from autograder.sandbox.client import (  # noqa: F401
    Remote, WorkerClient, fetch, forward_backward, remote_type, repeat, routine, store, typename,
)
from autograder.sandbox.errors import StudentCodeError, StudentFacingError  # noqa: F401
from autograder.authoring.config import Tolerance


def _fmt_index(flat: int, shape: torch.Size) -> str:
    idx = []
    for dim in reversed(shape):
        idx.append(flat % dim)
        flat //= dim
    return "(" + ", ".join(str(i) for i in reversed(idx)) + ")"


def kind_of(value: Any) -> str:
    """What a value that came back is, for messages: ``numpy.ndarray`` for an object that stayed in
    the worker (its type as the worker named it when it sent the handle; the object is never asked),
    the type's name for plain data."""
    if isinstance(value, Remote):
        return remote_type(value) or "an object that is neither a tensor nor plain data"
    return type(value).__name__


def check_tensor(value: Any, what: str, *, shape: tuple[int, ...] | torch.Size | None = None,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """Assert ``value`` is a plain tensor with the given shape, dtype and device."""
    if type(value) is not torch.Tensor:
        raise AssertionError(f"{what}: expected a torch.Tensor, got {kind_of(value)}.")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise AssertionError(f"{what}: expected shape {tuple(shape)}, got {tuple(value.shape)}.")
    if dtype is not None and value.dtype != dtype:
        raise AssertionError(f"{what}: expected dtype {dtype}, got {value.dtype} (keep the input's dtype).")
    if device is not None and value.device.type != torch.device(device).type:
        raise AssertionError(f"{what}: expected a tensor on {device}, got one on {value.device} "
                             "(keep the input's device).")
    return value


def assert_close(actual: Any, expected: torch.Tensor, what: str, tol: Tolerance | None = None,
                 *, atol: float | None = None, rtol: float | None = None, check_dtype: bool = True) -> None:
    """Compare a student tensor with the reference's; the message says where and by how much."""
    check_tensor(actual, what, shape=expected.shape, dtype=expected.dtype if check_dtype else None,
                 device=expected.device)
    atol = atol if atol is not None else (tol.atol if tol else 1e-5)
    rtol = rtol if rtol is not None else (tol.rtol if tol else 1e-4)
    a = actual.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    if a.numel() == 0:
        return
    a_nan, e_nan = torch.isnan(a), torch.isnan(e)
    if (a_nan & ~e_nan).any():
        where = _fmt_index(int((a_nan & ~e_nan).flatten().nonzero()[0]), a.shape)
        raise AssertionError(f"{what}: your output has NaN at index {where} (and "
                             f"{int((a_nan & ~e_nan).sum())} NaN value(s) in all) where the expected value is a number.")
    a_inf, e_inf = torch.isinf(a), torch.isinf(e)
    if (a_inf & ~e_inf).any():
        where = _fmt_index(int((a_inf & ~e_inf).flatten().nonzero()[0]), a.shape)
        raise AssertionError(f"{what}: your output is infinite at index {where} where the expected value is finite.")
    both_inf = a_inf & e_inf
    if (both_inf & (a != e)).any():
        raise AssertionError(f"{what}: your output has an infinity of the wrong sign.")
    finite = ~(a_nan | e_nan | both_inf)
    diff = torch.where(finite, (a - e).abs(), torch.zeros_like(a))
    bound = atol + rtol * e.abs()
    bad = finite & (diff > bound)
    if (e_nan & ~a_nan).any():
        bad = bad | (e_nan & ~a_nan)
    if not bad.any():
        return
    flat = int(torch.where(bad.flatten(), diff.flatten() - bound.flatten(), torch.full_like(diff.flatten(), -1e300)).argmax())
    where = _fmt_index(flat, a.shape)
    rel = diff / e.abs().clamp_min(1e-12)
    raise AssertionError(
        f"{what}: values differ from the expected ones (shape {tuple(a.shape)}). "
        f"{int(bad.sum())} of {a.numel()} elements are outside atol={atol:g}, rtol={rtol:g}; "
        f"max abs error {float(diff.max()):.3g}, max rel error {float(rel[finite].max()):.3g}; "
        f"worst at index {where}: got {float(a.flatten()[flat]):.6g}, expected {float(e.flatten()[flat]):.6g}."
    )


def assert_equal(actual: Any, expected: Any, what: str) -> None:
    """Plain-data equality (ints, strings, lists), checked by exact type first, all the way down.

    Exact types matter: ``True == 1`` and ``[1.0] == [1]``, so a bool or float must not stand in for an int.
    """
    if type(actual) is not type(expected):
        raise AssertionError(f"{what}: expected a {type(expected).__name__}, got {kind_of(actual)}.")
    if isinstance(expected, (list, tuple)):
        if len(actual) != len(expected):
            raise AssertionError(f"{what}: expected {len(expected)} items, got {len(actual)}: {actual!r}.")
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_equal(a, e, f"{what}[{i}]")
        return
    if isinstance(expected, dict):
        if set(actual) != set(expected):
            raise AssertionError(f"{what}: expected the keys {sorted(map(str, expected))}, "
                                 f"got {sorted(map(str, actual))}.")
        for k in expected:
            assert_equal(actual[k], expected[k], f"{what}[{k!r}]")
        return
    if actual != expected:
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}.")


def expect_student_error(call: Callable[[], Any], exc_type: str, what: str) -> None:
    """Assert that calling student code raises ``exc_type`` (by name, raised in the worker)."""
    from autograder.sandbox.errors import StudentCodeError

    try:
        call()
    except StudentCodeError as e:
        if e.type_name != exc_type and not (exc_type == "Exception"):
            raise AssertionError(f"{what}: expected {exc_type}, but your code raised "
                                 f"{e.type_name}: {e.student_message}") from None
        return
    raise AssertionError(f"{what}: expected {exc_type} to be raised, but nothing was raised.")


# --------------------------------------------------------------------------- timing


@dataclass
class Timing:
    """Seconds per request of side a and side b, one entry per repeat."""

    a_s: list[float]
    b_s: list[float]

    @property
    def ratio(self) -> float:
        """Median over repeats of a's time / b's time (each repeat measured back to back)."""
        return statistics.median(a / b for a, b in zip(self.a_s, self.b_s))

    def per_call_ms(self, inner: int) -> tuple[float, float]:
        return statistics.median(self.a_s) / inner * 1e3, statistics.median(self.b_s) / inner * 1e3

    def describe(self, inner: int, a: str = "your code", b: str = "reference") -> str:
        ta, tb = self.per_call_ms(inner)
        return f"{a} {ta:.3f} ms per call, {b} {tb:.3f} ms per call, ratio {self.ratio:.2f}"


@dataclass
class TimedCall:
    """One side of a timing comparison: a remote callable, its worker, and its arguments."""

    fn: Remote
    client: WorkerClient
    args: list
    kwargs: dict | None = None


def time_alternating(a: TimedCall, b: TimedCall, *, repeats: int = 7, target_s: float = 0.05,
                     max_inner: int = 1000, warm: bool = False) -> tuple[Timing, int]:
    """Time ``a`` and ``b`` alternately with the grader's own clock; ``Timing.ratio`` is a / b.

    Inputs are stored in each worker once; every repeat runs a callable ``inner`` times in one
    request, sized so that a request takes about ``target_s`` for ``b``. The order alternates
    between repeats so neither side always runs first. Returns the timings and ``inner``.
    ``warm=True`` says both calls already ran on these workers (same sizes), so the warm-up call
    of each is left out.
    """
    stored = [store(c.client, c.args) for c in (a, b)]

    def run(i: int, n: int) -> float:
        call = (a, b)[i]
        t0 = time.perf_counter()
        repeat(call.fn, stored[i], n, kwargs=call.kwargs or {})
        return time.perf_counter() - t0

    if not warm:
        run(0, 1)  # warm up both (first calls allocate, load kernels), then size the batch on b
        run(1, 1)
    one = run(1, 1)
    if one < target_s / 3:  # a quick call: size on a few (the request's own overhead, timer resolution)
        one = run(1, 3) / 3
    inner = max(1, min(max_inner, int(target_s / max(one, 1e-6))))
    timing = Timing([], [])
    for r in range(repeats):
        order = (0, 1) if r % 2 == 0 else (1, 0)
        for i in order:
            (timing.a_s if i == 0 else timing.b_s).append(run(i, inner))
    return timing, inner


T = TypeVar("T")


def best_measurement(measure: Callable[[], T], score: Callable[[T], float], attempts: int = 3) -> tuple[T, int]:
    """Call ``measure()`` until ``score`` gives it full credit (1.0), at most ``attempts`` times:
    (the best-scoring measurement, how many were taken).

    Why: on a shared machine another process can slow one side of a comparison for a whole
    measurement and push a correct solution past a threshold; measuring again costs only the
    unlucky (or slow) submissions. A genuinely slow one (a Python loop over heads is about 5x)
    stays slow in every attempt, so this never rescues it.
    """
    best, best_score, taken = None, -1.0, 0
    for _ in range(max(1, attempts)):
        result = measure()
        taken += 1
        value = score(result)
        if taken == 1 or value > best_score:
            best, best_score = result, value
        if value >= 1.0:
            break
    return best, taken


def time_interleaved(student_fn: Remote, student_client: WorkerClient, reference_fn: Remote,
                     reference_client: WorkerClient, args: list, *, repeats: int = 7,
                     target_s: float = 0.05, kwargs: dict | None = None) -> tuple[Timing, int]:
    """Student vs reference on the same inputs (see :func:`time_alternating`)."""
    return time_alternating(TimedCall(student_fn, student_client, args, kwargs),
                            TimedCall(reference_fn, reference_client, args, kwargs),
                            repeats=repeats, target_s=target_s)
