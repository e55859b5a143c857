"""Closed-form costs of the model: parameters, FLOPs and memory.

Conventions: a multiply-add counts as 2 FLOPs (as torch.utils.flop_counter does) and only
matmuls count; bytes are tensor elements times bytes per element.
"""
from __future__ import annotations


def mha_param_count(d_model: int, num_heads: int, bias: bool = True) -> int:
    """Four d_model x d_model projections (q, k, v, out), plus their biases."""
    raise NotImplementedError('mha_param_count: Does the number of heads change the shape of any projection? Count weights, then biases.')


def block_param_count(d_model: int, num_heads: int, d_ff: int | None = None, bias: bool = True) -> int:
    """Attention + feed-forward (+ biases) + two LayerNorms (weight and bias each, always)."""
    raise NotImplementedError("block_param_count: Reuse mha_param_count, then count the FFN's two Linear layers and what a LayerNorm holds.")


def attention_matmul_flops(batch: int, seq_len: int, d_model: int) -> int:
    """FLOPs of QK^T and of (weights @ V) over all heads, without causal savings."""
    raise NotImplementedError('attention_matmul_flops: Write the shapes of QK^T for one head, then sum over heads: what does H x D add up to?')


def block_forward_flops(batch: int, seq_len: int, d_model: int, num_heads: int, d_ff: int | None = None) -> int:
    """Matmul FLOPs of one block's forward: 4 projections, the two attention matmuls, the FFN."""
    raise NotImplementedError('block_forward_flops: List every matmul in the block; an (m x k) @ (k x n) matmul is 2*m*k*n FLOPs.')


def kv_cache_bytes(num_layers: int, batch: int, num_heads: int, seq_len: int, head_dim: int,
                   bytes_per_elem: int) -> int:
    """Bytes to store keys and values for seq_len tokens in every layer."""
    raise NotImplementedError('kv_cache_bytes: What is the shape of the keys one layer stores, and what else is stored beside them?')


def attention_scores_bytes(batch: int, num_heads: int, seq_len: int, bytes_per_elem: int) -> int:
    """Bytes of one materialised (batch, num_heads, seq_len, seq_len) score matrix."""
    raise NotImplementedError('attention_scores_bytes: implement this part')
