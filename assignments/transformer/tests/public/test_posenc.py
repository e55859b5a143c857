"""Public tests: positional encodings (posenc.py).

Oracles are the contract's formulas computed in float64 (posenc_oracles, grader side: the kit replays their
recorded values through ``oracle``); tolerances admit float32 and float64 tables.
"""
import pytest
import torch
from gradescope_utils.autograder_utils.decorators import weight

from autograder.testing import oracle
from autograder.testing import assert_close, check_tensor
from posenc_helpers import ROPE_ATOL, SINUSOIDAL_FORMULA, check_no_state, learned_with_weight, table_atol
from suite_helpers import randn

pytestmark = pytest.mark.part("posenc")


@weight(1)
def test_sinusoidal_table(student, reference):
    """sinusoidal_encoding: sin on even columns, cos on odd columns, frequencies 10000^(-2i/d)"""
    table = oracle(reference, "posenc_oracles.sinusoidal_table", 128, 64)
    assert_close(student.posenc.sinusoidal_encoding(128, 64), table,
                 f"sinusoidal_encoding(128, 64) vs {SINUSOIDAL_FORMULA}", atol=table_atol(128), rtol=0,
                 check_dtype=False)


@weight(0.75)
def test_sinusoidal_module(student, reference):
    """SinusoidalPositionalEncoding has no parameters and returns x + PE[arange(L)]"""
    pe = student.posenc.SinusoidalPositionalEncoding(32, 128)
    check_no_state(pe, "SinusoidalPositionalEncoding(32, 128)")
    x = randn(2, 10, 32, seed=1)
    table = oracle(reference, "posenc_oracles.sinusoidal_table", 10, 32)
    assert_close(pe(x), (x.double() + table).float(),
                 "SinusoidalPositionalEncoding(32, 128)(x) for x of shape (2, 10, 32): x + PE[0..9]",
                 atol=table_atol(128), rtol=0)


@weight(0.75)
def test_learned_embedding(student):
    """LearnedPositionalEmbedding has one parameter weight (max_len, d) and returns x + weight[positions]"""
    w = randn(20, 16, seed=2)
    m = learned_with_weight(student, 20, 16, w)
    x = randn(3, 7, 16, seed=3)
    assert_close(m(x), x + w[:7], "LearnedPositionalEmbedding(20, 16)(x) for x of shape (3, 7, 16): x + weight[0..6]",
                 atol=1e-6, rtol=1e-6)


@weight(1)
def test_rope_formula(student, reference):
    """RotaryEmbedding rotates each adjacent pair (x[2i], x[2i+1]) by p * theta^(-2i/D)"""
    r = student.posenc.RotaryEmbedding(16, 256)
    x = randn(2, 3, 12, 16, seed=4)
    positions = torch.randperm(256, generator=torch.Generator().manual_seed(5))[:12]
    assert_close(r(x, positions), oracle(reference, "posenc_oracles.rope", x, positions).float(),
                 "RotaryEmbedding(16, 256)(x, positions) for x of shape (2, 3, 12, 16), positions of shape (12,)",
                 atol=ROPE_ATOL, rtol=0)


@weight(0.5)
def test_alibi_slopes_power_of_two(student, reference):
    """alibi_slopes(8) is the geometric sequence 2^(-8/n * (h+1))"""
    got = student.posenc.alibi_slopes(8)
    check_tensor(got, "alibi_slopes(8)", shape=(8,))
    assert_close(got, oracle(reference, "posenc_oracles.alibi_slopes", 8),
                 "alibi_slopes(8) vs 2^(-8/8 * (h+1)) = 1/2, 1/4, ..., 1/256", atol=1e-7, rtol=1e-5, check_dtype=False)


@weight(0.5)
def test_alibi_slopes_three_heads(student, reference):
    """alibi_slopes(3), not a power of two: the slopes of 2 heads, then every other slope of 4"""
    got = student.posenc.alibi_slopes(3)
    check_tensor(got, "alibi_slopes(3)", shape=(3,))
    assert_close(got, oracle(reference, "posenc_oracles.alibi_slopes", 3),
                 "alibi_slopes(3) vs the paper's rule: alibi_slopes(2) = 1/16, 1/256, then every other slope of "
                 "alibi_slopes(4) = 1/4", atol=1e-7, rtol=1e-5, check_dtype=False)


@weight(1)
def test_alibi_bias_decode(student, reference):
    """alibi_bias(4, 2, 5): slope_h * (j - (i + Lk - Lq)), 0 where a query meets its own key (bottom-right)"""
    got = student.posenc.alibi_bias(4, 2, 5)
    check_tensor(got, "alibi_bias(4, 2, 5)", shape=(4, 2, 5))
    assert_close(got, oracle(reference, "posenc_oracles.alibi_bias", 4, 2, 5),
                 "alibi_bias(4, 2, 5) vs slope_h * (j - (i + Lk - Lq)) with alibi_slopes(4): query i is at "
                 "position i + Lk - Lq", atol=1e-6, rtol=1e-5, check_dtype=False)


@weight(0.5)
def test_explicit_positions(student, reference):
    """explicit positions (e.g. continuing after a KV cache) pick PE[positions] and weight[positions], not 0..L-1"""
    positions = torch.tensor([5, 6, 7])
    x = randn(2, 3, 16, seed=17)
    pe = student.posenc.SinusoidalPositionalEncoding(16, 32)
    table = oracle(reference, "posenc_oracles.sinusoidal_table", 8, 16)
    assert_close(pe(x, positions), (x.double() + table[5:8]).float(),
                 "SinusoidalPositionalEncoding(16, 32)(x, positions=[5, 6, 7]): x + PE[5..7]",
                 atol=table_atol(32), rtol=0)
    w = randn(12, 16, seed=18)
    m = learned_with_weight(student, 12, 16, w)
    assert_close(m(x, positions), x + w[5:8],
                 "LearnedPositionalEmbedding(12, 16)(x, positions=[5, 6, 7]): x + weight[5..7]", atol=1e-6, rtol=1e-6)
