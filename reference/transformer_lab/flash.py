"""FlashAttention (forward and backward) in Triton.

Shapes: q, k, v (B, H, N, D) with D in {16, 32, 64, 128} and any N >= 1. ``is_causal`` means
query i may attend key j iff j <= i (Lq == Lk here). The default scale is 1/sqrt(D).

The forward is FlashAttention-2: one program per (block of BLOCK_M queries, batch*head). It
streams over blocks of BLOCK_N keys/values and keeps, for each query row, the running maximum
``m_i`` of the scores seen so far, the running sum ``l_i`` of exp(score - m_i) and an
accumulator ``acc`` of the exp-weighted values. When a new block raises the maximum, the old
sum and accumulator are rescaled by exp(m_old - m_new). At the end ``o = acc / l_i`` and the
log-sum-exp ``lse = m_i + log(l_i)`` (natural log) is saved for the backward pass. No N x N
matrix ever leaves the chip: only O (B, H, N, D) and lse (B, H, N) are written.

The backward recomputes the probabilities P = exp(scale * q k^T - lse) block by block:
  delta_i = sum_d dO[i, d] * O[i, d]                 (a small preprocessing kernel)
  dV_j   = sum_i P_ij dO_i                           (kernel 1: one program per key block)
  dS_ij  = P_ij * (dO_i . V_j - delta_i)
  dK_j   = scale * sum_i dS_ij q_i                   (kernel 1, same loop as dV)
  dQ_i   = scale * sum_j dS_ij k_j                   (kernel 2: one program per query block)

The kernels use exp2 (cheaper on GPUs): exp(x) = exp2(x * log2(e)). Inside the kernels scores
are kept in "log2 units" (multiplied by scale * log2(e)); the lse written to memory is converted
back to the natural log.

On a machine without a GPU the same kernels run under Triton's interpreter
(``TRITON_INTERPRET=1`` set before triton is imported), in float32 or float16.

Rules the grader checks (in the source and while your code runs): no scaled_dot_product_attention
or other attention library, and no torch matrix products (``@``, matmul, bmm, einsum, ...) or torch
softmax in this file outside ``@triton.jit`` kernels, in the forward or the backward; at least one
Triton kernel launch per call; no tensor as large as an N x N matrix.
"""
from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634  # log2(e): exp(x) == exp2(x * LOG2E)
LN2 = 0.6931471805599453  # ln(2): log(x) == log2(x) * LN2
HEAD_DIMS = (16, 32, 64, 128)
AUTOTUNE_MIN_N = 1024  # on a GPU, autotune the forward's block sizes from this sequence length on
# The forward's autotuning candidates on a GPU: (BLOCK_M, BLOCK_N, num_warps, num_stages).
FWD_CONFIGS = ((128, 64, 8, 3), (128, 32, 8, 3), (64, 64, 4, 3), (64, 32, 4, 2))


def _interpreting() -> bool:
    """True when Triton runs kernels with its CPU interpreter (no compilation, no autotuning)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# --------------------------------------------------------------------------- forward kernel


@triton.jit
def _attn_fwd(
    Q, K, V, O, LSE,  # pointers: q, k, v, o (B, H, N, D); lse (B, H, N) float32, contiguous
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    H, N_CTX, N_KEY,  # heads, sequence length; N_KEY only buckets N for the autotuner's cache key
    sm_scale,  # softmax scale (1/sqrt(D) by default)
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    IS_CAUSAL: tl.constexpr,
):
    """One program computes BLOCK_M rows of O (and lse) for one (batch, head)."""
    start_m = tl.program_id(0)  # which block of queries
    off_bh = tl.program_id(1)  # which (batch, head)
    off_b = off_bh // H
    off_h = off_bh % H
    # Move every base pointer to this (batch, head).
    Q += off_b * stride_qb + off_h * stride_qh
    K += off_b * stride_kb + off_h * stride_kh
    V += off_b * stride_vb + off_h * stride_vh
    O += off_b * stride_ob + off_h * stride_oh
    LSE += off_bh * N_CTX

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)  # query rows of this program
    offs_n = tl.arange(0, BLOCK_N)  # key columns of one key block (add start_n)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < N_CTX  # rows past the end (N not a multiple of BLOCK_M) are padding

    # Load the query tile once: it stays in registers for the whole loop.
    # BEGIN SOLUTION Load q (BLOCK_M, HEAD_DIM) with mask=row_ok[:, None], other=0. Fold scale * LOG2E into one factor qk_scale. Start m_i at -inf, l_i at 0 and acc (BLOCK_M, HEAD_DIM) at 0, all float32.
    q = tl.load(Q + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd, mask=row_ok[:, None], other=0.0)
    qk_scale = sm_scale * 1.4426950408889634  # scores in log2 units, so we can use exp2
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    # END SOLUTION

    # Stream over the key blocks. Causal: the keys after this block's last query (start_m + 1) *
    # BLOCK_M - 1 are masked for every row, so the loop stops there (no work on masked blocks).
    # BEGIN SOLUTION Loop start_n over range(0, hi, BLOCK_N) (hi = N_CTX, or min((start_m + 1) * BLOCK_M, N_CTX) when causal). Per block: s = tl.dot(q, k^T) * qk_scale; set s = -inf where key >= N_CTX (and key > query when causal); m_new = max(m_i, rowmax(s)); p = exp2(s - m_new); alpha = exp2(m_i - m_new); l_i = l_i * alpha + rowsum(p); acc = acc * alpha + tl.dot(p.to(v.dtype), v); m_i = m_new.
    hi = N_CTX
    if IS_CAUSAL:
        hi = tl.minimum((start_m + 1) * BLOCK_M, N_CTX)
    for start_n in range(0, hi, BLOCK_N):
        cols = start_n + offs_n
        col_ok = cols < N_CTX
        # k^T tile (HEAD_DIM, BLOCK_N), read transposed straight from memory.
        kt = tl.load(K + cols[None, :] * stride_kn + offs_d[:, None] * stride_kd, mask=col_ok[None, :], other=0.0)
        v = tl.load(V + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=col_ok[:, None], other=0.0)
        s = tl.dot(q, kt) * qk_scale  # (BLOCK_M, BLOCK_N) float32, log2 units
        keep = col_ok[None, :]
        if IS_CAUSAL:
            keep = keep & (cols[None, :] <= offs_m[:, None])
        s = tl.where(keep, s, float("-inf"))
        # Key 0 is in the first block and allowed for every row, so m_new is finite from the first
        # iteration on and exp2(m_i - m_new) never sees (-inf) - (-inf).
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)  # rescales what was accumulated under the old maximum
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    # END SOLUTION

    # Normalise, then write O (in the input dtype) and the natural-log lse of the valid rows.
    # BEGIN SOLUTION o = acc / l_i[:, None]; lse = (m_i + log2(l_i)) * LN2 (back from log2 units to the natural log); store both with mask=row_ok.
    acc = acc / l_i[:, None]
    lse = (m_i + tl.log2(l_i)) * 0.6931471805599453
    tl.store(LSE + offs_m, lse, mask=row_ok)
    tl.store(O + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od, acc.to(O.dtype.element_ty),
             mask=row_ok[:, None])
    # END SOLUTION


# --------------------------------------------------------------------------- backward kernels


@triton.jit
def _attn_bwd_preprocess(
    O, DO, DELTA,  # o, dO (B, H, N, D); delta (B, H, N) float32, contiguous
    stride_ob, stride_oh, stride_on, stride_od,
    stride_dob, stride_doh, stride_don, stride_dod,
    H, N_CTX,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    """delta[i] = sum_d dO[i, d] * O[i, d] for BLOCK_M rows of one (batch, head)."""
    start_m = tl.program_id(0)
    off_bh = tl.program_id(1)
    off_b = off_bh // H
    off_h = off_bh % H
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < N_CTX
    # BEGIN SOLUTION Load the O and dO tiles (masked rows, other=0), multiply in float32, sum over the head dim and store into DELTA + off_bh * N_CTX + offs_m.
    o = tl.load(O + off_b * stride_ob + off_h * stride_oh + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od,
                mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + off_b * stride_dob + off_h * stride_doh + offs_m[:, None] * stride_don
                 + offs_d[None, :] * stride_dod, mask=row_ok[:, None], other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + off_bh * N_CTX + offs_m, delta, mask=row_ok)
    # END SOLUTION


@triton.jit
def _attn_bwd_dkdv(
    Q, K, V, DO, DK, DV, LSE, DELTA,  # q, k, v, dO, dK, dV share one layout (B, H, N, D), contiguous
    stride_b, stride_h, stride_n, stride_d,
    H, N_CTX,
    sm_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,  # queries per inner step
    BLOCK_N: tl.constexpr,  # keys owned by this program
    IS_CAUSAL: tl.constexpr,
):
    """One program computes dK and dV for BLOCK_N keys of one (batch, head), looping over queries."""
    start_n = tl.program_id(0) * BLOCK_N
    off_bh = tl.program_id(1)
    off_b = off_bh // H
    off_h = off_bh % H
    base = off_b * stride_b + off_h * stride_h
    Q += base
    K += base
    V += base
    DO += base
    DK += base
    DV += base
    LSE += off_bh * N_CTX
    DELTA += off_bh * N_CTX

    offs_n = start_n + tl.arange(0, BLOCK_N)  # the keys of this program
    offs_m = tl.arange(0, BLOCK_M)  # one query block (add start_m)
    offs_d = tl.arange(0, HEAD_DIM)
    col_ok = offs_n < N_CTX
    kv_offsets = offs_n[:, None] * stride_n + offs_d[None, :] * stride_d
    # BEGIN SOLUTION Keep k, v (BLOCK_N, HEAD_DIM) in registers and dk, dv float32 accumulators. Loop over query blocks (causal: start at the block holding query start_n, since earlier queries cannot see these keys). Per block: recompute p^T = exp2(k q^T * scale * LOG2E - lse * LOG2E), zero outside the valid/causal region; dv += p^T dO; dp^T = v dO^T; ds^T = p^T * (dp^T - delta); dk += ds^T q. Finally dk *= scale; store dk, dv (masked rows).
    k = tl.load(K + kv_offsets, mask=col_ok[:, None], other=0.0)
    v = tl.load(V + kv_offsets, mask=col_ok[:, None], other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    qk_scale = sm_scale * 1.4426950408889634
    lo = 0
    if IS_CAUSAL:
        lo = (start_n // BLOCK_M) * BLOCK_M
    for start_m in range(lo, N_CTX, BLOCK_M):
        rows = start_m + offs_m
        row_ok = rows < N_CTX
        q_offsets = rows[:, None] * stride_n + offs_d[None, :] * stride_d
        q = tl.load(Q + q_offsets, mask=row_ok[:, None], other=0.0)
        do = tl.load(DO + q_offsets, mask=row_ok[:, None], other=0.0)
        lse = tl.load(LSE + rows, mask=row_ok, other=0.0)
        delta = tl.load(DELTA + rows, mask=row_ok, other=0.0)
        st = tl.dot(k, tl.trans(q)) * qk_scale  # (BLOCK_N, BLOCK_M): scores transposed, log2 units
        keep = col_ok[:, None] & row_ok[None, :]
        if IS_CAUSAL:
            keep = keep & (offs_n[:, None] <= rows[None, :])
        pt = tl.where(keep, tl.exp2(st - lse[None, :] * 1.4426950408889634), 0.0)
        dv += tl.dot(pt.to(do.dtype), do)
        dpt = tl.dot(v, tl.trans(do)).to(tl.float32)  # (BLOCK_N, BLOCK_M) = (dO V^T)^T
        dst = pt * (dpt - delta[None, :])
        dk += tl.dot(dst.to(q.dtype), q)
    dk = dk * sm_scale
    tl.store(DK + kv_offsets, dk.to(DK.dtype.element_ty), mask=col_ok[:, None])
    tl.store(DV + kv_offsets, dv.to(DV.dtype.element_ty), mask=col_ok[:, None])
    # END SOLUTION


@triton.jit
def _attn_bwd_dq(
    Q, K, V, DO, DQ, LSE, DELTA,  # q, k, v, dO, dQ share one layout (B, H, N, D), contiguous
    stride_b, stride_h, stride_n, stride_d,
    H, N_CTX,
    sm_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,  # queries owned by this program
    BLOCK_N: tl.constexpr,  # keys per inner step
    IS_CAUSAL: tl.constexpr,
):
    """One program computes dQ for BLOCK_M queries of one (batch, head), looping over keys."""
    start_m = tl.program_id(0) * BLOCK_M
    off_bh = tl.program_id(1)
    off_b = off_bh // H
    off_h = off_bh % H
    base = off_b * stride_b + off_h * stride_h
    Q += base
    K += base
    V += base
    DO += base
    DQ += base
    LSE += off_bh * N_CTX
    DELTA += off_bh * N_CTX

    offs_m = start_m + tl.arange(0, BLOCK_M)  # the queries of this program
    offs_n = tl.arange(0, BLOCK_N)  # one key block (add start_n)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < N_CTX
    q_offsets = offs_m[:, None] * stride_n + offs_d[None, :] * stride_d
    # BEGIN SOLUTION Keep q, dO, lse, delta of these rows in registers and a float32 dq accumulator. Loop over key blocks (causal: stop after the block holding the last query). Per block: p = exp2(q k^T * scale * LOG2E - lse * LOG2E), zero outside the valid/causal region; dp = dO v^T; ds = p * (dp - delta); dq += ds k. Finally dq *= scale; store (masked rows).
    q = tl.load(Q + q_offsets, mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + q_offsets, mask=row_ok[:, None], other=0.0)
    lse = tl.load(LSE + offs_m, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + offs_m, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    qk_scale = sm_scale * 1.4426950408889634
    hi = N_CTX
    if IS_CAUSAL:
        hi = tl.minimum(start_m + BLOCK_M, N_CTX)
    for start_n in range(0, hi, BLOCK_N):
        cols = start_n + offs_n
        col_ok = cols < N_CTX
        kv_offsets = cols[:, None] * stride_n + offs_d[None, :] * stride_d
        k = tl.load(K + kv_offsets, mask=col_ok[:, None], other=0.0)
        v = tl.load(V + kv_offsets, mask=col_ok[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k)) * qk_scale  # (BLOCK_M, BLOCK_N), log2 units
        keep = row_ok[:, None] & col_ok[None, :]
        if IS_CAUSAL:
            keep = keep & (cols[None, :] <= offs_m[:, None])
        p = tl.where(keep, tl.exp2(s - lse[:, None] * 1.4426950408889634), 0.0)
        dp = tl.dot(do, tl.trans(v)).to(tl.float32)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k)
    dq = dq * sm_scale
    tl.store(DQ + q_offsets, dq.to(DQ.dtype.element_ty), mask=row_ok[:, None])
    # END SOLUTION


# --------------------------------------------------------------------------- launch helpers

_FWD_TUNED = None


H100_SHARED_BYTES = 232448  # shared memory one block may use on an H100 (227 KiB; an A100: 166912)


def fwd_shared_estimate(block_m: int, block_n: int, num_stages: int, head_dim: int, elem_bytes: int) -> int:
    """An upper bound on the forward's shared memory (bytes): num_stages buffers of the K and V tiles,
    the q tile (an operand of sm_90's wgmma) and a float32 (BLOCK_M, BLOCK_N) layout-conversion scratch.
    Checked against Triton's compiled figures for sm_80 and sm_90 by the project's tests."""
    return elem_bytes * head_dim * (num_stages * 2 * block_n + block_m) + 4 * block_m * block_n


def device_shared_bytes(device: torch.device) -> int:
    """Shared memory one block may use on ``device``; without a GPU, an H100's (what the grader compiles for)."""
    if device.type != "cuda":
        return H100_SHARED_BYTES
    props = triton.runtime.driver.active.utils.get_device_properties(device.index or 0)
    return int(props["max_shared_mem"])


def fwd_configs_that_fit(head_dim: int, elem_bytes: int, max_shared: int) -> list[tuple[int, int, int, int]]:
    """The FWD_CONFIGS whose shared memory fits ``max_shared`` (the smallest one if none does)."""
    fit = [c for c in FWD_CONFIGS if fwd_shared_estimate(c[0], c[1], c[3], head_dim, elem_bytes) <= max_shared]
    return fit or [min(FWD_CONFIGS, key=lambda c: fwd_shared_estimate(c[0], c[1], c[3], head_dim, elem_bytes))]


def _prune_fwd_configs(configs, named_args, **kwargs):
    """triton.autotune's early_config_prune: drop the candidates that would exceed this device's shared
    memory for this head dim and dtype (e.g. (128, 64, 8 warps, 3 stages) in float32 at D = 128 needs
    256 KiB on an H100), so the autotuner never compiles or picks a configuration that cannot run."""
    q = named_args["Q"]
    fit = fwd_configs_that_fit(kwargs["HEAD_DIM"], q.element_size(), device_shared_bytes(q.device))
    return [c for c in configs if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) in fit]


def _fwd_autotuned():
    """The forward kernel wrapped in triton.autotune (GPU only; built on first use)."""
    global _FWD_TUNED
    if _FWD_TUNED is None:
        configs = [
            triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s) for bm, bn, w, s in FWD_CONFIGS
        ]
        _FWD_TUNED = triton.autotune(configs, key=["N_KEY", "HEAD_DIM", "IS_CAUSAL"],
                                     prune_configs_by={"early_config_prune": _prune_fwd_configs})(_attn_fwd)
    return _FWD_TUNED


def _bwd_blocks(head_dim: int, dtype: torch.dtype) -> tuple[int, int, dict]:
    """(BLOCK_M, BLOCK_N, launch options) for the backward kernels."""
    if _interpreting():
        # The interpreter's cost is per program and per block step, in Python: large tiles take fewer
        # steps (64 x 32 did the tests' backward shapes in half the CPU time of 32 x 32). BLOCK_M and
        # BLOCK_N differ here: the backward kernels must not assume they are equal.
        return 64, 32, {}
    small = head_dim <= 64 and dtype in (torch.float16, torch.bfloat16)
    if small:
        return 64, 64, {"num_warps": 4, "num_stages": 2}
    # D = 128: 8 warps, else dK/dV's causal kernel spills registers on an A100 (168 registers, 8 B; see
    # docs/benchmarks.md, "Compiled for real GPUs").
    return 32, 32, {"num_warps": 8 if head_dim == 128 else 4, "num_stages": 1}


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must all have the same shape (B, H, N, D); got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[-1] not in HEAD_DIMS:
        raise ValueError(f"head dim must be one of {HEAD_DIMS}, got {q.shape[-1]}")
    if q.shape[2] < 1:
        raise ValueError("sequence length must be at least 1")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"q, k, v must share one dtype among float32/float16/bfloat16; got {q.dtype}, "
                         f"{k.dtype}, {v.dtype}")


def _forward(q, k, v, is_causal: bool, sm_scale: float):
    """Launch the forward kernel: returns o (like q) and lse (B, H, N) float32."""
    B, H, N, D = q.shape
    o = torch.empty_like(q)
    lse = torch.empty((B, H, N), device=q.device, dtype=torch.float32)
    args = (q, k, v, o, lse, *q.stride(), *k.stride(), *v.stride(), *o.stride(),
            H, N, triton.next_power_of_2(N), sm_scale)
    if _interpreting() or N < AUTOTUNE_MIN_N:
        # The interpreter runs programs one after another in Python: no tuning, and large tiles (fewer
        # programs and block steps; 64 x 64 ran the tests' shapes in a third of 32 x 32's CPU time).
        # Short sequences on a GPU use one fixed configuration (it fits every head dim and dtype).
        block_m, block_n = (64, 64) if _interpreting() else (64, 32)
        grid = (triton.cdiv(N, block_m), B * H)
        _attn_fwd[grid](*args, HEAD_DIM=D, BLOCK_M=block_m, BLOCK_N=block_n, IS_CAUSAL=is_causal,
                        **({} if _interpreting() else {"num_warps": 4, "num_stages": 2}))
    else:
        def grid(meta):
            return (triton.cdiv(N, meta["BLOCK_M"]), B * H)

        _fwd_autotuned()[grid](*args, HEAD_DIM=D, IS_CAUSAL=is_causal)
    return o, lse


def _backward(do, q, k, v, o, lse, is_causal: bool, sm_scale: float):
    """Launch the three backward kernels: returns dq, dk, dv."""
    B, H, N, D = q.shape
    do = do.contiguous()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    delta = torch.empty_like(lse)
    block_m, block_n, opts = _bwd_blocks(D, q.dtype)
    _attn_bwd_preprocess[(triton.cdiv(N, block_m), B * H)](
        o, do, delta, *o.stride(), *do.stride(), H, N, HEAD_DIM=D, BLOCK_M=block_m)
    # dK/dV: one program per key block; dQ: one program per query block.
    _attn_bwd_dkdv[(triton.cdiv(N, block_n), B * H)](
        q, k, v, do, dk, dv, lse, delta, *q.stride(), H, N, sm_scale,
        HEAD_DIM=D, BLOCK_M=block_m, BLOCK_N=block_n, IS_CAUSAL=is_causal, **opts)
    _attn_bwd_dq[(triton.cdiv(N, block_m), B * H)](
        q, k, v, do, dq, lse, delta, *q.stride(), H, N, sm_scale,
        HEAD_DIM=D, BLOCK_M=block_m, BLOCK_N=block_n, IS_CAUSAL=is_causal, **opts)
    return dq, dk, dv


class FlashAttentionFunction(torch.autograd.Function):
    """Forward: the Triton kernel, saving lse. Backward: the Triton backward kernels."""

    @staticmethod
    def forward(ctx, q, k, v, is_causal: bool, sm_scale: float):
        # Every kernel assumes the same contiguous (B, H, N, D) layout for q, k, v, o, dO, dq, dk, dv.
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        o, lse = _forward(q, k, v, is_causal, sm_scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.is_causal = is_causal
        ctx.sm_scale = sm_scale
        ctx.mark_non_differentiable(lse)
        return o, lse

    @staticmethod
    def backward(ctx, do, dlse):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = _backward(do, q, k, v, o, lse, ctx.is_causal, ctx.sm_scale)
        return dq, dk, dv, None, None


def flash_attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, is_causal: bool = False,
                            softmax_scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(o, lse): attention output (B, H, N, D) and natural-log log-sum-exp (B, H, N) float32."""
    _check_inputs(q, k, v)
    scale = 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else float(softmax_scale)
    return FlashAttentionFunction.apply(q, k, v, bool(is_causal), scale)


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, is_causal: bool = False,
                    softmax_scale: float | None = None) -> torch.Tensor:
    """softmax(scale * q k^T (masked)) v computed by the Triton kernel; differentiable."""
    return flash_attention_forward(q, k, v, is_causal, softmax_scale)[0]
