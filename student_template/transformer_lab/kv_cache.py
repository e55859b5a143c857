"""A preallocated key/value cache for autoregressive decoding.

Without a cache, generating token t recomputes keys and values for all t previous tokens, so a
sequence of n tokens costs O(n^2) projections. With it, each step projects only the new token
and attends over the stored keys: the storage is allocated once and filled in place.
"""
from __future__ import annotations

import torch


class KVCache:
    """Keys and values per layer, shape (num_layers, B, H, max_seq_len, D), allocated once."""

    def __init__(
        self,
        num_layers: int,
        batch_size: int,
        num_heads: int,
        max_seq_len: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> None:
        raise NotImplementedError('KVCache.__init__: Allocate self.k and self.v with torch.zeros once, and keep one length counter per layer.')

    def update(self, layer: int, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k_new/v_new (B, H, T, D) after the stored tokens; return views of everything stored."""
        raise NotImplementedError('KVCache.update: Check the room left (ValueError), copy into the slice [start, start + T) in place, return views up to the new length.')

    def length(self, layer: int = 0) -> int:
        """Number of tokens stored for ``layer``."""
        raise NotImplementedError('KVCache.length: implement this part')

    def reset(self) -> None:
        """Forget every stored token (the storage is kept)."""
        raise NotImplementedError('KVCache.reset: implement this part')
