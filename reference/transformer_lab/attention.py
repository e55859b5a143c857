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
    # BEGIN SOLUTION Subtract the max along `dim` before exp (keepdim=True), then divide by the sum.
    x_max = x.amax(dim=dim, keepdim=True)
    # A row of only -inf would give (-inf) - (-inf) = NaN; shift such rows by 0 instead.
    x_max = torch.where(torch.isfinite(x_max), x_max, torch.zeros_like(x_max))
    e = torch.exp(x - x_max)
    return e / e.sum(dim=dim, keepdim=True)
    # END SOLUTION


def allowed_positions(
    q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False
) -> torch.Tensor | None:
    """Boolean (Lq, Lk)-broadcastable tensor of the keys each query may see, or None for all."""
    # BEGIN SOLUTION Build the bottom-right causal rule j <= i + (Lk - Lq) with torch.arange, then AND it with `mask`.
    allowed = mask
    if is_causal:
        lq, lk = q.shape[-2], k.shape[-2]
        i = torch.arange(lq, device=q.device).unsqueeze(-1)
        j = torch.arange(lk, device=q.device)
        causal = j <= i + (lk - lq)
        allowed = causal if allowed is None else allowed & causal
    return allowed
    # END SOLUTION


def attention_weights(
    q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False
) -> torch.Tensor:
    """softmax(q @ k^T / sqrt(d_k)) with masked keys removed: shape (..., Lq, Lk), rows sum to 1."""
    # BEGIN SOLUTION Scale the scores, fill disallowed positions with -inf (masked_fill), then use your softmax.
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    allowed = allowed_positions(q, k, mask, is_causal)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return softmax(scores, dim=-1)
    # END SOLUTION


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    is_causal: bool = False,
) -> torch.Tensor:
    """Attention output: attention_weights(q, k, mask, is_causal) @ v, shape (..., Lq, d_v)."""
    # BEGIN SOLUTION One line: the weights from attention_weights times v.
    return attention_weights(q, k, mask, is_causal) @ v
    # END SOLUTION
