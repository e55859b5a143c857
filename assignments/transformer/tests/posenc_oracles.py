"""Exact (float64) positional-encoding formulas for the posenc suites: grader side only.

Instructor-only: these are working implementations of the graded functions, so the student kit never
ships this module (``autograder build`` leaves every ``tests/*_oracles.py`` out of it). The
hidden suite imports it; the public suite asks for its values through ``autograder.grading.golden.oracle``,
which records them when the kit is built and replays them in the kit.

The oracles are the formulas of the contract computed in float64, not the reference's code; the
tolerances that go with them are in posenc_helpers.
"""
from __future__ import annotations

import math

import torch


def sinusoidal_table(num_positions: int, d_model: int) -> torch.Tensor:
    """PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(p / 10000^(2i/d)), float64."""
    p = torch.arange(num_positions, dtype=torch.float64).unsqueeze(1)
    angles = p / 10000.0 ** (torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)


def rope(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Rotate each adjacent pair (x[2i], x[2i+1]) by positions * theta^(-2i/D), in float64."""
    d = x.shape[-1]
    angles = positions.double().unsqueeze(-1) * theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    xe, xo = x.double()[..., 0::2], x.double()[..., 1::2]
    return torch.stack((xe * angles.cos() - xo * angles.sin(), xe * angles.sin() + xo * angles.cos()), -1).flatten(-2)


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """The ALiBi paper's slopes (Press et al. 2022, reference implementation), float64."""
    def geometric(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]

    closest = 2 ** math.floor(math.log2(num_heads))
    extra = geometric(2 * closest)[0::2][: num_heads - closest] if closest != num_heads else []
    return torch.tensor(geometric(closest) + extra, dtype=torch.float64)


def alibi_bias(num_heads: int, lq: int, lk: int) -> torch.Tensor:
    """slope_h * (j - (i + Lk - Lq)), shape (num_heads, Lq, Lk), float64."""
    i = torch.arange(lq, dtype=torch.float64).unsqueeze(-1)
    j = torch.arange(lk, dtype=torch.float64)
    return alibi_slopes(num_heads).view(-1, 1, 1) * (j - (i + lk - lq))
