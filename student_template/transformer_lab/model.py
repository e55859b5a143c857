"""A small decoder-only language model and greedy generation with an optional KV cache."""
from __future__ import annotations

import torch
from torch import nn

from .block import TransformerBlock
from .kv_cache import KVCache
from .posenc import LearnedPositionalEmbedding, RotaryEmbedding, SinusoidalPositionalEncoding

POSITIONAL = ("sinusoidal", "learned", "rope", "alibi")


class TransformerLM(nn.Module):
    """token_emb -> (+ absolute positions) -> blocks (always causal) -> norm_f -> lm_head."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        num_heads: int,
        num_layers: int,
        max_seq_len: int,
        d_ff: int | None = None,
        positional: str = "sinusoidal",
        norm_first: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        raise NotImplementedError('TransformerLM.__init__: token_emb, pos (or None for rope/alibi), blocks (one shared RotaryEmbedding for rope), norm_f, lm_head without bias.')

    def forward(self, idx: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """idx (B, L) token ids -> logits (B, L, vocab); with a cache, positions continue after it."""
        raise NotImplementedError('TransformerLM.forward: positions = arange(offset, offset + L) with offset = kv_cache.length(0); every block is causal.')


@torch.no_grad()
def generate(model: TransformerLM, idx: torch.Tensor, max_new_tokens: int, use_cache: bool = True) -> torch.Tensor:
    """Greedy decoding: (B, L) -> (B, L + max_new_tokens). With the cache, each step feeds one token."""
    raise NotImplementedError('generate: Without a cache run the whole sequence each step; with one, prefill the prompt, then feed only the newest token.')
