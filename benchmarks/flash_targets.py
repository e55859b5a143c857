"""The flash issue's speed targets for the reference kernel, measured in one run (GPU).

Prints, and saves as JSON:
  1. forward, bfloat16, D in {64, 128}, N in {4096, 8192, 16384}, causal or not: the reference
     kernel against ``scaled_dot_product_attention`` restricted to its flash backend (16k tokens,
     hidden size 2048 per shape, as in the FlashAttention-2 paper); target: ratio <= 1;
  2. forward+backward at B=16, N=16384, D=64, causal, bfloat16 (one head per batch entry: 16
     (batch, head) slices); target: under 6 ms;
  3. a sweep of block sizes, warps and stages for the forward kernel (causal, D 64 and 128) and
     for each backward kernel (dK/dV and dQ) at the target shape, each configuration checked
     against the chosen one's output: the data to tune the autotuner's list and ``_bwd_blocks``.

Times are medians of ``triton.testing.do_bench`` (which clears L2 before each call). The
reference is trusted code, so it runs in this process. ``--smoke`` runs every step at tiny sizes
under Triton's interpreter on a CPU (timed with the wall clock): a check that the script works,
not a measurement.

    python benchmarks/flash_targets.py --json out.json          # on a GPU
    python benchmarks/flash_targets.py --smoke                  # anywhere
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
FWD_SIZES = [4096, 8192, 16384]
FWD_HEAD_DIMS = [64, 128]
TARGET_SHAPE = (16, 1, 16384, 64)  # B, H, N, D
TARGET_MS = 6.0
SWEEP_BLOCKS = [(32, 64), (64, 64), (64, 128), (128, 64), (128, 128)]  # (BLOCK_M, BLOCK_N)
SWEEP_LAUNCH = [(4, 2), (8, 2), (8, 3)]  # (num_warps, num_stages)
FWD_SWEEP_SHAPES = [(2, 32, 8192, 64), (2, 16, 8192, 128)]  # causal, 16k tokens, hidden 2048


def attention_flops(b: int, h: int, n: int, d: int, causal: bool) -> float:
    """Matmul FLOPs of one forward (QK^T and PV; half when causal). A backward is 2.5x that."""
    return 4.0 * b * h * n * n * d / (2 if causal else 1)


def timer(smoke: bool) -> Callable[[Callable[[], object]], float]:
    """Milliseconds per call: do_bench's median on a GPU, the wall clock's under the interpreter."""
    if not smoke:
        import triton.testing

        return lambda fn: float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))

    def wall(fn: Callable[[], object]) -> float:
        fn()
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e3

    return wall


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="also save the figures here")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes under the interpreter (CPU)")
    ap.add_argument("--no-sweep", action="store_true", help="skip the backward block-size sweep")
    args = ap.parse_args(argv)
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
    import torch
    import triton

    sys.path.insert(0, str(ROOT / "reference"))
    from transformer_lab import flash

    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run with --smoke for a check of the script")
    device = "cpu" if args.smoke else "cuda"
    dtype = torch.float16 if args.smoke else torch.bfloat16  # the interpreter has no bf16 tl.dot
    sizes, dims = ([32, 64], [16]) if args.smoke else (FWD_SIZES, FWD_HEAD_DIMS)
    target = (2, 1, 64, 16) if args.smoke else TARGET_SHAPE
    ms_of = timer(args.smoke)
    report: dict = {"device": "CPU (Triton interpreter, smoke run)" if args.smoke else torch.cuda.get_device_name(),
                    "torch": torch.__version__, "triton": triton.__version__, "dtype": str(dtype),
                    "date": time.strftime("%Y-%m-%d"), "forward": [], "sweep": {}}
    print(f"{report['device']}, torch {report['torch']}, triton {report['triton']}, {dtype}")

    def sdpa(q, k, v, causal):
        if args.smoke:
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)

    def inputs(b, h, n, d, grad=False):
        g = torch.Generator(device=device).manual_seed(b * 7 + n + d)
        return [torch.randn(b, h, n, d, generator=g, device=device, dtype=torch.float32).to(dtype)
                .requires_grad_(grad) for _ in range(3)]

    # 1. forward against SDPA's flash backend
    print("\nforward: reference kernel vs SDPA (flash backend); target ratio <= 1")
    print(f"{'D':>4} {'N':>6} {'B':>3} {'H':>3} {'causal':>6} {'ref ms':>8} {'sdpa ms':>8} {'ref TF/s':>9} "
          f"{'sdpa TF/s':>9} {'ratio':>6}")
    for d in dims:
        for n in sizes:
            b, h = max(1, 16384 // n), 2048 // d
            if args.smoke:
                b, h = 1, 2
            q, k, v = inputs(b, h, n, d)
            for causal in (False, True):
                with torch.no_grad():
                    ref = ms_of(lambda: flash.flash_attention(q, k, v, is_causal=causal))
                    base = ms_of(lambda: sdpa(q, k, v, causal))
                flops = attention_flops(b, h, n, d, causal)
                row = {"d": d, "n": n, "b": b, "h": h, "causal": causal, "ref_ms": ref, "sdpa_ms": base,
                       "ref_tflops": flops / ref / 1e9, "sdpa_tflops": flops / base / 1e9, "ratio": ref / base}
                report["forward"].append(row)
                print(f"{d:>4} {n:>6} {b:>3} {h:>3} {causal!s:>6} {ref:>8.3f} {base:>8.3f} "
                      f"{row['ref_tflops']:>9.1f} {row['sdpa_tflops']:>9.1f} {row['ratio']:>6.2f}")
    tuned = flash._FWD_TUNED
    if tuned is not None and getattr(tuned, "cache", None):
        report["forward_configs"] = {str(key): str(cfg) for key, cfg in tuned.cache.items()}
        print("autotuned forward configs:", report["forward_configs"])

    # 2. forward+backward at the target shape
    b, h, n, d = target
    q, k, v = inputs(b, h, n, d, grad=True)
    do = torch.randn_like(q)

    def fwd_bwd(fn):
        def step():
            for t in (q, k, v):
                t.grad = None
            fn(q, k, v).backward(do)
        return step

    ref = ms_of(fwd_bwd(lambda q, k, v: flash.flash_attention(q, k, v, is_causal=True)))
    base = ms_of(fwd_bwd(lambda q, k, v: sdpa(q, k, v, True)))
    flops = 3.5 * attention_flops(b, h, n, d, True)
    report["fwd_bwd"] = {"shape": list(target), "causal": True, "ref_ms": ref, "sdpa_ms": base,
                         "ref_tflops": flops / ref / 1e9, "sdpa_tflops": flops / base / 1e9,
                         "target_ms": TARGET_MS, "meets_target": ref < TARGET_MS}
    print(f"\nforward+backward, (B, H, N, D) = {target}, causal: reference {ref:.3f} ms "
          f"({flops / ref / 1e9:.1f} TFLOP/s), SDPA flash {base:.3f} ms; target < {TARGET_MS} ms: "
          f"{'met' if ref < TARGET_MS else 'NOT met'}")

    # 3. the kernels, one configuration at a time
    if not args.no_sweep:
        for shape in [(1, 2, 64, 16)] if args.smoke else FWD_SWEEP_SHAPES:
            fq, fk, fv = inputs(*shape)
            report["sweep"][f"forward D={shape[-1]}"] = sweep_forward(flash, torch, triton, fq, fk, fv, ms_of,
                                                                      args.smoke)
        report["sweep"] |= sweep(flash, torch, triton, q.detach(), k.detach(), v.detach(), do, ms_of, args.smoke)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return report


def _configs(smoke: bool) -> list[tuple[int, int, int, int]]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) to try."""
    if smoke:
        return [(16, 32, 4, 1), (32, 32, 4, 1)]
    return [(bm, bn, w, st) for bm, bn in SWEEP_BLOCKS for w, st in SWEEP_LAUNCH]


def _try_all(name: str, make, current: tuple, ms_of, smoke: bool) -> list[dict]:
    """Run ``make(bm, bn, opts)`` -> (call, outputs) for each configuration against ``current``'s outputs."""
    call, want = make(*current)
    call()
    rows = []
    for bm, bn, warps, stages in _configs(smoke):
        opts = {} if smoke else {"num_warps": warps, "num_stages": stages}
        row = {"block_m": bm, "block_n": bn, "num_warps": warps, "num_stages": stages}
        try:
            call, got = make(bm, bn, opts)
            call()
            err = max(float((g.float() - w.float()).abs().max()) for g, w in zip(got, want))
            row["max_abs_diff"] = err
            row["ms"] = ms_of(call) if err < 5e-2 else None
        except Exception as e:  # noqa: BLE001 - a configuration that does not fit is a result
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
        rows.append(row)
    ok = sorted((r for r in rows if r.get("ms")), key=lambda r: r["ms"])
    print(f"\n{name}: {len(ok)} of {len(rows)} configurations ran and matched; fastest first "
          f"(current: BLOCK_M={current[0]}, BLOCK_N={current[1]}, {current[2] or 'defaults'})")
    for r in ok[:6]:
        print(f"  BLOCK_M={r['block_m']:>3} BLOCK_N={r['block_n']:>3} warps={r['num_warps']} "
              f"stages={r['num_stages']}: {r['ms']:.3f} ms")
    for r in rows:
        if "error" in r or r.get("ms") is None:
            print(f"  skipped BLOCK_M={r['block_m']} BLOCK_N={r['block_n']} warps={r['num_warps']} "
                  f"stages={r['num_stages']}: {r.get('error') or 'max abs diff %.3g' % r['max_abs_diff']}")
    return rows


def _chosen_forward(flash, q, k, v) -> tuple:
    """(BLOCK_M, BLOCK_N, launch options) that the reference's autotuner picks for this shape; its first
    candidate when it cannot say (a Triton without ``best_config``)."""
    bm, bn, warps, stages = flash.FWD_CONFIGS[0]
    try:
        flash.flash_attention_forward(q, k, v, is_causal=True)  # tunes for this shape
        best = flash._fwd_autotuned().best_config
        return best.kwargs["BLOCK_M"], best.kwargs["BLOCK_N"], {"num_warps": best.num_warps,
                                                                "num_stages": best.num_stages}
    except Exception as e:  # noqa: BLE001 - the sweep still runs, against the first candidate
        print(f"  (autotuner's choice unknown: {e}; comparing against the first candidate)")
        return bm, bn, {"num_warps": warps, "num_stages": stages}


def sweep_forward(flash, torch, triton, q, k, v, ms_of, smoke: bool) -> list[dict]:
    """Time _attn_fwd (causal) over block sizes and launch options at one shape."""
    b, h, n, d = q.shape
    scale = 1.0 / math.sqrt(d)

    def make(bm, bn, opts):
        o = torch.empty_like(q)
        lse = torch.empty((b, h, n), device=q.device, dtype=torch.float32)

        def call():
            flash._attn_fwd[(triton.cdiv(n, bm), b * h)](
                q, k, v, o, lse, *q.stride(), *k.stride(), *v.stride(), *o.stride(),
                h, n, triton.next_power_of_2(n), scale,
                HEAD_DIM=d, BLOCK_M=bm, BLOCK_N=bn, IS_CAUSAL=True, **opts)
        return call, (o, lse)

    current = (32, 32, {}) if smoke else _chosen_forward(flash, q, k, v)
    return _try_all(f"forward, (B, H, N, D) = {(b, h, n, d)}, causal", make, current, ms_of, smoke)


def sweep(flash, torch, triton, q, k, v, do, ms_of, smoke: bool) -> dict:
    """Time _attn_bwd_dkdv and _attn_bwd_dq over block sizes and launch options at one shape."""
    b, h, n, d = q.shape
    scale = 1.0 / math.sqrt(d)
    o, lse = flash._forward(q, k, v, True, scale)
    delta = torch.empty_like(lse)
    bm0, bn0, opts0 = flash._bwd_blocks(d, q.dtype)
    flash._attn_bwd_preprocess[(triton.cdiv(n, bm0), b * h)](
        o, do, delta, *o.stride(), *do.stride(), h, n, HEAD_DIM=d, BLOCK_M=bm0)

    def dkdv(bm, bn, opts):
        dk, dv = torch.empty_like(k), torch.empty_like(v)

        def call():
            flash._attn_bwd_dkdv[(triton.cdiv(n, bn), b * h)](
                q, k, v, do, dk, dv, lse, delta, *q.stride(), h, n, scale,
                HEAD_DIM=d, BLOCK_M=bm, BLOCK_N=bn, IS_CAUSAL=True, **opts)
        return call, (dk, dv)

    def dq(bm, bn, opts):
        out = torch.empty_like(q)

        def call():
            flash._attn_bwd_dq[(triton.cdiv(n, bm), b * h)](
                q, k, v, do, out, lse, delta, *q.stride(), h, n, scale,
                HEAD_DIM=d, BLOCK_M=bm, BLOCK_N=bn, IS_CAUSAL=True, **opts)
        return call, (out,)

    results: dict = {"backward shape": [b, h, n, d], "backward current": [bm0, bn0, opts0]}
    for name, make in (("dkdv", dkdv), ("dq", dq)):
        results[name] = _try_all(f"{name}, (B, H, N, D) = {(b, h, n, d)}, causal", make, (bm0, bn0, opts0),
                                 ms_of, smoke)
    return results


if __name__ == "__main__":
    main()
