"""Multi-head attention: project, split into heads, attend in parallel, merge, project back.

Every head is computed in one batched matmul (no Python loop over heads). Head h uses
output rows h*D:(h+1)*D of q_proj/k_proj/v_proj, i.e. ``q_proj(x).view(B, L, H, D)``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .attention import allowed_positions, softmax


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention with optional RoPE, ALiBi and a KV cache."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        bias: bool = True,
        dropout: float = 0.0,
        rope: nn.Module | None = None,
        alibi: bool = False,
    ) -> None:
        super().__init__()
        raise NotImplementedError('MultiHeadAttention.__init__: Check d_model % num_heads (ValueError), then create q_proj, k_proj, v_proj, out_proj as nn.Linear(d_model, d_model, bias=bias).')

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        positions: torch.Tensor | None = None,
        kv_cache=None,
        layer: int = 0,
    ) -> torch.Tensor:
        """x (B, L, d_model) -> (B, L, d_model); with ``kv_cache`` the new keys/values are appended."""
        raise NotImplementedError('MultiHeadAttention.forward: Project, view as (B, L, H, D), transpose to (B, H, L, D), attend over all heads at once, merge heads, out_proj.')
