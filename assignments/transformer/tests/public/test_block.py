"""Public tests: the Transformer block (block.py)."""
import pytest
from gradescope_utils.autograder_utils.decorators import weight

import torch

from autograder.testing import assert_close
from block_helpers import BLOCK_LAYOUT, block_pair, check_state_dict_layout
from suite_helpers import randn

pytestmark = pytest.mark.part("block")


@weight(0.8)
def test_parameter_names_and_shapes(student, reference):
    """exactly the parameters of attn, ffn (d_ff = 4 d_model), norm1 and norm2, with the reference's shapes"""
    check_state_dict_layout(student.block.TransformerBlock(32, 4), reference.block.TransformerBlock(32, 4),
                            "TransformerBlock(32, 4)", BLOCK_LAYOUT)


@weight(0.8)
def test_pre_ln_matches_reference(student, reference, assignment):
    """pre-LN (norm_first=True): with the reference's weights loaded, the output matches"""
    mine, ref = block_pair(student, reference, 32, 4, seed=1, norm_first=True)
    x = randn(2, 7, 32, seed=2)
    assert_close(mine(x), ref(x), "pre-LN TransformerBlock(32, 4) output (x + attn(norm1(x)), then + ffn(norm2(x)))",
                 assignment.tolerance("float32"))


@weight(0.8)
def test_post_ln_matches_reference(student, reference, assignment):
    """post-LN (norm_first=False): with the reference's weights loaded, the output matches"""
    mine, ref = block_pair(student, reference, 32, 4, seed=3, norm_first=False)
    x = randn(2, 7, 32, seed=4)
    assert_close(mine(x), ref(x), "post-LN TransformerBlock(32, 4) output (norm1(x + attn(x)), then norm2(x + ffn(x)))",
                 assignment.tolerance("float32"))


@weight(0.8)
def test_causal_matches_reference(student, reference, assignment):
    """is_causal=True reaches the attention: the output matches"""
    mine, ref = block_pair(student, reference, 24, 3, seed=5)
    x = randn(2, 6, 24, seed=6)
    assert_close(mine(x, is_causal=True), ref(x, is_causal=True),
                 "TransformerBlock(24, 3) output with is_causal=True", assignment.tolerance("float32"))


@weight(0.8)
def test_each_norm_in_its_place(student, reference, assignment):
    """pre-LN with LayerNorms of different weights: norm1 before the attention, norm2 before the feed-forward"""
    mine, ref = block_pair(student, reference, 32, 4, seed=7, norm_first=True)
    # Fresh LayerNorms are all identical (weight 1, bias 0): give each its own, in both blocks.
    sd = {name: t.clone() for name, t in ref.state_dict().items()}
    g = torch.Generator().manual_seed(8)
    for name in ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"):
        noise = torch.randn(sd[name].shape, generator=g, dtype=torch.float64).to(sd[name].dtype)
        sd[name] = (1.0 + 0.5 * noise) if name.endswith("weight") else 0.5 * noise
    ref.load_state_dict(sd)
    mine.load_state_dict(sd)
    x = randn(2, 7, 32, seed=9)
    assert_close(mine(x), ref(x), "pre-LN TransformerBlock(32, 4) output with distinct norm1/norm2 weights "
                 "(x + attn(norm1(x)), then + ffn(norm2(x)): each sub-layer has its own LayerNorm)",
                 assignment.tolerance("float32"))
