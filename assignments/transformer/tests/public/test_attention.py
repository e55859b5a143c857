"""Public tests: scaled dot-product attention (attention.py)."""
import pytest
import torch
from gradescope_utils.autograder_utils.decorators import weight

from attention_helpers import check_bottom_right_causal, check_float64_kept, check_gradients, check_mask_and_causal
from autograder.testing import assert_close
from suite_helpers import randn, random_mask

pytestmark = pytest.mark.part("attention")


@weight(1.5)
def test_softmax_matches_reference(student, reference, assignment):
    """softmax matches torch's along the requested dim"""
    tol = assignment.tolerance("float32")
    x = randn(3, 5, 7, seed=1, scale=3.0)
    for dim in (-1, 0, 1):
        assert_close(student.attention.softmax(x, dim=dim), torch.softmax(x, dim=dim),
                     f"softmax(x, dim={dim}) for x of shape {tuple(x.shape)}", tol)


@weight(1.5)
def test_softmax_stable(student, assignment):
    """softmax is numerically stable: logits of 1e4 give no NaN, -inf gets exactly 0"""
    x = torch.tensor([[1e4, 1e4 - 1.0, -1e4], [0.0, float("-inf"), 2.0]])
    out = student.attention.softmax(x, dim=-1)
    # float32 spacing at 1e4 is ~1e-3, so a stable softmax computed as exp(x - logsumexp(x)) is
    # off by ~2e-4 here: the tolerance admits every stable formulation, and no NaN gets through.
    assert_close(out, torch.softmax(x.double(), dim=-1).float(), "softmax of large logits (1e4)",
                 atol=2e-3, rtol=2e-3)
    assert out[1, 1].item() == 0.0, "softmax: an entry of -inf must get exactly 0 weight."


@weight(1.5)
def test_attention_weights(student, reference, assignment):
    """attention_weights matches the reference and each row sums to 1"""
    q, k = randn(2, 6, 8, seed=2), randn(2, 9, 8, seed=3)
    w = student.attention.attention_weights(q, k)
    assert_close(w, reference.attention.attention_weights(q, k), "attention_weights(q, k)",
                 assignment.tolerance("float32"))
    assert_close(w.sum(-1), torch.ones(2, 6), "row sums of attention_weights (each row must sum to 1)",
                 atol=1e-5, rtol=0)


@weight(1.5)
def test_sdpa_no_mask(student, reference, assignment):
    """scaled_dot_product_attention without a mask matches the reference (d_v != d_k)"""
    q, k, v = randn(2, 5, 16, seed=4), randn(2, 7, 16, seed=5), randn(2, 7, 12, seed=6)
    assert_close(student.attention.scaled_dot_product_attention(q, k, v),
                 reference.attention.scaled_dot_product_attention(q, k, v),
                 "scaled_dot_product_attention(q, k, v)", assignment.tolerance("float32"))


@weight(1.5)
def test_sdpa_bool_mask(student, reference, assignment):
    """a boolean mask (True = may attend) removes exactly the masked keys"""
    q, k, v = randn(2, 5, 8, seed=7), randn(2, 6, 8, seed=8), randn(2, 6, 8, seed=9)
    mask = random_mask(2, 5, 6, seed=10)
    assert_close(student.attention.scaled_dot_product_attention(q, k, v, mask=mask),
                 reference.attention.scaled_dot_product_attention(q, k, v, mask=mask),
                 "scaled_dot_product_attention with a boolean mask (True = may attend)",
                 assignment.tolerance("float32"))


@weight(1.5)
def test_sdpa_causal_square(student, reference, assignment):
    """is_causal=True with Lq == Lk: query i sees keys 0..i"""
    q, k, v = randn(1, 2, 6, 8, seed=11), randn(1, 2, 6, 8, seed=12), randn(1, 2, 6, 8, seed=13)
    assert_close(student.attention.scaled_dot_product_attention(q, k, v, is_causal=True),
                 reference.attention.scaled_dot_product_attention(q, k, v, is_causal=True),
                 "scaled_dot_product_attention(is_causal=True), Lq == Lk", assignment.tolerance("float32"))


@weight(0.75)
def test_sdpa_causal_decode(student, reference, assignment):
    """is_causal with one query and 5 keys (decoding with a cache): the query sees every key"""
    check_bottom_right_causal(student, reference, assignment, 1, 5, seed=14)


@weight(0.75)
def test_sdpa_gradients_flow(student, reference, assignment):
    """gradients through your attention reach q, k and v and match the reference's"""
    check_gradients(student, reference, assignment, 4, 6, 8, 5, seed=15)


@weight(0.75)
def test_sdpa_float64(student, reference, assignment):
    """float64 inputs give a float64 output (no float32 cast inside)"""
    check_float64_kept(student, reference, assignment, 2, 2, 5, 8, seed=20)


@weight(0.75)
def test_sdpa_mask_and_causal(student, reference, assignment):
    """a mask broadcast over heads combines with is_causal by AND"""
    check_mask_and_causal(student, reference, assignment, 1, 2, 6, 8, seed=21)
