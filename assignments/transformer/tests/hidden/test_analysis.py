"""Hidden tests: closed-form costs (analysis.py) over seeded random configurations, each checked
against a measurement on the reference (see analysis_helpers). Answers must be Python ints."""
import pytest
from gradescope_utils.autograder_utils.decorators import weight

from analysis_helpers import (DTYPES, attention_flops, block_flops, block_params, call_text, check_count, dtype_name,
                              kv_bytes, mha_params, random_configs, scores_bytes)

pytestmark = pytest.mark.part("analysis")


@weight(0.5)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_mha_param_count_random(student, reference, bias):
    """mha_param_count equals the measured parameter count over random sizes"""
    for c in random_configs(100 + bias, 5):
        args = dict(d_model=c["d_model"], num_heads=c["num_heads"], bias=bias)
        check_count(student.analysis.mha_param_count(**args), mha_params(reference, **args),
                    call_text("mha_param_count", **args), "parameters of a MultiHeadAttention built that way")


@weight(0.5)
@pytest.mark.parametrize("d_ff_given,bias", [(False, True), (True, True), (True, False)],
                         ids=["default-d_ff", "given-d_ff", "no-bias"])
def test_block_param_count_random(student, reference, d_ff_given, bias):
    """block_param_count equals the measured parameter count (LayerNorms included) over random sizes"""
    for c in random_configs(200 + 2 * d_ff_given + bias, 5):
        args = dict(d_model=c["d_model"], num_heads=c["num_heads"], d_ff=c["d_ff"] if d_ff_given else None, bias=bias)
        check_count(student.analysis.block_param_count(**args), block_params(reference, **args),
                    call_text("block_param_count", **args), "parameters of a TransformerBlock built that way")


@weight(1)
def test_attention_matmul_flops_random(student, reference):
    """attention_matmul_flops equals the measured FLOPs of QK^T and AV over random sizes"""
    for c in random_configs(300, 6):
        b, l, d, h = c["batch"], c["seq_len"], c["d_model"], c["num_heads"]
        check_count(student.analysis.attention_matmul_flops(b, l, d), attention_flops(reference, b, l, d, h),
                    call_text("attention_matmul_flops", batch=b, seq_len=l, d_model=d),
                    f"FlopCounterMode on scaled_dot_product_attention with q, k, v of shape {(b, h, l, d // h)}")


@weight(0.75)
@pytest.mark.parametrize("d_ff_given", [False, True], ids=["default-d_ff", "given-d_ff"])
def test_block_forward_flops_random(student, reference, d_ff_given):
    """block_forward_flops equals the measured matmul FLOPs of a TransformerBlock forward over random sizes"""
    for c in random_configs(400 + d_ff_given, 5):
        args = dict(batch=c["batch"], seq_len=c["seq_len"], d_model=c["d_model"], num_heads=c["num_heads"],
                    d_ff=c["d_ff"] if d_ff_given else None)
        check_count(student.analysis.block_forward_flops(**args), block_flops(reference, **args),
                    call_text("block_forward_flops", **args),
                    "FlopCounterMode on a TransformerBlock forward (projections, QK^T, AV, feed-forward)")


@weight(0.5)
def test_kv_cache_bytes_random(student, reference):
    """kv_cache_bytes equals the bytes of a KVCache's k and v storage over random sizes and dtypes"""
    for c in random_configs(500, 6):
        args = dict(num_layers=c["num_layers"], batch=c["batch"], num_heads=c["num_heads"], seq_len=c["seq_len"],
                    head_dim=c["head_dim"], bytes_per_elem=DTYPES[c["dtype"]])
        want = kv_bytes(reference, c["num_layers"], c["batch"], c["num_heads"], c["seq_len"], c["head_dim"], c["dtype"])
        check_count(student.analysis.kv_cache_bytes(**args), want, call_text("kv_cache_bytes", **args),
                    f"bytes of the k and v storage of a {dtype_name(c['dtype'])} KVCache that size")


@weight(0.5)
def test_attention_scores_bytes_random(student):
    """attention_scores_bytes equals the bytes of a materialised score tensor over random sizes and dtypes"""
    for c in random_configs(600, 6):
        args = dict(batch=c["batch"], num_heads=c["num_heads"], seq_len=c["seq_len"], bytes_per_elem=DTYPES[c["dtype"]])
        want = scores_bytes(c["batch"], c["num_heads"], c["seq_len"], c["dtype"])
        check_count(student.analysis.attention_scores_bytes(**args), want, call_text("attention_scores_bytes", **args),
                    f"bytes of a {dtype_name(c['dtype'])} (batch, num_heads, seq_len, seq_len) score tensor")
