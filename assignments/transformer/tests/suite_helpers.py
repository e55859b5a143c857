"""Helpers shared by the public and hidden suites of the Transformer assignment (grader side)."""
from __future__ import annotations

import torch

from autograder.testing import StudentCodeError


def randn(*shape: int, seed: int, dtype: torch.dtype = torch.float32, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def random_mask(*shape: int, seed: int, p: float = 0.3) -> torch.Tensor:
    """A random boolean mask (True = may attend) with at least one True per row."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(*shape, generator=g) > p
    mask[..., 0] = True
    return mask


def mha_pair(student, reference, d_model: int, num_heads: int, *, bias: bool = True, seed: int = 0, **kwargs):
    """The reference MHA with seeded weights, and the student's MHA holding the same weights."""
    torch.manual_seed(seed)
    ref = reference.mha.MultiHeadAttention(d_model, num_heads, bias=bias, **kwargs).eval()
    mine = student.mha.MultiHeadAttention(d_model, num_heads, bias=bias, **kwargs)
    try:
        mine.load_state_dict(ref.state_dict(), strict=True)
    except StudentCodeError as e:
        raise AssertionError(
            "Loading the reference's weights into your MultiHeadAttention with strict=True failed: "
            "it must hold exactly q_proj, k_proj, v_proj, out_proj (nn.Linear(d_model, d_model)) and no "
            f"other parameters.\n{e.student_message}"
        ) from None
    mine.eval()
    return mine, ref
