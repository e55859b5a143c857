"""Closed-form costs of the model: parameters, FLOPs and memory.

Conventions: a multiply-add counts as 2 FLOPs (as torch.utils.flop_counter does) and only
matmuls count; bytes are tensor elements times bytes per element.
"""
from __future__ import annotations


def mha_param_count(d_model: int, num_heads: int, bias: bool = True) -> int:
    """Four d_model x d_model projections (q, k, v, out), plus their biases."""
    raise NotImplementedError('mha_param_count: The head count does not change the total: each projection is d_model x d_model.')


def block_param_count(d_model: int, num_heads: int, d_ff: int | None = None, bias: bool = True) -> int:
    """Attention + feed-forward (+ biases) + two LayerNorms (weight and bias each, always)."""
    raise NotImplementedError('block_param_count: MHA + fc1 (d_model x d_ff) + fc2 (d_ff x d_model) + biases + 2 LayerNorms of 2 * d_model.')


def attention_matmul_flops(batch: int, seq_len: int, d_model: int) -> int:
    """FLOPs of QK^T and of (weights @ V) over all heads, without causal savings."""
    raise NotImplementedError('attention_matmul_flops: Each of the two matmuls is batch * seq_len * seq_len * d_model multiply-adds in total over heads.')


def block_forward_flops(batch: int, seq_len: int, d_model: int, num_heads: int, d_ff: int | None = None) -> int:
    """Matmul FLOPs of one block's forward: 4 projections, the two attention matmuls, the FFN."""
    raise NotImplementedError('block_forward_flops: 4 projections of (batch * seq_len) x d_model x d_model, attention_matmul_flops, and fc1 + fc2.')


def kv_cache_bytes(num_layers: int, batch: int, num_heads: int, seq_len: int, head_dim: int,
                   bytes_per_elem: int) -> int:
    """Bytes to store keys and values for seq_len tokens in every layer."""
    raise NotImplementedError('kv_cache_bytes: Two tensors (k and v) of num_layers * batch * num_heads * seq_len * head_dim elements.')


def attention_scores_bytes(batch: int, num_heads: int, seq_len: int, bytes_per_elem: int) -> int:
    """Bytes of one materialised (batch, num_heads, seq_len, seq_len) score matrix."""
    raise NotImplementedError('attention_scores_bytes: implement this part')
