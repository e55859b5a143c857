"""Closed-form costs of the model: parameters, FLOPs and memory.

Conventions: a multiply-add counts as 2 FLOPs (as torch.utils.flop_counter does) and only
matmuls count; bytes are tensor elements times bytes per element.
"""
from __future__ import annotations


def mha_param_count(d_model: int, num_heads: int, bias: bool = True) -> int:
    """Four d_model x d_model projections (q, k, v, out), plus their biases."""
    # BEGIN SOLUTION Does the number of heads change the shape of any projection? Count weights, then biases.
    return 4 * d_model * d_model + (4 * d_model if bias else 0)
    # END SOLUTION


def block_param_count(d_model: int, num_heads: int, d_ff: int | None = None, bias: bool = True) -> int:
    """Attention + feed-forward (+ biases) + two LayerNorms (weight and bias each, always)."""
    # BEGIN SOLUTION Reuse mha_param_count, then count the FFN's two Linear layers and what a LayerNorm holds.
    d_ff = 4 * d_model if d_ff is None else d_ff
    ffn = 2 * d_model * d_ff + ((d_ff + d_model) if bias else 0)
    return mha_param_count(d_model, num_heads, bias) + ffn + 2 * 2 * d_model
    # END SOLUTION


def attention_matmul_flops(batch: int, seq_len: int, d_model: int) -> int:
    """FLOPs of QK^T and of (weights @ V) over all heads, without causal savings."""
    # BEGIN SOLUTION Write the shapes of QK^T for one head, then sum over heads: what does H x D add up to?
    return 2 * (2 * batch * seq_len * seq_len * d_model)
    # END SOLUTION


def block_forward_flops(batch: int, seq_len: int, d_model: int, num_heads: int, d_ff: int | None = None) -> int:
    """Matmul FLOPs of one block's forward: 4 projections, the two attention matmuls, the FFN."""
    # BEGIN SOLUTION List every matmul in the block; an (m x k) @ (k x n) matmul is 2*m*k*n FLOPs.
    d_ff = 4 * d_model if d_ff is None else d_ff
    tokens = batch * seq_len
    projections = 4 * 2 * tokens * d_model * d_model
    ffn = 2 * 2 * tokens * d_model * d_ff
    return projections + attention_matmul_flops(batch, seq_len, d_model) + ffn
    # END SOLUTION


def kv_cache_bytes(num_layers: int, batch: int, num_heads: int, seq_len: int, head_dim: int,
                   bytes_per_elem: int) -> int:
    """Bytes to store keys and values for seq_len tokens in every layer."""
    # BEGIN SOLUTION What is the shape of the keys one layer stores, and what else is stored beside them?
    return 2 * num_layers * batch * num_heads * seq_len * head_dim * bytes_per_elem
    # END SOLUTION


def attention_scores_bytes(batch: int, num_heads: int, seq_len: int, bytes_per_elem: int) -> int:
    """Bytes of one materialised (batch, num_heads, seq_len, seq_len) score matrix."""
    # BEGIN SOLUTION
    return batch * num_heads * seq_len * seq_len * bytes_per_elem
    # END SOLUTION
