"""Hidden tests: the Transformer block (block.py)."""
import pytest
import torch
from gradescope_utils.autograder_utils.decorators import weight

from autograder.testing import backprop, forward_backward
from autograder.testing import assert_close, assert_equal, check_tensor
from block_helpers import BLOCK_LAYOUT, block_pair, ffn_pair, load_reference, perturb_norms, state_dict_of
from suite_helpers import randn, random_mask

pytestmark = pytest.mark.part("block")


@weight(1)
def test_feedforward_width(student):
    """FeedForward's hidden width d_ff defaults to 4 d_model, and an explicit d_ff is honoured"""
    cases = [("FeedForward(24)", student.block.FeedForward(24), "", 96, 24),
             ("FeedForward(24, d_ff=40)", student.block.FeedForward(24, d_ff=40), "", 40, 24),
             ("TransformerBlock(32, 4)", student.block.TransformerBlock(32, 4), "ffn.", 128, 32),
             ("TransformerBlock(32, 4, d_ff=48)", student.block.TransformerBlock(32, 4, d_ff=48), "ffn.", 48, 32)]
    for what, mine, prefix, d_ff, d in cases:
        sd = state_dict_of(mine, what)
        for name, shape in ((f"{prefix}fc1.weight", (d_ff, d)), (f"{prefix}fc2.weight", (d, d_ff))):
            if name not in sd:
                raise AssertionError(f"{what}.state_dict() has no {name!r} (FeedForward must have fc1 and fc2).")
            assert_equal(tuple(sd[name].shape), shape, f"shape of {name} in {what}")


@weight(1)
def test_feedforward_activations(student, reference, assignment):
    """FeedForward matches with exact (erf) GELU, the default, and with ReLU"""
    x = randn(3, 5, 16, seed=7, scale=3.0)  # wide pre-activations: the tanh GELU approximation shows
    for kwargs in ({}, {"activation": "gelu"}, {"activation": "relu"}):
        mine, ref = ffn_pair(student, reference, 16, 64, seed=8, **kwargs)
        args = ", ".join(["16", "64"] + [f"{k}={v!r}" for k, v in kwargs.items()])
        assert_close(mine(x), ref(x), f"FeedForward({args}) output", assignment.tolerance("float32"))


@weight(1)
def test_residual_paths(student, reference, assignment):
    """residual connections: with attn.out_proj and ffn.fc2 zeroed, pre-LN is the identity (d out / d x = I)"""
    torch.manual_seed(9)
    x, g = randn(2, 5, 32, seed=10), randn(2, 5, 32, seed=11)
    for norm_first in (True, False):
        ref = perturb_norms(reference.block.TransformerBlock(32, 4, norm_first=norm_first), seed=12).eval()
        with torch.no_grad():
            for lin in (ref.attn.out_proj, ref.ffn.fc2):
                lin.weight.zero_()
                lin.bias.zero_()
        what = f"TransformerBlock(32, 4, norm_first={norm_first})"
        mine = load_reference(student.block.TransformerBlock(32, 4, norm_first=norm_first), ref, what, BLOCK_LAYOUT)
        got = forward_backward(mine, [x], grad_output=g, wrt=[0])
        if type(got) is not dict or type(got.get("grads")) is not list:
            raise AssertionError(f"{what}: forward+backward returned something unexpected.")
        out = check_tensor(got.get("output"), f"{what} output", shape=x.shape, dtype=x.dtype)
        xr = x.clone().requires_grad_(True)
        backprop(ref(xr), g)
        if norm_first:
            assert_close(out, x, f"pre-LN {what} output with attn.out_proj and ffn.fc2 all zero (must be x itself: "
                         "x + attn(norm1(x)) + ffn(norm2(.)) with both sub-layers returning 0)",
                         assignment.tolerance("float32"))
        else:
            assert_close(out, ref(x), f"post-LN {what} output with attn.out_proj and ffn.fc2 all zero "
                         "(norm2(norm1(x)))", assignment.tolerance("float32"))
        grad = got["grads"][0]
        if grad is None:
            raise AssertionError(f"{what}: no gradient reached the input x through the residual connections.")
        assert_close(grad, xr.grad, f"{what}: gradient with respect to x when both sub-layers output zero "
                     + ("(the residual path alone: must equal grad_output)" if norm_first else
                        "(through the residual path and the LayerNorms)"), assignment.tolerance("grad32"))


@weight(1)
def test_parameter_count(student, reference):
    """parameter count equals the closed form (attention + feed-forward + two LayerNorms)"""
    for args, kwargs in (((48, 6), {}), ((40, 5), {"d_ff": 72, "bias": False})):
        what = "TransformerBlock(" + ", ".join([str(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]) + ")"
        count = sum(t.numel() for t in state_dict_of(student.block.TransformerBlock(*args, **kwargs), what).values())
        want = sum(p.numel() for p in reference.block.TransformerBlock(*args, **kwargs).parameters())
        assert_equal(count, want, f"number of parameters of {what}")


@weight(1)
def test_dropout_inactive_in_eval(student, reference, assignment):
    """dropout is off in eval(): a block with dropout=0.5 is deterministic and matches dropout=0.0"""
    torch.manual_seed(13)
    ref = perturb_norms(reference.block.TransformerBlock(32, 4, dropout=0.0), seed=13).eval()
    what = "TransformerBlock(32, 4, dropout=0.5)"
    mine = load_reference(student.block.TransformerBlock(32, 4, dropout=0.5), ref, what, BLOCK_LAYOUT)
    x = randn(2, 6, 32, seed=14)
    want = ref(x)
    for call in (1, 2):
        assert_close(mine(x), want, f"{what} output in eval() mode, call {call} (dropout must be inactive)",
                     assignment.tolerance("float32"))


@weight(1)
def test_outputs_match_across_configs(student, reference, assignment):
    """outputs match over sizes, both norm placements, bias=False, explicit d_ff, masks and is_causal"""
    tol = assignment.tolerance("float32")
    configs = [((48, 6), {"d_ff": 80, "bias": False}, (3, 5)),
               ((16, 1), {"norm_first": False}, (2, 1)),
               ((40, 5), {"norm_first": False, "d_ff": 24}, (2, 9))]
    for i, ((d, h), kwargs, (b, n)) in enumerate(configs):
        mine, ref = block_pair(student, reference, d, h, seed=20 + i, perturb=True, **kwargs)
        x = randn(b, n, d, seed=30 + i)
        args = ", ".join([str(d), str(h)] + [f"{k}={v!r}" for k, v in kwargs.items()])
        what = f"TransformerBlock({args}) on x of shape {(b, n, d)}"
        assert_close(mine(x), ref(x), f"{what}: output", tol)
        assert_close(mine(x, is_causal=True), ref(x, is_causal=True), f"{what}: output with is_causal=True", tol)
        pad = torch.ones(b, 1, 1, n, dtype=torch.bool)
        pad[0, ..., (n + 1) // 2:] = False
        assert_close(mine(x, mask=pad), ref(x, mask=pad), f"{what}: output with a (B, 1, 1, L) padding mask", tol)
        mask = random_mask(b, h, n, n, seed=40 + i)
        assert_close(mine(x, mask=mask, is_causal=True), ref(x, mask=mask, is_causal=True),
                     f"{what}: output with a (B, H, L, L) mask and is_causal=True", tol)
