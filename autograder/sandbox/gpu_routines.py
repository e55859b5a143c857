"""GPU routines the harness runs inside a worker: CUDA-event timing with an L2 flush, peak memory.

Like :mod:`autograder.sandbox.routines`, they run next to student code, so what they report is
information, not evidence: the suites bound reported times with the grader's own wall clock and
grade ratios against the reference measured the same way. Merged into ``routines.REGISTRY``.
"""
from __future__ import annotations

import gc
import math
from collections.abc import Callable
from typing import Any

import torch

L2_FLUSH_BYTES = 256 * 1024 * 1024  # larger than any current GPU's L2 cache


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, is_causal: bool = False,
                    softmax_scale: float | None = None) -> torch.Tensor:
    """Plain PyTorch attention (materialises the N x N scores): the baseline a kernel must beat."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else softmax_scale
    s = torch.matmul(q, k.transpose(-2, -1)) * scale
    if is_causal:
        n = q.shape[-2]
        s = s.masked_fill(~torch.ones(n, n, dtype=torch.bool, device=q.device).tril(), float("-inf"))
    return torch.matmul(torch.softmax(s, dim=-1, dtype=torch.float32).to(q.dtype), v)


BUILTINS: dict[str, Callable[..., Any]] = {"naive_attention": naive_attention}


def _resolve(fn: Any) -> Callable[..., Any]:
    if isinstance(fn, str):
        if fn not in BUILTINS:
            raise ValueError(f"unknown built-in function {fn!r}")
        return BUILTINS[fn]
    return fn


def cuda_time(fn: Any, args: list, kwargs: dict | None = None, *, repeats: int = 10, warmup: int = 1,
              flush_bytes: int = L2_FLUSH_BYTES) -> dict:
    """Time ``fn(*args, **kwargs)`` ``repeats`` times with CUDA events, flushing L2 before each run.

    ``fn`` is a callable or the name of a built-in (``"naive_attention"``). Runs under no_grad after
    ``warmup`` untimed calls (compilation, autotuning). Returns ``{"ms": [...], "device": name}``.
    """
    if not torch.cuda.is_available():
        raise RuntimeError("cuda_time needs a CUDA GPU")
    fn = _resolve(fn)
    kwargs = kwargs or {}
    flush = torch.empty(int(flush_bytes), dtype=torch.uint8, device="cuda")
    times: list[float] = []
    with torch.no_grad():
        for _ in range(int(warmup)):
            fn(*args, **kwargs)
        torch.cuda.synchronize()
        for _ in range(int(repeats)):
            flush.zero_()  # evict q, k, v and the previous output from L2
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn(*args, **kwargs)
            end.record()
            end.synchronize()
            times.append(float(start.elapsed_time(end)))
    del flush
    torch.cuda.synchronize()
    return {"ms": times, "device": torch.cuda.get_device_name()}


def cuda_peak_memory(fn: Any, args: list, kwargs: dict | None = None, *, sample_rows: int = 0) -> dict:
    """Peak CUDA memory allocated by one ``fn(*args, **kwargs)`` call beyond what was allocated before it.

    One untimed warm-up call first (compilation and autotuning allocate their own buffers), then the
    measured call under no_grad. With ``sample_rows``, also returns the first and last ``sample_rows``
    rows (dim -2) of the output (its first element when it is a tuple), for a correctness check.
    """
    if not torch.cuda.is_available():
        raise RuntimeError("cuda_peak_memory needs a CUDA GPU")
    fn = _resolve(fn)
    kwargs = kwargs or {}
    with torch.no_grad():
        out = fn(*args, **kwargs)
        del out
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = fn(*args, **kwargs)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    first = out[0] if isinstance(out, (tuple, list)) else out
    sample = None
    if sample_rows and isinstance(first, torch.Tensor) and first.dim() >= 2:
        n = first.shape[-2]
        rows = sorted(set(range(min(sample_rows, n))) | set(range(max(0, n - sample_rows), n)))
        sample = first[..., rows, :].detach().clone()
    return {"peak_bytes": int(peak - base), "base_bytes": int(base), "sample": sample}


REGISTRY: dict[str, Callable[..., Any]] = {"cuda_time": cuda_time, "cuda_peak_memory": cuda_peak_memory}
