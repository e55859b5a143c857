"""Positional information: sinusoidal and learned absolute encodings, RoPE and ALiBi.

Self-attention alone is permutation-equivariant: shuffle the tokens and the outputs shuffle the
same way. Each scheme here breaks that symmetry differently: absolute encodings add a vector per
position to the embeddings, RoPE rotates queries and keys so their dot product depends on the
distance m - n, and ALiBi adds a per-head linear penalty to the attention scores.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def _default_positions(x: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    if positions is None:
        return torch.arange(x.shape[-2], device=x.device)
    return positions.to(x.device)


def sinusoidal_encoding(max_len: int, d_model: int) -> torch.Tensor:
    """PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(p / 10000^(2i/d)); shape (max_len, d_model)."""
    # BEGIN SOLUTION Build angles = p / 10000^(2i/d) as a (max_len, d_model/2) grid; sin goes to even columns, cos to odd.
    pos = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)
    angles = pos / torch.pow(10000.0, two_i / d_model)
    pe = torch.zeros(max_len, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles)
    return pe.to(torch.float32)
    # END SOLUTION


class SinusoidalPositionalEncoding(nn.Module):
    """x + PE[positions]; the table is fixed (not a parameter) and extends past max_len on demand."""

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        # BEGIN SOLUTION Precompute the table once and register it with persistent=False (it is not a parameter).
        self.d_model = d_model
        self.register_buffer("pe", sinusoidal_encoding(max_len, d_model), persistent=False)
        # END SOLUTION

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        # BEGIN SOLUTION Default positions are arange(L); index the table and add it to x (in x's dtype).
        positions = _default_positions(x, positions)
        pe = self.pe
        needed = int(positions.max()) + 1 if positions.numel() else 0
        if needed > pe.shape[0]:  # the formula works for any position: extend the table
            pe = sinusoidal_encoding(needed, self.d_model).to(pe.device)
        return x + pe[positions].to(x.dtype)
        # END SOLUTION


class LearnedPositionalEmbedding(nn.Module):
    """x + weight[positions], with one trainable vector per position up to max_len."""

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        # BEGIN SOLUTION One nn.Parameter named `weight` of shape (max_len, d_model), small random init.
        self.weight = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
        # END SOLUTION

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        # BEGIN SOLUTION Default positions are arange(L); add the rows of `weight` for those positions.
        positions = _default_positions(x, positions)
        return x + self.weight[positions].to(x.dtype)
        # END SOLUTION


class RotaryEmbedding(nn.Module):
    """RoPE: rotate each adjacent pair (x[2i], x[2i+1]) by angle p * theta^(-2i/head_dim)."""

    def __init__(self, head_dim: int, max_seq_len: int, theta: float = 10000.0) -> None:
        super().__init__()
        # BEGIN SOLUTION Store the inverse frequencies theta^(-2i/head_dim) (persistent=False buffers: no parameters).
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
        self.head_dim = head_dim
        self.max_seq_len = max_seq_len
        inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        # END SOLUTION

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x (..., L, head_dim); positions broadcastable to x.shape[:-1] (e.g. (L,) or (B, 1, L))."""
        # BEGIN SOLUTION angles = positions[..., None] * inv_freq; rotate (x_even, x_odd) by them and interleave back.
        angles = positions.to(device=x.device, dtype=torch.float64).unsqueeze(-1) * self.inv_freq.to(x.device)
        cos, sin = torch.cos(angles).to(x.dtype), torch.sin(angles).to(x.dtype)
        x_even, x_odd = x[..., 0::2], x[..., 1::2]
        rotated = torch.stack((x_even * cos - x_odd * sin, x_even * sin + x_odd * cos), dim=-1)
        return rotated.flatten(-2)
        # END SOLUTION


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """The ALiBi paper's head slopes: 2^(-8/n * (h+1)) for n a power of two, interleaved otherwise."""
    # BEGIN SOLUTION For a power of two n use 2^(-8(h+1)/n); otherwise take the slopes of the closest smaller power of two, then every other slope of twice that many.
    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (h + 1) for h in range(n)]

    if num_heads <= 0:
        raise ValueError(f"num_heads must be positive, got {num_heads}")
    if math.log2(num_heads).is_integer():
        slopes = power_of_two(num_heads)
    else:
        closest = 2 ** math.floor(math.log2(num_heads))
        slopes = power_of_two(closest) + power_of_two(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)
    # END SOLUTION


def alibi_bias(num_heads: int, Lq: int, Lk: int) -> torch.Tensor:
    """(num_heads, Lq, Lk) bias slope_h * (j - (i + Lk - Lq)): 0 on the bottom-right diagonal."""
    # BEGIN SOLUTION Query i sits at key position i + Lk - Lq; the distance j - that position times each head's slope.
    i = torch.arange(Lq).unsqueeze(-1)
    j = torch.arange(Lk)
    distance = (j - (i + Lk - Lq)).to(torch.float32)
    return alibi_slopes(num_heads).view(-1, 1, 1) * distance
    # END SOLUTION
