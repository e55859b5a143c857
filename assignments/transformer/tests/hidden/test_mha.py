"""Hidden tests: multi-head attention (mha.py)."""
import pytest
import torch
from gradescope_utils.autograder_utils.decorators import weight

from autograder.testing import backprop, forward_backward
from autograder.testing import assert_close, assert_equal, best_measurement, check_tensor, time_interleaved
from suite_helpers import mha_pair, randn, random_mask

pytestmark = pytest.mark.part("mha")


@weight(1)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_parameter_count(student, bias):
    """parameter count is 4 d^2 (+ 4 d with bias)"""
    d = 48
    sd = student.mha.MultiHeadAttention(d, 6, bias=bias).state_dict()
    count = sum(t.numel() for t in sd.values())
    assert_equal(count, 4 * d * d + (4 * d if bias else 0),
                 f"number of parameters of MultiHeadAttention({d}, 6, bias={bias})")


@weight(1)
@pytest.mark.parametrize("d,h,b,l", [(16, 1, 1, 1), (64, 8, 3, 5), (40, 5, 2, 11)],
                         ids=["one-head-one-token", "8-heads", "5-heads-odd-sizes"])
def test_outputs_match(student, reference, assignment, d, h, b, l):
    """outputs match the reference over head counts and sizes"""
    mine, ref = mha_pair(student, reference, d, h, seed=d + h)
    x = randn(b, l, d, seed=b * l)
    assert_close(mine(x), ref(x), f"MultiHeadAttention({d}, {h}) output for x of shape {(b, l, d)}",
                 assignment.tolerance("float32"))


@weight(1)
def test_one_head_is_single_head_attention(student, reference, assignment):
    """with one head, MHA is out_proj(attention(q_proj x, k_proj x, v_proj x))"""
    mine, ref = mha_pair(student, reference, 20, 1, seed=5)
    x = randn(2, 6, 20, seed=6)
    with torch.no_grad():
        want = ref.out_proj(reference.attention.scaled_dot_product_attention(
            ref.q_proj(x), ref.k_proj(x), ref.v_proj(x)))
    assert_close(mine(x), want, "MultiHeadAttention(d, num_heads=1) vs single-head attention with projections",
                 assignment.tolerance("float32"))


@weight(1)
def test_permutation_equivariance(student, reference, assignment):
    """without positions or masks, permuting the tokens permutes the output the same way"""
    mine, _ = mha_pair(student, reference, 32, 4, seed=7)
    x = randn(2, 9, 32, seed=8)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(9))
    out, out_perm = mine(x), mine(x[:, perm])
    check_tensor(out, "MultiHeadAttention output", shape=(2, 9, 32))
    assert_close(out_perm, out[:, perm], "output for permuted tokens vs permuted output (permutation equivariance)",
                 assignment.tolerance("float32"))


@weight(1)
def test_causal_ignores_future(student, reference, assignment):
    """with is_causal=True, changing later tokens never changes earlier outputs"""
    mine, _ = mha_pair(student, reference, 32, 4, seed=10)
    x = randn(1, 8, 32, seed=11)
    y = x.clone()
    y[:, 5:] = randn(1, 3, 32, seed=12)
    a, b = mine(x, is_causal=True), mine(y, is_causal=True)
    check_tensor(a, "MultiHeadAttention output", shape=(1, 8, 32))
    assert_close(b[:, :5], a[:, :5], "outputs at positions 0..4 after changing tokens 5..7 (causal)",
                 assignment.tolerance("float32"))


@weight(1)
def test_padding_mask_broadcast(student, reference, assignment):
    """a (B, 1, 1, L) padding mask broadcasts over heads and queries"""
    mine, ref = mha_pair(student, reference, 32, 4, seed=13)
    x = randn(3, 6, 32, seed=14)
    mask = torch.ones(3, 1, 1, 6, dtype=torch.bool)
    mask[0, ..., 4:] = False
    mask[2, ..., 1:] = False
    assert_close(mine(x, mask=mask), ref(x, mask=mask), "MultiHeadAttention output with a (B, 1, 1, L) padding mask",
                 assignment.tolerance("float32"))
    mask4 = random_mask(3, 4, 6, 6, seed=15)
    assert_close(mine(x, mask=mask4, is_causal=True), ref(x, mask=mask4, is_causal=True),
                 "MultiHeadAttention output with a (B, H, L, L) mask and is_causal=True",
                 assignment.tolerance("float32"))


@weight(1)
def test_gradients_match(student, reference, assignment):
    """gradients w.r.t. the input and every parameter match the reference's"""
    mine, ref = mha_pair(student, reference, 32, 4, seed=16)
    x = randn(2, 5, 32, seed=17)
    g = randn(2, 5, 32, seed=18)
    got = forward_backward(mine, [x], grad_output=g, wrt=[0], params=True, kwargs={"is_causal": True})
    xr = x.clone().requires_grad_(True)
    backprop(ref(xr, is_causal=True), g)
    tol = assignment.tolerance("grad32")
    if got["grads"][0] is None:
        raise AssertionError("No gradient reached the input x: keep the forward differentiable.")
    assert_close(got["grads"][0], xr.grad, "gradient with respect to the input x", tol)
    for name, p in ref.named_parameters():
        mine_grad = got["param_grads"].get(name)
        if mine_grad is None:
            raise AssertionError(f"No gradient reached parameter {name}.")
        assert_close(mine_grad, p.grad, f"gradient of parameter {name}", tol)


@weight(2)
def test_forward_speed(student, student_client, reference, reference_remote, reference_client, assignment):
    """forward is at most max_ratio x the reference's time (heads in parallel, no Python loop over heads)"""
    perf = assignment.performance["mha_forward"]
    d, h, b, l = 128, 32, 1, 16  # many small heads: a loop over heads costs ~5x, any vectorised form < 1.2x
    mine, ref = mha_pair(student, reference, d, h, seed=19)
    x = randn(b, l, d, seed=20)
    with torch.no_grad():
        want = ref(x)
    assert_close(mine(x), want, "MultiHeadAttention output (speed is graded only for a correct forward)",
                 assignment.tolerance("float32"))
    timed_ref = reference_remote.mha.MultiHeadAttention(d, h)
    timed_ref.load_state_dict(ref.state_dict())
    timed_ref.eval()
    (timing, inner), taken = best_measurement(
        lambda: time_interleaved(mine, student_client, timed_ref, reference_client, [x], repeats=perf.repeats),
        lambda measured: perf.credit(measured[0].ratio), perf.attempts)
    if timing.ratio > perf.max_ratio:
        raise AssertionError(
            f"MultiHeadAttention({d}, {h}) forward on x of shape {(b, l, d)} is too slow: "
            f"{timing.describe(inner)} (the best of {taken} measurements); allowed ratio {perf.max_ratio:g}. "
            "Compute all heads in one batched "
            "matmul (view/transpose to (B, H, L, D)) instead of looping over heads."
        )
