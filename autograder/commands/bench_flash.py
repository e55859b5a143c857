"""`autograder bench flash`: attention speed over sequence length, as a table and a PNG.

Compares naive PyTorch attention, ``torch.nn.functional.scaled_dot_product_attention``, the
reference Triton kernel and, optionally, a submission's kernel: forward and forward+backward
time and TFLOP/s for each N. The kernels run in worker processes (a submission's code never runs
in this process) and are timed with this process's clock around batches of calls. On a CPU the
kernels run under Triton's interpreter, so use small N there.
"""
from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from autograder.sandbox.client import Limits, WorkerClient, forward_backward, repeat, store
from autograder.authoring.config import Assignment
from autograder.sandbox.errors import StudentFacingError

HEAD_DIMS = (16, 32, 64, 128)  # what ASSIGNMENT_API.md asks every kernel to support
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class Row:
    impl: str
    n: int
    fwd_ms: float
    fwd_bwd_ms: float | None
    fwd_tflops: float


def attention_flops(b: int, h: int, n: int, d: int, causal: bool) -> float:
    """Matmul FLOPs of one forward (QK^T and PV, 2 per multiply-add; half when causal)."""
    flops = 4.0 * b * h * n * n * d
    return flops / 2 if causal else flops


def _naive(q, k, v, is_causal=False):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if is_causal:
        n = q.shape[-2]
        s = s.masked_fill(~torch.ones(n, n, dtype=torch.bool, device=q.device).tril(), float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _time_local(fn: Callable[[], object], repeats: int) -> float:
    fn()
    _sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _time_remote(call: Callable[[], None], repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def dtype_name(dtype: str | None) -> str:
    """The dtype a run uses: the one asked for, else float16 on a GPU and float32 on a CPU."""
    return dtype or ("float16" if torch.cuda.is_available() else "float32")


def check_options(sizes: list[int], *, batch: int, heads: int, head_dim: int, dtype: str | None) -> None:
    """Refuse, with the reason, what no kernel of the assignment is asked to run."""
    if not sizes or any(n < 1 for n in sizes):
        raise ValueError(f"sizes must be positive sequence lengths, got {sizes}")
    if batch < 1 or heads < 1:
        raise ValueError(f"batch and heads must be at least 1, got {batch} and {heads}")
    if head_dim not in HEAD_DIMS:
        raise ValueError(f"head dim must be one of {HEAD_DIMS} (the kernels' contract), got {head_dim}")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype == "bfloat16" and not torch.cuda.is_available():
        raise ValueError("bfloat16 needs a GPU: Triton's interpreter has no bfloat16 tl.dot")


def run(cfg: Assignment, submission: Path | None, sizes: list[int], *, batch: int = 1, heads: int = 2,
        head_dim: int = 32, causal: bool = True, repeats: int = 3, backward: bool = True,
        dtype: str | None = None, call_s: float = 600.0,
        progress: Callable[[str], None] | None = None) -> tuple[list[Row], list[str]]:
    """Rows for every (implementation, N) that ran, and one note per implementation that failed.

    A kernel that raises, crashes or runs past ``call_s`` for one call is noted and not timed at
    larger N; the others go on, so a broken submission still leaves the reference's figures.
    """
    check_options(sizes, batch=batch, heads=heads, head_dim=head_dim, dtype=dtype)
    cuda = torch.cuda.is_available()
    if not cuda:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # inherited by the workers
    device = "cuda" if cuda else "cpu"
    torch_dtype = DTYPES[dtype_name(dtype)]
    limits = Limits(call_s=call_s)
    clients = {"reference": WorkerClient(cfg.reference_root, cfg.package, limits=limits, label="the reference")}
    if submission is not None:
        clients["submission"] = WorkerClient(Path(submission), cfg.package, limits=limits, label="the submission")
    rows: list[Row] = []
    failed: dict[str, str] = {}
    try:
        for n in sizes:
            q, k, v = (torch.randn(batch, heads, n, head_dim, device=device, dtype=torch_dtype) for _ in range(3))
            g = torch.randn_like(q)
            flops = attention_flops(batch, heads, n, head_dim, causal)
            local = {"naive": _naive,
                     "sdpa": lambda q, k, v, is_causal: torch.nn.functional.scaled_dot_product_attention(
                         q, k, v, is_causal=is_causal)}
            for name, fn in local.items():
                fwd = _time_local(lambda: fn(q, k, v, is_causal=causal), repeats)
                fb = None
                if backward:
                    qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))
                    fb = _time_local(lambda: fn(qg, kg, vg, is_causal=causal).backward(g), repeats)
                rows.append(Row(name, n, fwd * 1e3, None if fb is None else fb * 1e3, flops / fwd / 1e12))
                if progress:
                    progress(f"{name} N={n}")
            for name, client in clients.items():
                if name in failed:
                    continue
                flash = client.root_ref().flash
                try:
                    args = store(client, [q, k, v])
                    fwd = _time_remote(lambda: repeat(flash.flash_attention, args, 1,
                                                      kwargs={"is_causal": causal}), repeats)
                    fb = None
                    if backward:
                        fb = _time_remote(lambda: forward_backward(
                            flash.flash_attention, [q, k, v], g, wrt=[0, 1, 2], kwargs={"is_causal": causal}),
                            repeats)
                    client.release_all()
                except StudentFacingError as e:
                    failed[name] = f"{name} stopped at N={n}: {e}"
                    continue
                rows.append(Row(name, n, fwd * 1e3, None if fb is None else fb * 1e3, flops / fwd / 1e12))
                if progress:
                    progress(f"{name} N={n}")
    finally:
        for client in clients.values():
            client.close()
    return rows, list(failed.values())


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for impl in dict.fromkeys(r.impl for r in rows):
        mine = [r for r in rows if r.impl == impl]
        ax.plot([r.n for r in mine], [r.fwd_ms for r in mine], marker="o", label=impl)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length N")
    ax.set_ylabel("forward time (ms)")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (Triton interpreter)"
    ax.set_title(f"Attention forward time, {device}")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def default_sizes() -> list[int]:
    return [512, 1024, 2048, 4096, 8192, 16384] if torch.cuda.is_available() else [16, 32, 64]
