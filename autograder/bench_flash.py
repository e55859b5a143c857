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

from .client import WorkerClient, forward_backward, repeat, store
from .config import Assignment


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


def run(cfg: Assignment, submission: Path | None, sizes: list[int], *, batch: int = 1, heads: int = 2,
        head_dim: int = 32, causal: bool = True, repeats: int = 3, backward: bool = True,
        progress: Callable[[str], None] | None = None) -> list[Row]:
    cuda = torch.cuda.is_available()
    if not cuda:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # inherited by the workers
    device = "cuda" if cuda else "cpu"
    dtype = torch.float16 if cuda else torch.float32
    clients = {"reference": WorkerClient(cfg.reference_root, cfg.package, label="the reference")}
    if submission is not None:
        clients["submission"] = WorkerClient(Path(submission), cfg.package, label="the submission")
    rows: list[Row] = []
    try:
        for n in sizes:
            q, k, v = (torch.randn(batch, heads, n, head_dim, device=device, dtype=dtype) for _ in range(3))
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
                flash = client.root_ref().flash
                args = store(client, [q, k, v])
                fwd = _time_remote(lambda: repeat(flash.flash_attention, args, 1, kwargs={"is_causal": causal}),
                                   repeats)
                fb = None
                if backward:
                    fb = _time_remote(lambda: forward_backward(flash.flash_attention, [q, k, v], g, wrt=[0, 1, 2],
                                                               kwargs={"is_causal": causal}), repeats)
                rows.append(Row(name, n, fwd * 1e3, None if fb is None else fb * 1e3, flops / fwd / 1e12))
                client.release_all()
                if progress:
                    progress(f"{name} N={n}")
    finally:
        for client in clients.values():
            client.close()
    return rows


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
