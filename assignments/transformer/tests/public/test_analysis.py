"""Public tests: closed-form costs (analysis.py), each checked against a measurement on the reference.

Answers must be Python ints (the contract says -> int); a float of the right value fails.
"""
import pytest
import torch
from gradescope_utils.autograder_utils.decorators import weight

from analysis_helpers import (DTYPES, attention_flops, block_params, call_text, check_count, kv_bytes, mha_params,
                              scores_bytes)

pytestmark = pytest.mark.part("analysis")


@weight(1)
def test_mha_param_count(student, reference):
    """mha_param_count equals the number of parameters of a MultiHeadAttention"""
    for bias in (True, False):
        args = dict(d_model=64, num_heads=8, bias=bias)
        check_count(student.analysis.mha_param_count(**args), mha_params(reference, 64, 8, bias),
                    call_text("mha_param_count", **args), "parameters of MultiHeadAttention(64, 8, bias=...)")


@weight(1)
def test_block_param_count(student, reference):
    """block_param_count equals the number of parameters of a TransformerBlock (default d_ff, biases)"""
    check_count(student.analysis.block_param_count(32, 4), block_params(reference, 32, 4, None, True),
                "block_param_count(d_model=32, num_heads=4)", "parameters of TransformerBlock(32, 4)")


@weight(1)
def test_attention_matmul_flops(student, reference):
    """attention_matmul_flops equals the measured FLOPs of QK^T and AV (a multiply-add counts 2)"""
    check_count(student.analysis.attention_matmul_flops(2, 16, 64), attention_flops(reference, 2, 16, 64, 4),
                "attention_matmul_flops(batch=2, seq_len=16, d_model=64)",
                "FlopCounterMode on scaled_dot_product_attention with q, k, v of shape (2, 4, 16, 16)")


@weight(1)
def test_memory_bytes(student, reference):
    """kv_cache_bytes and attention_scores_bytes equal the bytes of the tensors they describe"""
    args = dict(num_layers=2, batch=3, num_heads=4, seq_len=10, head_dim=8, bytes_per_elem=DTYPES[torch.float32])
    check_count(student.analysis.kv_cache_bytes(**args), kv_bytes(reference, 2, 3, 4, 10, 8, torch.float32),
                call_text("kv_cache_bytes", **args), "bytes of the k and v storage of a float32 KVCache that size")
    args = dict(batch=3, num_heads=4, seq_len=10, bytes_per_elem=DTYPES[torch.float16])
    check_count(student.analysis.attention_scores_bytes(**args), scores_bytes(3, 4, 10, torch.float16),
                call_text("attention_scores_bytes", **args), "bytes of a float16 (3, 4, 10, 10) score tensor")
