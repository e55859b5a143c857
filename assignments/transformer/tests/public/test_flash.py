"""Public tests: FlashAttention in Triton (flash.py).

Without a GPU the kernels run under Triton's interpreter (TRITON_INTERPRET=1), in float32 and
float16, on small shapes. Every flash test also checks integrity: the source of flash.py (read,
never imported), and an audit of the call in the worker (no torch matmul/softmax/SDPA, at least
one Triton launch). A submission that fails them earns no flash points.
"""
import pytest
import torch
from gradescope_utils.autograder_utils.decorators import weight

from flash_helpers import (
    HEAD_DIMS, audited, check_no_nxn, describe, forward_output, naive_attention, qkv, require_clean_source,
    run_backward, run_forward, source_problems, static_problems,
)
from suite_helpers import randn

pytestmark = pytest.mark.part("flash")


@pytest.fixture(autouse=True)
def _clean_source(submission_dir):
    """Every flash test first checks the submitted flash.py (static integrity check)."""
    require_clean_source(submission_dir)


# The forward tests check (o, lse) against naive attention computed in float64 (flash_helpers.check_forward),
# the exact answer, not against the reference kernel: under Triton's interpreter that would cost as much
# as running your kernel again and could only be less exact.


@weight(1)
@pytest.mark.parametrize("d", HEAD_DIMS, ids=[f"D{d}" for d in HEAD_DIMS])
def test_forward_float32(student, student_client, d):
    """forward (o, lse) in float32 matches naive float64 attention, N in {1, 37, 64}, causal or not"""
    for n in (1, 37, 64):
        for causal in (False, True):
            q, k, v = qkv(1, 2, n, d, seed=100 * d + n + causal)
            run_forward(student, student_client, q, k, v, is_causal=causal,
                        what=f"flash_attention_forward on {describe(1, 2, n, d, q.dtype, causal)}")


@weight(1)
def test_forward_float16(student, student_client):
    """forward in float16 keeps the dtype and matches naive attention (fp32 accumulation)"""
    for d, n in ((16, 37), (64, 64)):
        for causal in (False, True):
            q, k, v = qkv(1, 2, n, d, seed=7 * d + n + causal, dtype=torch.float16)
            run_forward(student, student_client, q, k, v, is_causal=causal,
                        what=f"flash_attention_forward on {describe(1, 2, n, d, q.dtype, causal)}")


@weight(1)
def test_lse_natural_log(student, student_client):
    """lse is the natural-log logsumexp of the scaled (and causally masked) scores, (B, H, N) float32"""
    for causal in (False, True):
        q, k, v = qkv(2, 1, 45, 32, seed=11 + causal, scale=2.0)
        run_forward(student, student_client, q, k, v, is_causal=causal,
                    what=f"flash_attention_forward on {describe(2, 1, 45, 32, q.dtype, causal)}")


@weight(1)
def test_source_integrity(student, student_client, submission_dir):
    """flash.py calls no SDPA or attention library, has no torch matmul/softmax outside Triton kernels, and runs"""
    problems = static_problems(submission_dir)
    assert not problems, "Integrity check of flash.py failed:\n" + "\n".join(problems)
    # The check itself must flag the shortcuts it is meant to catch (guards against a silent checker).
    assert source_problems("import torch.nn.functional as F\nF.scaled_dot_product_attention")
    # A clean file earns the point only with a working kernel behind it.
    q, k, v = qkv(1, 1, 16, 16, seed=1)
    run_forward(student, student_client, q, k, v, is_causal=True,
                what=f"flash_attention_forward on {describe(1, 1, 16, 16, q.dtype, True)}")


@weight(1)
def test_audit_no_score_matrix(student, student_client):
    """the call launches Triton kernels, runs no torch matmul/softmax/SDPA and allocates no N x N matrix"""
    n, d = 128, 16  # one N x N matrix (16384 elements) dwarfs q, k, v, o (2048 each) and lse
    for causal in (False, True):
        q, k, v = qkv(1, 1, n, d, seed=21 + causal)
        what = f"flash_attention_forward on {describe(1, 1, n, d, q.dtype, causal)}"
        report = audited(student, student_client, "flash_attention_forward", q, k, v, is_causal=causal, what=what)
        o, _ = forward_output(report, what, tuple(q.shape), q.dtype)
        check_no_nxn(report, n, what)
        want_o, _ = naive_attention(q, k, v, causal)
        assert torch.allclose(o.cpu().double(), want_o, atol=1e-2, rtol=1e-2), \
            f"{what}: the output does not match naive attention."


@pytest.mark.part("flash_backward")
@weight(1.5)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_backward_float32(student, student_client, causal):
    """gradients of flash_attention (Triton backward) match autograd through naive float64 attention"""
    n, d = 37, 32
    q, k, v = qkv(1, 2, n, d, seed=31 + causal)
    grad_out = randn(1, 2, n, d, seed=41 + causal).to(q.device)
    run_backward(student, student_client, q, k, v, grad_out, is_causal=causal,
                 what=f"flash_attention backward on {describe(1, 2, n, d, q.dtype, causal)}")
