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
        raise NotImplementedError('FeedForward.__init__: d_ff defaults to 4 * d_model; fc1: d_model -> d_ff, fc2: d_ff -> d_model; ValueError for an unknown activation.')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError('FeedForward.forward: Exact GELU (F.gelu, erf form) or ReLU between the two linear layers.')


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
        raise NotImplementedError('TransformerBlock.__init__: Sub-modules attn (MultiHeadAttention), ffn (FeedForward), norm1, norm2 (nn.LayerNorm(d_model)).')

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        positions: torch.Tensor | None = None,
        kv_cache=None,
        layer: int = 0,
    ) -> torch.Tensor:
        raise NotImplementedError('TransformerBlock.forward: Follow the two formulas in the class docstring; dropout on each sub-layer output.')
