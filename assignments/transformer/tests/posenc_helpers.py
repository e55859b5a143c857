"""Tolerances and module checks for the posenc suites (grader side; shipped in the student kit).

The oracles themselves (the contract's formulas computed in float64, not the reference's code) are in
posenc_oracles, which the kit never holds: public tests get their values through
autograder.grading.golden.oracle (recorded when the kit is built). A float32
table or RoPE angle computed the textbook way is off by ~1e-5 at 128 positions and ~4e-4 at 5000
positions (measured: pos * exp(-ln(10000) 2i/d), pos / 10000^(2i/d), complex polar tables), so the
tolerances below are a few times that error and far below what any layout or formula bug gives (~1).
"""
from __future__ import annotations

import torch

from autograder.testing import StudentCodeError

TABLE_ATOL = {128: 1e-4, 512: 2e-4, 5000: 2e-3}  # positions up to key -> atol (values in [-1, 1])
SINUSOIDAL_FORMULA = "PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(p / 10000^(2i/d))"
ROPE_ATOL = 2e-4  # positions < 256, inputs ~ N(0, 1)


def table_atol(num_positions: int) -> float:
    return next(atol for limit, atol in sorted(TABLE_ATOL.items()) if num_positions <= limit)


def parameters(module, what: str) -> dict[str, tuple[int, ...]]:
    """name -> shape of the student's module's named_parameters(), type-checked."""
    params = module.named_parameters()
    if type(params) is not list or not all(
            type(p) is tuple and len(p) == 2 and type(p[0]) is str and type(p[1]) is torch.Tensor for p in params):
        raise AssertionError(f"{what}.named_parameters() must yield (name, tensor) pairs like any nn.Module's.")
    return {name: tuple(t.shape) for name, t in params}


def state_dict_keys(module, what: str) -> dict[str, tuple[int, ...]]:
    """key -> shape of the student's module's state_dict(), type-checked."""
    sd = module.state_dict()
    if type(sd) is not dict or not all(type(k) is str and type(v) is torch.Tensor for k, v in sd.items()):
        raise AssertionError(f"{what}.state_dict() must map names to tensors like any nn.Module's.")
    return {k: tuple(v.shape) for k, v in sd.items()}


def check_no_state(module, what: str) -> None:
    """No trainable parameters and an empty state_dict (fixed tables are persistent=False buffers)."""
    params = parameters(module, what)
    if params:
        raise AssertionError(f"{what} must have no trainable parameters, but it has {params}. A fixed table is "
                             "not a parameter: compute it on the fly or register_buffer(..., persistent=False).")
    keys = state_dict_keys(module, what)
    if keys:
        raise AssertionError(f"{what}.state_dict() must be empty (it holds only trainable parameters), but it "
                             f"holds {sorted(keys)}: register fixed tables with persistent=False.")


def learned_with_weight(student, max_len: int, d_model: int, weight: torch.Tensor):
    """The student's LearnedPositionalEmbedding(max_len, d_model) holding ``weight`` (loaded with strict=True)."""
    what = f"LearnedPositionalEmbedding({max_len}, {d_model})"
    m = student.posenc.LearnedPositionalEmbedding(max_len, d_model)
    params = parameters(m, what)
    if params != {"weight": (max_len, d_model)}:
        raise AssertionError(f"{what} must have exactly one parameter, weight of shape {(max_len, d_model)}; "
                             f"it has {params}.")
    try:
        m.load_state_dict({"weight": weight}, strict=True)
    except StudentCodeError as e:
        raise AssertionError(f"{what}.load_state_dict({{'weight': ...}}, strict=True) failed: the state_dict must "
                             f"hold exactly the parameter weight.\n{e.student_message}") from None
    return m
