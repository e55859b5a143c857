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
        # BEGIN SOLUTION Check d_model % num_heads (ValueError), then create q_proj, k_proj, v_proj, out_proj as nn.Linear(d_model, d_model, bias=bias).
        if num_heads <= 0 or d_model % num_heads != 0:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.attn_dropout = nn.Dropout(dropout)
        self.rope = rope
        self.alibi = alibi
        # END SOLUTION

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
        # BEGIN SOLUTION Project, view as (B, L, H, D), transpose to (B, H, L, D), attend over all heads at once, merge heads, out_proj.
        b, lq, _ = x.shape
        h, d = self.num_heads, self.head_dim
        q = self.q_proj(x).view(b, lq, h, d).transpose(1, 2)
        k = self.k_proj(x).view(b, lq, h, d).transpose(1, 2)
        v = self.v_proj(x).view(b, lq, h, d).transpose(1, 2)

        offset = kv_cache.length(layer) if kv_cache is not None else 0
        if self.rope is not None:
            if positions is None:
                positions = torch.arange(offset, offset + lq, device=x.device)
            pos = positions.unsqueeze(1) if positions.dim() == 2 else positions  # (B, 1, L) over heads
            q, k = self.rope(q, pos), self.rope(k, pos)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)

        scores = q @ k.transpose(-2, -1) / math.sqrt(d)
        if self.alibi:
            from .posenc import alibi_bias

            scores = scores + alibi_bias(h, lq, k.shape[-2]).to(device=scores.device, dtype=scores.dtype)
        allowed = allowed_positions(q, k, mask, is_causal)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        weights = self.attn_dropout(softmax(scores, dim=-1))
        out = (weights @ v).transpose(1, 2).reshape(b, lq, self.d_model)
        return self.out_proj(out)
        # END SOLUTION
