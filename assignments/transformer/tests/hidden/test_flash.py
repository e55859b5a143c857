"""Hidden tests: FlashAttention in Triton (flash.py), forward (part flash) and backward (flash_backward).

CPU tests run the kernels under Triton's interpreter (float32/float16, small shapes); on a GPU the
same tests run the compiled kernels. Tests marked gpu (compiled bf16, speed against the reference
and naive attention, peak memory, TFLOP/s leaderboard) only run on a GPU.
"""
import math

import pytest
import torch
from gradescope_utils.autograder_utils.decorators import leaderboard, partial_credit, weight

from autograder.testing import fetch, routine, store
from autograder.testing import best_measurement
from flash_helpers import (
    HEAD_DIMS, aot_check, attention_flops, audited, check_forward, check_no_nxn, compare, compare_cuda_times, describe,
    device, forward_output, on_gpu, qkv, require_clean_source, run_attention, run_backward,
    run_forward, tolerance,
)
from suite_helpers import randn

pytestmark = pytest.mark.part("flash")


@pytest.fixture(autouse=True)
def _clean_source(submission_dir):
    """Every flash test first checks the submitted flash.py (static integrity check)."""
    require_clean_source(submission_dir)


def _fwd(student, student_client, q, k, v, causal, extra="", **kwargs):
    # The verdict comes from naive float64 attention (flash_helpers.check_forward), the exact answer; the
    # reference kernel would only be a second, less exact oracle, and under Triton's interpreter it costs
    # as much as the student's kernel, so it is not run here.
    what = f"flash_attention_forward on {describe(*q.shape, q.dtype, causal, extra)}"
    return run_forward(student, student_client, q, k, v, is_causal=causal, what=what, **kwargs)


# --------------------------------------------------------------------------- forward, CPU or GPU


@weight(0.25)
@pytest.mark.parametrize("d", HEAD_DIMS, ids=[f"D{d}" for d in HEAD_DIMS])
def test_forward_float16_every_head_dim(student, student_client, d):
    """float16 forward for this head dim, N in {1, 37, 64}, causal or not"""
    # One head (two heads per head dim: the public float32 tests; several: test_forward_batch_and_heads).
    for n in (1, 37, 64):
        for causal in (False, True):
            q, k, v = qkv(1, 1, n, d, seed=3 * d + n + causal, dtype=torch.float16)
            _fwd(student, student_client, q, k, v, causal)


@weight(1)
def test_forward_many_key_blocks(student, student_client):
    """N = 300 spans several key blocks for any block size; the maximum grows in later blocks (rescaling)"""
    n, d = 300, 16  # one head: the interpreter's cost grows with B * H * N^2; heads are tested elsewhere
    for causal in (False, True):
        q, k, v = qkv(1, 1, n, d, seed=50 + causal)
        # Later keys get larger norms, so the running maximum keeps rising from block to block: a kernel
        # that does not rescale its running sum and accumulator by exp(m_old - m_new) is far off.
        k = k * torch.linspace(0.2, 3.0, n, dtype=k.dtype, device=k.device)[:, None]
        _fwd(student, student_client, q, k, v, causal, ", later keys scaled up")


@weight(1)
def test_forward_sequence_lengths(student, student_client):
    """N around block boundaries (2, 15, 16, 17, 31, 33, 63, 65, 127, 129): rows and keys past N are masked"""
    d = 16
    for n in (2, 15, 16, 17, 31, 33, 63, 65, 127, 129):
        for causal in (False, True):
            q, k, v = qkv(1, 1, n, d, seed=60 + n + causal)
            run_forward(student, student_client, q, k, v, is_causal=causal,
                        what=f"flash_attention_forward on {describe(1, 1, n, d, q.dtype, causal)}")


@weight(0.5)
def test_forward_batch_and_heads(student, student_client):
    """B=2, H=3 with different data per (batch, head): each program reads its own slice; flash_attention too"""
    for causal in (False, True):
        q, k, v = qkv(2, 3, 33, 32, seed=70 + causal)
        _fwd(student, student_client, q, k, v, causal)
        run_attention(student, student_client, q, k, v, is_causal=causal,
                      what=f"flash_attention on {describe(2, 3, 33, 32, q.dtype, causal)}")


@weight(0.5)
def test_forward_noncontiguous(student, student_client):
    """q, k, v that are transposed views of (B, N, H, D) tensors give the same results"""
    b, h, n, d = 2, 2, 29, 64
    for causal in (False, True):
        base = [randn(b, n, h, d, seed=80 + i + 3 * causal).to(device()) for i in range(3)]
        q, k, v = (t.transpose(1, 2) for t in base)
        assert not q.is_contiguous()
        _fwd(student, student_client, q, k, v, causal, ", non-contiguous")


@weight(0.5)
def test_forward_softmax_scale(student, student_client):
    """softmax_scale replaces 1/sqrt(D) in o and in lse"""
    for scale, causal in ((0.05, False), (1.0, True), (0.3, False)):
        q, k, v = qkv(1, 2, 40, 32, seed=90 + int(scale * 10))
        _fwd(student, student_client, q, k, v, causal, f", softmax_scale={scale}", softmax_scale=scale)


@weight(0.5)
def test_forward_large_logits(student, student_client):
    """large scores (|s| ~ 100s) give finite outputs that match naive attention (stable online softmax)"""
    # (not float32 on a GPU: TF32 products move near-tied large scores enough to flip the softmax)
    cases = ((torch.float16, 6.0),) if on_gpu() else ((torch.float32, 12.0), (torch.float16, 6.0))
    for dtype, scale in cases:
        for causal in (False, True):
            q, k, v = qkv(1, 2, 50, 64, seed=95 + causal, dtype=dtype, scale=scale)
            v = v / scale
            run_forward(student, student_client, q, k, v, is_causal=causal,
                        what=f"flash_attention_forward on {describe(1, 2, 50, 64, dtype, causal)} with large logits")


@weight(2)
def test_forward_compiles_for_gpu(student, student_client):
    """the forward kernel compiles for an H100 (sm_90; on a GPU machine, its card) in bfloat16 at the configurations your launch code picks, within its shared memory"""
    # Shapes: N = 200 and 4096, every head dim, causal or not; the largest and the smallest tiles are compiled.
    print(aot_check(student, student_client, backward=False))


# --------------------------------------------------------------------------- forward, GPU only


def _gpu_inputs(b, h, n, d, dtype, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=g, device="cuda", dtype=torch.float32).to(dtype) for _ in range(3)]


@pytest.mark.gpu
@weight(0.25)
@pytest.mark.parametrize("d", HEAD_DIMS, ids=[f"D{d}" for d in HEAD_DIMS])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_gpu_compiled(student, student_client, dtype, d):
    """compiled kernels on the GPU (float16, bfloat16), N in {1, 333, 2048}, causal or not"""
    for n in (1, 333, 2048):
        for causal in (False, True):
            q, k, v = _gpu_inputs(2, 3, n, d, dtype, seed=d + n + causal)
            what = f"flash_attention_forward on {describe(2, 3, n, d, dtype, causal)} (GPU)"
            report = audited(student, student_client, "flash_attention_forward", q, k, v, is_causal=causal,
                             what=what)
            o, lse = forward_output(report, what, tuple(q.shape), dtype)
            check_forward(o, lse, q, k, v, is_causal=causal, what=what)


PERF_SHAPE = (4, 16, 4096, 64)  # B, H, N, D (float16)


@pytest.mark.gpu
@partial_credit(1.5)
@leaderboard("TFLOP/s")
def test_gpu_speed_vs_reference(student, student_client, reference_client, assignment, gpu_device,
                                set_score=None, set_leaderboard_value=None):
    """forward time vs the reference kernel (CUDA events, L2 flushed, interleaved): partial credit by ratio"""
    perf = assignment.performance["flash_forward"]
    b, h, n, d = PERF_SHAPE
    mine = fetch(student.flash.flash_attention)
    ref = fetch(reference_client.root_ref().flash.flash_attention)
    inputs = []
    for causal in (False, True):
        q, k, v = _gpu_inputs(b, h, n, d, torch.float16, seed=7 + causal)
        what = f"flash_attention on {describe(b, h, n, d, torch.float16, causal)}"
        # speed only counts for a correct, clean kernel (checked on a slice of the rows)
        run_attention(student, student_client, q[:1, :2], k[:1, :2], v[:1, :2], is_causal=causal, what=what)
        inputs.append((causal, (q, k, v), what))

    def measure() -> tuple[float, list[str], float, float]:
        ratios, lines, flops, graded_ms = [], [], 0.0, 0.0
        for causal, tensors, what in inputs:
            res = compare_cuda_times((student_client, mine, tensors), (reference_client, ref, tensors),
                                     {"is_causal": causal}, rounds=perf.repeats, what=what)
            ratios.append(res["ratio"])
            flops += attention_flops(b, h, n, d, causal)
            graded_ms += res["b_ms"] * res["ratio"]  # your time as graded: reference time x ratio
            lines.append(f"causal={causal}: your kernel {res['a_ms']:.3f} ms, reference {res['b_ms']:.3f} ms, "
                         f"ratio {res['ratio']:.2f} (reported {res['reported_ratio']:.2f}, "
                         f"grader wall clock {res['wall_ratio']:.2f})")
        return math.exp(sum(math.log(r) for r in ratios) / len(ratios)), lines, flops, graded_ms

    (ratio, lines, flops, graded_ms), taken = best_measurement(measure, lambda m: perf.credit(m[0]), perf.attempts)
    credit = perf.credit(ratio)
    set_score(1.5 * credit)
    set_leaderboard_value(round(flops / (graded_ms * 1e-3) / 1e12, 2))
    print("\n".join(lines) + f"\ngeometric-mean ratio {ratio:.2f}: {credit:.0%} of the points "
          f"(full at <= {perf.full_ratio:g}, none at >= {perf.zero_ratio:g}; the best of {taken} measurements)")


@pytest.mark.gpu
@weight(0.5)
def test_gpu_faster_than_naive(student, student_client, reference_client, gpu_device):
    """at N >= 2048 the kernel is faster than naive PyTorch attention (matmul, softmax, matmul)"""
    mine = fetch(student.flash.flash_attention)
    for n in (2048, 4096):
        b, h, d = 2, 16, 64
        q, k, v = _gpu_inputs(b, h, n, d, torch.float16, seed=n)
        what = f"flash_attention on {describe(b, h, n, d, torch.float16, False)}"
        res = compare_cuda_times((student_client, mine, (q, k, v)), (reference_client, "naive_attention", (q, k, v)),
                                 {"is_causal": False}, rounds=5, what=what)
        if res["ratio"] >= 1.0:
            raise AssertionError(
                f"{what} is not faster than naive PyTorch attention: your kernel {res['a_ms']:.3f} ms, naive "
                f"{res['b_ms']:.3f} ms (ratio {res['ratio']:.2f}). Use large tiles with tl.dot and keep the "
                "tiles of q and the accumulator in registers.")


@pytest.mark.gpu
@weight(1)
def test_gpu_peak_memory(student, student_client, gpu_device):
    """at N = 16384 the call allocates far less than one N x N matrix (no score matrix in memory)"""
    b, h, n, d = 1, 8, 16384, 64
    q, k, v = _gpu_inputs(b, h, n, d, torch.float16, seed=5)
    mine = fetch(student.flash.flash_attention)
    stored = store(student_client, [q, k, v])
    res = routine(student_client, "cuda_peak_memory", mine, stored, {"is_causal": False}, sample_rows=32,
                  timeout=90)
    if not isinstance(res, dict) or type(res.get("peak_bytes")) is not int:
        raise AssertionError("the peak-memory routine returned a malformed report.")
    limit = n * n * 2 // 4  # a quarter of one head's N x N float16 matrix (128 MiB)
    legit = b * h * n * d * 2 + b * h * n * 4
    if res["peak_bytes"] > limit:
        raise AssertionError(
            f"flash_attention on {describe(b, h, n, d, torch.float16, False)} allocated "
            f"{res['peak_bytes'] / 2**20:.1f} MiB beyond its inputs, more than {limit / 2**20:.0f} MiB (a quarter "
            f"of one {n}x{n} float16 matrix; the output and lse need {legit / 2**20:.1f} MiB). "
            "Do not materialise the score matrix.")
    rows = list(range(32)) + list(range(n - 32, n))
    want = _naive_rows(q, k, v, rows)
    sample = res.get("sample")
    compare(sample if isinstance(sample, torch.Tensor) else torch.empty(0), want,
            "output rows of the N = 16384 call", tolerance(torch.float16, "out"))


def _naive_rows(q, k, v, rows):
    """Naive float64 attention for a few query rows against all keys (GPU, no N x N matrix)."""
    qr = q[..., rows, :].double()
    s = qr @ k.double().transpose(-2, -1) / math.sqrt(q.shape[-1])
    return (torch.softmax(s, dim=-1) @ v.double()).cpu()


# --------------------------------------------------------------------------- backward (bonus part)


@pytest.mark.part("flash_backward")
@weight(0.5)
@pytest.mark.parametrize("d", HEAD_DIMS, ids=[f"D{d}" for d in HEAD_DIMS])
def test_backward_every_head_dim(student, student_client, d):
    """float32 gradients for this head dim, N = 37, causal or not, vs naive float64 autograd"""
    n = 37  # one head (several: test_backward_noncontiguous_scale_heads and the public backward tests)
    for causal in (False, True):
        q, k, v = qkv(1, 1, n, d, seed=200 + d + causal)
        g = randn(1, 1, n, d, seed=300 + d + causal).to(q.device)
        run_backward(student, student_client, q, k, v, g, is_causal=causal,
                     what=f"flash_attention backward on {describe(1, 1, n, d, q.dtype, causal)}")


@pytest.mark.part("flash_backward")
@weight(1)
def test_backward_sequence_lengths(student, student_client):
    """gradients for N in {1, 64, 100} (one row, block multiples, ragged last block) and several key blocks"""
    d = 16  # one head (several heads: test_backward_noncontiguous_scale_heads)
    for n in (1, 64, 100):
        for causal in (False, True):
            q, k, v = qkv(1, 1, n, d, seed=400 + n + causal)
            g = randn(1, 1, n, d, seed=500 + n + causal).to(q.device)
            run_backward(student, student_client, q, k, v, g, is_causal=causal,
                         what=f"flash_attention backward on {describe(1, 1, n, d, q.dtype, causal)}")


@pytest.mark.part("flash_backward")
@weight(0.5)
def test_backward_float16(student, student_client):
    """float16 gradients keep the dtype and match naive float64 autograd"""
    n, d = 37, 64
    for causal in (False, True):
        q, k, v = qkv(1, 2, n, d, seed=600 + causal, dtype=torch.float16)
        g = randn(1, 2, n, d, seed=610 + causal, dtype=torch.float16).to(q.device)
        run_backward(student, student_client, q, k, v, g, is_causal=causal,
                     what=f"flash_attention backward on {describe(1, 2, n, d, q.dtype, causal)}")


@pytest.mark.part("flash_backward")
@weight(0.5)
def test_backward_noncontiguous_scale_heads(student, student_client):
    """gradients with B=2, H=3, non-contiguous inputs and a custom softmax_scale"""
    b, h, n, d = 2, 3, 21, 32
    for causal in (False, True):
        q, k, v = (randn(b, n, h, d, seed=700 + i + 3 * causal).to(device()).transpose(1, 2) for i in range(3))
        g = randn(b, h, n, d, seed=710 + causal).to(device())
        run_backward(student, student_client, q, k, v, g, is_causal=causal, softmax_scale=0.4,
                     what=f"flash_attention backward on {describe(b, h, n, d, q.dtype, causal)}, "
                          "non-contiguous, softmax_scale=0.4")


@pytest.mark.part("flash_backward")
@weight(1)
def test_backward_audit_no_score_matrix(student, student_client):
    """forward + backward launch Triton kernels, run no torch matmul/softmax and allocate no N x N matrix"""
    # One N x N matrix (16384 elements) is 8x any legitimate tensor (q, k, v, o, dq, dk, dv: 2048 each),
    # the same margin as N = 256 with two heads at an eighth of the interpreter's cost.
    n, d = 128, 16
    for causal in (False, True):
        q, k, v = qkv(1, 1, n, d, seed=800 + causal)
        g = randn(1, 1, n, d, seed=810 + causal).to(q.device)
        what = f"flash_attention backward on {describe(1, 1, n, d, q.dtype, causal)}"
        report = run_backward(student, student_client, q, k, v, g, is_causal=causal, what=what)
        check_no_nxn(report, n, what)


@pytest.mark.part("flash_backward")
@weight(1)
def test_backward_compiles_for_gpu(student, student_client):
    """the backward kernels compile for an H100 (sm_90; on a GPU machine, its card) in bfloat16 at the configurations your launch code picks, within its shared memory"""
    print(aot_check(student, student_client, backward=True))


@pytest.mark.gpu
@pytest.mark.part("flash_backward")
@weight(1)
def test_gpu_backward_compiled(student, student_client):
    """compiled backward on the GPU in float16 and bfloat16 (D in {64, 128}, N = 500, causal or not)"""
    n = 500
    for dtype in (torch.float16, torch.bfloat16):
        for d in (64, 128):
            for causal in (False, True):
                q, k, v = _gpu_inputs(1, 2, n, d, dtype, seed=900 + d + causal)
                g = _gpu_inputs(1, 2, n, d, dtype, seed=950 + d + causal)[0]
                run_backward(student, student_client, q, k, v, g, is_causal=causal,
                             what=f"flash_attention backward on {describe(1, 2, n, d, dtype, causal)} (GPU)")
