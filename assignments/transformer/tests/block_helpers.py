"""Grader-side helpers for the block and model suites: reference/student pairs with the same weights."""
from __future__ import annotations

import torch
from torch import nn

from autograder.testing import StudentCodeError

BLOCK_LAYOUT = ("attn (MultiHeadAttention: q_proj, k_proj, v_proj, out_proj), ffn (FeedForward: fc1, fc2), "
                "norm1, norm2 (nn.LayerNorm(d_model))")


def perturb_norms(module: nn.Module, seed: int) -> nn.Module:
    """Give every LayerNorm non-trivial weights (default ones/zeros would hide norm1/norm2 mix-ups)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
    return module


def state_dict_of(mine, what: str) -> dict[str, torch.Tensor]:
    """The student's state_dict, checked to be a dict of tensors."""
    sd = mine.state_dict()
    if type(sd) is not dict or any(type(k) is not str or type(v) is not torch.Tensor for k, v in sd.items()):
        raise AssertionError(f"{what}.state_dict() must map parameter names to tensors.")
    return sd


def check_state_dict_layout(mine, ref: nn.Module, what: str, layout: str) -> None:
    """The student's parameter names and shapes are exactly the reference's."""
    got = {name: tuple(t.shape) for name, t in state_dict_of(mine, what).items()}
    want = {name: tuple(t.shape) for name, t in ref.state_dict().items()}
    if got != want:
        extra = sorted(set(got) - set(want))
        missing = sorted(set(want) - set(got))
        wrong = sorted(n for n in set(got) & set(want) if got[n] != want[n])
        raise AssertionError(
            f"{what}.state_dict() differs from the contract ({layout}; fixed tables must not be "
            f"persistent): missing {missing}, unexpected {extra}, "
            f"wrong shapes (name, yours, expected) {[(n, got[n], want[n]) for n in wrong]}."
        )


def load_reference(mine, ref: nn.Module, what: str, layout: str):
    """Load the reference's weights into the student's module with strict=True, then eval()."""
    try:
        mine.load_state_dict(ref.state_dict(), strict=True)
    except StudentCodeError as e:
        raise AssertionError(
            f"Loading the reference's weights into your {what} with strict=True failed: it must hold "
            f"exactly the contract's sub-modules, {layout}, and no other parameters or persistent "
            f"buffers.\n{e.student_message}"
        ) from None
    mine.eval()
    return mine


def block_pair(student, reference, d_model: int, num_heads: int, *, seed: int, perturb: bool = False, **kwargs):
    """The reference TransformerBlock with seeded weights (in eval mode) and the student's holding the same.

    perturb=True gives the LayerNorms random weights: hidden suites only, since it mutates the reference
    (public suites replay recorded reference values in the student kit, see autograder.grading.golden)."""
    torch.manual_seed(seed)
    ref = reference.block.TransformerBlock(d_model, num_heads, **kwargs)
    if perturb:
        perturb_norms(ref, seed)
    ref = ref.eval()
    mine = student.block.TransformerBlock(d_model, num_heads, **kwargs)
    args = ", ".join([str(d_model), str(num_heads)] + [f"{k}={v!r}" for k, v in kwargs.items()])
    return load_reference(mine, ref, f"TransformerBlock({args})", BLOCK_LAYOUT), ref


def ffn_pair(student, reference, d_model: int, d_ff: int, *, seed: int, **kwargs):
    torch.manual_seed(seed)
    ref = reference.block.FeedForward(d_model, d_ff, **kwargs).eval()
    mine = student.block.FeedForward(d_model, d_ff, **kwargs)
    return load_reference(mine, ref, "FeedForward", "fc1: Linear(d_model, d_ff), fc2: Linear(d_ff, d_model)"), ref
