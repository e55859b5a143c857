"""Scaled dot-product attention, written out by hand.

Shapes: q (..., Lq, d_k), k (..., Lk, d_k), v (..., Lk, d_v); any number of leading batch dims.
A boolean ``mask`` uses True = "may attend". ``is_causal`` is bottom-right aligned: query i
may attend key j iff j <= i + (Lk - Lq), which is what decoding with a KV cache needs.
"""
from __future__ import annotations

import math

import torch


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Numerically stable softmax: never NaN for finite input, -inf gets exactly 0 weight."""
    raise NotImplementedError('softmax: Subtract the max along `dim` before exp (keepdim=True), then divide by the sum.')


def allowed_positions(
    q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False
) -> torch.Tensor | None:
    """Boolean (Lq, Lk)-broadcastable tensor of the keys each query may see, or None for all."""
    raise NotImplementedError('allowed_positions: Build the bottom-right causal rule j <= i + (Lk - Lq) with torch.arange, then AND it with `mask`.')


def attention_weights(
    q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False
) -> torch.Tensor:
    """softmax(q @ k^T / sqrt(d_k)) with masked keys removed: shape (..., Lq, Lk), rows sum to 1."""
    raise NotImplementedError('attention_weights: Scale the scores, fill disallowed positions with -inf (masked_fill), then use your softmax.')


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    is_causal: bool = False,
) -> torch.Tensor:
    """Attention output: attention_weights(q, k, mask, is_causal) @ v, shape (..., Lq, d_v)."""
    raise NotImplementedError('scaled_dot_product_attention: One line: the weights from attention_weights times v.')
