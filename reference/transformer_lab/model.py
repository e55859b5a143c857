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
        # BEGIN SOLUTION token_emb, pos (or None for rope/alibi), blocks (one shared RotaryEmbedding for rope), norm_f, lm_head without bias.
        if positional not in POSITIONAL:
            raise ValueError(f"positional must be one of {POSITIONAL}, got {positional!r}")
        self.max_seq_len = max_seq_len
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.token_emb = nn.Embedding(vocab_size, d_model)
        if positional == "sinusoidal":
            self.pos = SinusoidalPositionalEncoding(d_model, max_seq_len)
        elif positional == "learned":
            self.pos = LearnedPositionalEmbedding(max_seq_len, d_model)
        else:
            self.pos = None
        rope = RotaryEmbedding(d_model // num_heads, max_seq_len) if positional == "rope" else None
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, num_heads, d_ff, norm_first=norm_first, dropout=dropout,
                             rope=rope, alibi=positional == "alibi")
            for _ in range(num_layers)
        )
        self.norm_f = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        # END SOLUTION

    def forward(self, idx: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """idx (B, L) token ids -> logits (B, L, vocab); with a cache, positions continue after it."""
        # BEGIN SOLUTION positions = arange(offset, offset + L) with offset = kv_cache.length(0); every block is causal.
        offset = kv_cache.length(0) if kv_cache is not None else 0
        positions = torch.arange(offset, offset + idx.shape[1], device=idx.device)
        x = self.token_emb(idx)
        if self.pos is not None:
            x = self.pos(x, positions)
        for layer, block in enumerate(self.blocks):
            x = block(x, is_causal=True, positions=positions, kv_cache=kv_cache, layer=layer)
        return self.lm_head(self.norm_f(x))
        # END SOLUTION


@torch.no_grad()
def generate(model: TransformerLM, idx: torch.Tensor, max_new_tokens: int, use_cache: bool = True) -> torch.Tensor:
    """Greedy decoding: (B, L) -> (B, L + max_new_tokens). With the cache, each step feeds one token."""
    # BEGIN SOLUTION Without a cache run the whole sequence each step; with one, prefill the prompt, then feed only the newest token.
    if max_new_tokens <= 0:
        return idx
    if not use_cache:
        for _ in range(max_new_tokens):
            next_token = model(idx)[:, -1].argmax(dim=-1, keepdim=True)
            idx = torch.cat([idx, next_token], dim=1)
        return idx
    first = model.blocks[0].attn
    cache = KVCache(len(model.blocks), idx.shape[0], first.num_heads, idx.shape[1] + max_new_tokens,
                    first.head_dim, dtype=model.lm_head.weight.dtype, device=idx.device)
    logits = model(idx, kv_cache=cache)
    for step in range(max_new_tokens):
        next_token = logits[:, -1].argmax(dim=-1, keepdim=True)
        idx = torch.cat([idx, next_token], dim=1)
        if step + 1 < max_new_tokens:
            logits = model(next_token, kv_cache=cache)
    return idx
    # END SOLUTION
