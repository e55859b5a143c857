"""Hidden tests: positional encodings (posenc.py).

Oracles are the contract's formulas computed in float64; tolerances admit float32 and float64 tables.
"""
import pytest
import torch
from gradescope_utils.autograder_utils.decorators import weight

from autograder.testing import assert_close, check_tensor
from posenc_helpers import ROPE_ATOL, SINUSOIDAL_FORMULA, check_no_state, learned_with_weight, table_atol
from posenc_oracles import alibi_bias, alibi_slopes, rope, sinusoidal_table
from suite_helpers import randn

pytestmark = pytest.mark.part("posenc")


def long_positions(n: int, high: int, seed: int) -> torch.Tensor:
    """n distinct positions in [0, high), shuffled, always including 0 and high - 1."""
    perm = torch.randperm(high - 2, generator=torch.Generator().manual_seed(seed))[: n - 2] + 1
    pos = torch.cat((perm, torch.tensor([0, high - 1])))
    return pos[torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))]


@weight(1)
def test_sinusoidal_long_table(student):
    """sinusoidal_encoding matches the formula over 5000 positions and for d not a power of two"""
    for n, d in ((5000, 128), (50, 6)):
        assert_close(student.posenc.sinusoidal_encoding(n, d), sinusoidal_table(n, d),
                     f"sinusoidal_encoding({n}, {d}) vs {SINUSOIDAL_FORMULA}", atol=table_atol(n), rtol=0,
                     check_dtype=False)


@weight(1)
def test_sinusoidal_module_positions(student):
    """SinusoidalPositionalEncoding adds PE[positions] for explicit positions far apart, after a shorter call"""
    pe = student.posenc.SinusoidalPositionalEncoding(24, 512)
    check_no_state(pe, "SinusoidalPositionalEncoding(24, 512)")
    table = sinusoidal_table(512, 24)
    x = randn(2, 5, 24, seed=20)
    assert_close(pe(x), (x.double() + table[:5]).float(),
                 "SinusoidalPositionalEncoding(24, 512)(x) with default positions, x of shape (2, 5, 24)",
                 atol=table_atol(512), rtol=0)
    x = randn(2, 9, 24, seed=21)
    pos = long_positions(9, 512, seed=22)
    assert_close(pe(x, pos), (x.double() + table[pos]).float(),
                 "SinusoidalPositionalEncoding(24, 512)(x, positions) with positions of shape (9,) spread over "
                 "0..511 (after a call with 5 tokens)", atol=table_atol(512), rtol=0)


@weight(0.5)
def test_learned_positions(student):
    """LearnedPositionalEmbedding adds weight[positions] for explicit positions"""
    w = randn(64, 12, seed=23)
    m = learned_with_weight(student, 64, 12, w)
    x = randn(2, 8, 12, seed=24)
    pos = long_positions(8, 64, seed=25)
    assert_close(m(x, pos), x + w[pos],
                 "LearnedPositionalEmbedding(64, 12)(x, positions) with positions of shape (8,): x + weight[positions]",
                 atol=1e-6, rtol=1e-6)


@weight(0.5)
def test_batched_positions(student):
    """absolute encodings accept per-sequence positions of shape (B, L)"""
    pos = torch.stack([long_positions(6, 256, seed=26), long_positions(6, 256, seed=27)])
    x = randn(2, 6, 16, seed=28)
    pe = student.posenc.SinusoidalPositionalEncoding(16, 256)
    assert_close(pe(x, pos), (x.double() + sinusoidal_table(256, 16)[pos]).float(),
                 "SinusoidalPositionalEncoding(16, 256)(x, positions), positions of shape (2, 6): x + PE[positions]",
                 atol=table_atol(256), rtol=0)
    w = randn(256, 16, seed=29)
    m = learned_with_weight(student, 256, 16, w)
    assert_close(m(x, pos), x + w[pos],
                 "LearnedPositionalEmbedding(256, 16)(x, positions), positions of shape (2, 6): x + weight[positions]",
                 atol=1e-6, rtol=1e-6)


@weight(1)
def test_rope_broadcast_positions_and_theta(student):
    """RotaryEmbedding accepts (B, 1, L) positions and a custom theta"""
    r = student.posenc.RotaryEmbedding(16, 256)
    x = randn(2, 3, 10, 16, seed=30)
    pos = torch.stack([long_positions(10, 256, seed=31), long_positions(10, 256, seed=32)]).unsqueeze(1)
    assert_close(r(x, pos), rope(x, pos).float(),
                 "RotaryEmbedding(16, 256)(x, positions) for x of shape (2, 3, 10, 16), positions of shape (2, 1, 10)",
                 atol=ROPE_ATOL, rtol=0)
    r = student.posenc.RotaryEmbedding(8, 128, theta=100.0)
    x = randn(7, 8, seed=33)
    pos = long_positions(7, 128, seed=34)
    assert_close(r(x, pos), rope(x, pos, theta=100.0).float(),
                 "RotaryEmbedding(8, 128, theta=100.0)(x, positions) for x of shape (7, 8): angle p * theta^(-2i/D)",
                 atol=ROPE_ATOL, rtol=0)


@weight(0.5)
def test_rope_keeps_pair_norms(student):
    """RoPE is a rotation of each adjacent pair: the norm of (x[2i], x[2i+1]) is unchanged"""
    x = randn(4, 20, 32, seed=35)
    y = student.posenc.RotaryEmbedding(32, 256)(x, long_positions(20, 256, seed=36))
    check_tensor(y, "RotaryEmbedding output", shape=(4, 20, 32), dtype=torch.float32)
    assert_close(y[..., 0::2].hypot(y[..., 1::2]), x[..., 0::2].hypot(x[..., 1::2]),
                 "norms of the adjacent pairs (y[2i], y[2i+1]) of the output vs those of the input "
                 "(each pair must be rotated, pairs are adjacent, not split halves)", atol=1e-5, rtol=1e-5)


@weight(1)
def test_rope_relative_positions(student):
    """<rope(q, m), rope(k, n)> depends only on m - n"""
    r = student.posenc.RotaryEmbedding(32, 256)
    q, k = randn(32, seed=37), randn(32, seed=38)
    for diff in (0, 1, 5, -17, 100):
        ms = torch.tensor([max(diff, 0) + n for n in (0, 3, 40, 111, 150)])
        ns = ms - diff
        n = len(ms)
        qs, ks = r(q.expand(n, 32).contiguous(), ms), r(k.expand(n, 32).contiguous(), ns)
        check_tensor(qs, "RotaryEmbedding output", shape=(n, 32), dtype=torch.float32)
        check_tensor(ks, "RotaryEmbedding output", shape=(n, 32), dtype=torch.float32)
        dots = (qs.double() * ks.double()).sum(-1)
        worst = int((dots - dots[0]).abs().argmax())
        if (dots - dots[0]).abs().max() > 2e-3:
            raise AssertionError(
                f"RoPE: <rope(q, m), rope(k, n)> must depend only on m - n, but for m - n = {diff} it is "
                f"{float(dots[0]):.6g} at (m, n) = ({int(ms[0])}, {int(ns[0])}) and {float(dots[worst]):.6g} at "
                f"(m, n) = ({int(ms[worst])}, {int(ns[worst])}) (head_dim 32).")


@weight(0.5)
def test_rope_no_parameters(student):
    """RotaryEmbedding has no trainable parameters and an empty state_dict"""
    check_no_state(student.posenc.RotaryEmbedding(64, 512), "RotaryEmbedding(64, 512)")


@weight(0.5)
@pytest.mark.parametrize("num_heads", [6, 12])
def test_alibi_slopes_other_head_counts(student, num_heads):
    """alibi_slopes for a head count that is not a power of two follows the paper's interleaving rule"""
    got = student.posenc.alibi_slopes(num_heads)
    check_tensor(got, f"alibi_slopes({num_heads})", shape=(num_heads,))
    assert_close(got, alibi_slopes(num_heads),
                 f"alibi_slopes({num_heads}) vs the paper's rule: the slopes of the closest smaller power of two "
                 "n, then every other slope of 2n", atol=1e-7, rtol=1e-5, check_dtype=False)


@weight(1)
def test_alibi_bias(student):
    """alibi_bias is (num_heads, Lq, Lk) with slope_h * (j - (i + Lk - Lq)): 0 on the bottom-right diagonal"""
    for h, lq, lk in ((16, 3, 7), (6, 1, 9), (4, 5, 5)):
        got = student.posenc.alibi_bias(h, lq, lk)
        check_tensor(got, f"alibi_bias({h}, {lq}, {lk})", shape=(h, lq, lk))
        assert_close(got, alibi_bias(h, lq, lk),
                     f"alibi_bias({h}, {lq}, {lk}) vs slope_h * (j - (i + Lk - Lq)) with alibi_slopes({h})",
                     atol=1e-6, rtol=1e-5, check_dtype=False)


@weight(1)
def test_positions_break_permutation_symmetry(student):
    """with positions added, permuting the tokens no longer just permutes the result"""
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(39))
    x = randn(1, 10, 16, seed=40)
    pe = student.posenc.SinusoidalPositionalEncoding(16, 64)
    y, y_perm = pe(x), pe(x[:, perm])
    for out in (y, y_perm):
        check_tensor(out, "SinusoidalPositionalEncoding output", shape=(1, 10, 16), dtype=torch.float32)
    if (y_perm - y[:, perm]).abs().max() < 1e-2:
        raise AssertionError("SinusoidalPositionalEncoding: permuting the input tokens only permutes the output; "
                             "the encoding must depend on the position (slot), not on the token.")

    r = student.posenc.RotaryEmbedding(16, 64)
    q, k = randn(1, 10, 16, seed=41), randn(1, 10, 16, seed=42)
    pos = torch.arange(10)

    def scores(q, k):
        rq, rk = r(q, pos), r(k, pos)
        for out in (rq, rk):
            check_tensor(out, "RotaryEmbedding output", shape=(1, 10, 16), dtype=torch.float32)
        return rq @ rk.transpose(-2, -1)

    s, s_perm = scores(q, k), scores(q[:, perm], k[:, perm])
    if (s_perm - s[:, perm][:, :, perm]).abs().max() < 1e-2:
        raise AssertionError("RotaryEmbedding: the scores rope(q) @ rope(k)^T of permuted tokens are just the permuted "
                             "scores; the rotation must depend on the positions passed in.")
