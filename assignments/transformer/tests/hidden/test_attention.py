"""Hidden tests: scaled dot-product attention (attention.py)."""
import pytest
import torch
from gradescope_utils.autograder_utils.decorators import weight

from attention_helpers import check_bottom_right_causal, check_float64_kept, check_gradients, check_mask_and_causal
from autograder.testing import assert_close, check_tensor
from suite_helpers import randn, random_mask

pytestmark = pytest.mark.part("attention")


@weight(0.5)
@pytest.mark.parametrize("seed", range(4))
def test_sdpa_random_shapes(student, reference, assignment, seed):
    """random shapes with 0-3 leading batch dims, d_v != d_k, random masks and causality"""
    g = torch.Generator().manual_seed(100 + seed)

    def pick(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (1,), generator=g))

    lead = tuple(pick(1, 3) for _ in range(seed % 4))
    lq, d_k, d_v = pick(1, 9), pick(1, 16), pick(1, 16)
    lk = lq + pick(0, 5)  # Lk >= Lq, so causal rows always see at least one key
    q, k, v = randn(*lead, lq, d_k, seed=seed), randn(*lead, lk, d_k, seed=seed + 50), randn(*lead, lk, d_v, seed=seed + 90)
    mask = random_mask(*lead, lq, lk, seed=seed) if seed % 2 else None
    causal = seed >= 2
    what = (f"scaled_dot_product_attention for q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, "
            f"mask={'yes' if mask is not None else 'no'}, is_causal={causal}")
    assert_close(student.attention.scaled_dot_product_attention(q, k, v, mask=mask, is_causal=causal),
                 reference.attention.scaled_dot_product_attention(q, k, v, mask=mask, is_causal=causal),
                 what, assignment.tolerance("float32"))


@weight(1)
@pytest.mark.parametrize("lq,lk", [(1, 7), (3, 8)], ids=["decode-1-query", "3-queries-8-keys"])
def test_sdpa_causal_bottom_right(student, reference, assignment, lq, lk):
    """is_causal with Lq != Lk is bottom-right aligned (query i sees keys j <= i + Lk - Lq)"""
    check_bottom_right_causal(student, reference, assignment, lq, lk, seed=23)


@weight(1)
def test_sdpa_mask_and_causal(student, reference, assignment):
    """a mask broadcast over heads combines with is_causal by AND"""
    check_mask_and_causal(student, reference, assignment, 2, 3, 5, 8, seed=26)


@weight(1)
def test_sdpa_large_logits(student, reference, assignment):
    """large scores (logits ~1e4) give no NaN or inf"""
    q, k, v = randn(2, 4, 8, seed=30, scale=300.0), randn(2, 6, 8, seed=31, scale=300.0), randn(2, 6, 8, seed=32)
    assert_close(student.attention.scaled_dot_product_attention(q.double(), k.double(), v.double()),
                 reference.attention.scaled_dot_product_attention(q.double(), k.double(), v.double()),
                 "scaled_dot_product_attention with very large scores", assignment.tolerance("float64"))
    out = student.attention.scaled_dot_product_attention(q, k, v, is_causal=True)
    check_tensor(out, "scaled_dot_product_attention with very large scores")
    if not torch.isfinite(out).all():
        raise AssertionError("scaled_dot_product_attention returned NaN or inf for large scores: "
                             "subtract the row maximum inside softmax.")


@weight(1)
def test_sdpa_gradients(student, reference, assignment):
    """gradients through your attention match the reference's for q, k and v"""
    check_gradients(student, reference, assignment, 5, 7, 8, 6, seed=33)


@weight(0.5)
def test_dtype_float64_kept(student, reference, assignment):
    """float64 inputs give a float64 output"""
    check_float64_kept(student, reference, assignment, 2, 4, 8, seed=38)


@weight(0.5)
@pytest.mark.gpu
def test_cuda_device_kept(student, reference, assignment, gpu_device):
    """CUDA inputs give a CUDA output with the same values"""
    q, k, v = (randn(2, 4, 8, seed=s).to(gpu_device) for s in (41, 42, 43))
    out = student.attention.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert_close(out, reference.attention.scaled_dot_product_attention(q, k, v, is_causal=True),
                 "scaled_dot_product_attention on CUDA", assignment.tolerance("float32"))
