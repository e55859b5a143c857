"""Checks shared by the public and hidden attention suites (grader side; shipped in the student kit).

Each check takes its sizes and seeds from the test, so the public suite runs the same check on other
inputs than the hidden one. Reference values come as data (``golden.measured`` for gradients), so the
public tests replay in the kit.
"""
from __future__ import annotations

import torch

from autograder.testing import backprop, forward_backward
from autograder.testing import measured
from autograder.testing import assert_close, check_tensor
from suite_helpers import randn, random_mask


def check_bottom_right_causal(student, reference, assignment, lq: int, lk: int, *, seed: int) -> None:
    """is_causal with Lq != Lk: no weight on keys j > i + (Lk - Lq), and the output matches the reference."""
    q, k, v = randn(2, 2, lq, 8, seed=seed), randn(2, 2, lk, 8, seed=seed + 1), randn(2, 2, lk, 8, seed=seed + 2)
    w = student.attention.attention_weights(q, k, is_causal=True)
    check_tensor(w, "attention_weights(is_causal=True)", shape=(2, 2, lq, lk))
    i = torch.arange(lq).unsqueeze(-1)
    j = torch.arange(lk)
    blocked = j > i + (lk - lq)
    if (w.detach()[..., blocked] != 0).any():
        raise AssertionError(
            f"attention_weights(is_causal=True) with Lq={lq}, Lk={lk}: some query attends a key after its "
            "own position. The rule is bottom-right aligned: query i may attend key j iff j <= i + (Lk - Lq) "
            "(with one query and a cache of keys, as in decoding, that query sees every key)."
        )
    assert_close(student.attention.scaled_dot_product_attention(q, k, v, is_causal=True),
                 reference.attention.scaled_dot_product_attention(q, k, v, is_causal=True),
                 f"scaled_dot_product_attention(is_causal=True), Lq={lq}, Lk={lk}",
                 assignment.tolerance("float32"))


def check_gradients(student, reference, assignment, lq: int, lk: int, d_k: int, d_v: int, *, seed: int) -> None:
    """Gradients of a masked attention with respect to q, k and v match the reference's."""
    q, k, v = randn(2, lq, d_k, seed=seed), randn(2, lk, d_k, seed=seed + 1), randn(2, lk, d_v, seed=seed + 2)
    mask = random_mask(2, lq, lk, seed=seed + 3)
    g = randn(2, lq, d_v, seed=seed + 4)
    got = forward_backward(student.attention.scaled_dot_product_attention, [q, k, v],
                           grad_output=g, wrt=[0, 1, 2], kwargs={"mask": mask})

    def reference_grads(ref) -> list[torch.Tensor]:
        leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
        backprop(ref.attention.scaled_dot_product_attention(*leaves, mask=mask), g)
        return [t.grad for t in leaves]

    want = measured(reference, f"gradients of scaled_dot_product_attention (seed {seed})", reference_grads)
    tol = assignment.tolerance("grad32")
    for name, mine, ref in zip("qkv", got["grads"], want):
        if mine is None:
            raise AssertionError(f"No gradient reached {name}: keep the computation differentiable "
                                 "(no .detach(), torch.no_grad(), .item() or NumPy inside).")
        assert_close(mine, ref, f"gradient of scaled_dot_product_attention with respect to {name}", tol)


def check_float64_kept(student, reference, assignment, *shape: int, seed: int) -> None:
    """float64 inputs give a float64 output with float64 accuracy (no float32 cast inside)."""
    q, k, v = (randn(*shape, seed=seed + i, dtype=torch.float64) for i in range(3))
    assert_close(student.attention.scaled_dot_product_attention(q, k, v, is_causal=True),
                 reference.attention.scaled_dot_product_attention(q, k, v, is_causal=True),
                 "scaled_dot_product_attention in float64 (the output keeps the input's dtype)",
                 assignment.tolerance("float64"))


def check_mask_and_causal(student, reference, assignment, b: int, h: int, n: int, d: int, *, seed: int) -> None:
    """A (B, 1, Lq, Lk) boolean mask, broadcast over heads, combined with is_causal: a key is seen iff both allow it."""
    q, k, v = randn(b, h, n, d, seed=seed), randn(b, h, n, d, seed=seed + 1), randn(b, h, n, d, seed=seed + 2)
    mask = random_mask(b, 1, n, n, seed=seed + 3)
    assert_close(student.attention.scaled_dot_product_attention(q, k, v, mask=mask, is_causal=True),
                 reference.attention.scaled_dot_product_attention(q, k, v, mask=mask, is_causal=True),
                 "scaled_dot_product_attention(mask=..., is_causal=True) with a (B, 1, Lq, Lk) mask: a key is "
                 "attended only where the mask allows it AND it is not in the future", assignment.tolerance("float32"))
