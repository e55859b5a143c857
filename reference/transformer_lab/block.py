"""The Transformer block: attention and a position-wise feed-forward network, each wrapped in a
residual connection and a LayerNorm (before the sub-layer in pre-LN, after the sum in post-LN)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .mha import MultiHeadAttention


class FeedForward(nn.Module):
    """fc2(activation(fc1(x))), applied to every position independently."""

    def __init__(self, d_model: int, d_ff: int | None = None, activation: str = "gelu", bias: bool = True) -> None:
        super().__init__()
        # BEGIN SOLUTION d_ff defaults to 4 * d_model; fc1: d_model -> d_ff, fc2: d_ff -> d_model; ValueError for an unknown activation.
        if activation not in ("gelu", "relu"):
            raise ValueError(f"activation must be 'gelu' or 'relu', got {activation!r}")
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.fc1 = nn.Linear(d_model, d_ff, bias=bias)
        self.fc2 = nn.Linear(d_ff, d_model, bias=bias)
        self.activation = activation
        # END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION Exact GELU (F.gelu, erf form) or ReLU between the two linear layers.
        h = self.fc1(x)
        h = F.gelu(h) if self.activation == "gelu" else F.relu(h)
        return self.fc2(h)
        # END SOLUTION


class TransformerBlock(nn.Module):
    """Pre-LN: x + attn(norm1(x)), then + ffn(norm2(x)). Post-LN: norm1(x + attn(x)), then norm2(x + ffn(x))."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int | None = None,
        norm_first: bool = True,
        dropout: float = 0.0,
        bias: bool = True,
        rope: nn.Module | None = None,
        alibi: bool = False,
    ) -> None:
        super().__init__()
        # BEGIN SOLUTION Sub-modules attn (MultiHeadAttention), ffn (FeedForward), norm1, norm2 (nn.LayerNorm(d_model)).
        self.attn = MultiHeadAttention(d_model, num_heads, bias=bias, dropout=dropout, rope=rope, alibi=alibi)
        self.ffn = FeedForward(d_model, d_ff, bias=bias)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm_first = norm_first
        self.dropout = nn.Dropout(dropout)
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
        # BEGIN SOLUTION Follow the two formulas in the class docstring; dropout on each sub-layer output.
        def attend(h: torch.Tensor) -> torch.Tensor:
            out = self.attn(h, mask=mask, is_causal=is_causal, positions=positions, kv_cache=kv_cache, layer=layer)
            return self.dropout(out)

        if self.norm_first:
            x = x + attend(self.norm1(x))
            return x + self.dropout(self.ffn(self.norm2(x)))
        x = self.norm1(x + attend(x))
        return self.norm2(x + self.dropout(self.ffn(x)))
        # END SOLUTION
