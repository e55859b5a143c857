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
        # BEGIN SOLUTION Allocate self.k and self.v with torch.zeros once, and keep one length counter per layer.
        shape = (num_layers, batch_size, num_heads, max_seq_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_seq_len = max_seq_len
        self._lengths = [0] * num_layers
        # END SOLUTION

    def update(self, layer: int, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k_new/v_new (B, H, T, D) after the stored tokens; return views of everything stored."""
        # BEGIN SOLUTION Check the room left (ValueError), copy into the slice [start, start + T) in place, return views up to the new length.
        start = self._lengths[layer]
        end = start + k_new.shape[-2]
        if end > self.max_seq_len:
            raise ValueError(f"KV cache full: {start} + {k_new.shape[-2]} tokens > max_seq_len={self.max_seq_len}")
        self.k[layer, :, :, start:end] = k_new
        self.v[layer, :, :, start:end] = v_new
        self._lengths[layer] = end
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]
        # END SOLUTION

    def length(self, layer: int = 0) -> int:
        """Number of tokens stored for ``layer``."""
        # BEGIN SOLUTION
        return self._lengths[layer]
        # END SOLUTION

    def reset(self) -> None:
        """Forget every stored token (the storage is kept)."""
        # BEGIN SOLUTION
        self._lengths = [0] * len(self._lengths)
        # END SOLUTION
