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
    raise NotImplementedError('sinusoidal_encoding: Build angles = p / 10000^(2i/d) as a (max_len, d_model/2) grid; sin goes to even columns, cos to odd.')


class SinusoidalPositionalEncoding(nn.Module):
    """x + PE[positions]; the table is fixed (not a parameter) and extends past max_len on demand."""

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        raise NotImplementedError('SinusoidalPositionalEncoding.__init__: Precompute the table once and register it with persistent=False (it is not a parameter).')

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError("SinusoidalPositionalEncoding.forward: Default positions are arange(L); index the table and add it to x (in x's dtype).")


class LearnedPositionalEmbedding(nn.Module):
    """x + weight[positions], with one trainable vector per position up to max_len."""

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        raise NotImplementedError('LearnedPositionalEmbedding.__init__: One nn.Parameter named `weight` of shape (max_len, d_model), small random init.')

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError('LearnedPositionalEmbedding.forward: Default positions are arange(L); add the rows of `weight` for those positions.')


class RotaryEmbedding(nn.Module):
    """RoPE: rotate each adjacent pair (x[2i], x[2i+1]) by angle p * theta^(-2i/head_dim)."""

    def __init__(self, head_dim: int, max_seq_len: int, theta: float = 10000.0) -> None:
        super().__init__()
        raise NotImplementedError('RotaryEmbedding.__init__: Store the inverse frequencies theta^(-2i/head_dim) (persistent=False buffers: no parameters).')

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x (..., L, head_dim); positions broadcastable to x.shape[:-1] (e.g. (L,) or (B, 1, L))."""
        raise NotImplementedError('RotaryEmbedding.forward: angles = positions[..., None] * inv_freq; rotate (x_even, x_odd) by them and interleave back.')


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """The ALiBi paper's head slopes: 2^(-8/n * (h+1)) for n a power of two, interleaved otherwise."""
    raise NotImplementedError('alibi_slopes: For a power of two n use 2^(-8(h+1)/n); otherwise take the slopes of the closest smaller power of two, then every other slope of twice that many.')


def alibi_bias(num_heads: int, Lq: int, Lk: int) -> torch.Tensor:
    """(num_heads, Lq, Lk) bias slope_h * (j - (i + Lk - Lq)): 0 on the bottom-right diagonal."""
    raise NotImplementedError("alibi_bias: Query i sits at key position i + Lk - Lq; the distance j - that position times each head's slope.")
