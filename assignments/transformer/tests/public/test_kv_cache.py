"""Public tests: the KV cache (kv_cache.py) and cached decoding."""
import pytest
import torch
from gradescope_utils.autograder_utils.decorators import weight

from autograder.testing import expect_student_error
from kv_cache_helpers import check_cached_logits, check_same_tokens, exact, length, storage, update
from suite_helpers import randn

pytestmark = pytest.mark.part("kv_cache")


@weight(1.5)
def test_update_appends(student):
    """update appends after the stored tokens and returns everything written so far, in order"""
    cache = student.kv_cache.KVCache(2, 1, 4, 16, 8)
    k1, v1 = randn(1, 4, 3, 8, seed=1), randn(1, 4, 3, 8, seed=2)
    k2, v2 = randn(1, 4, 1, 8, seed=3), randn(1, 4, 1, 8, seed=4)
    k_all, v_all = update(cache, 0, k1, v1, stored=3)
    exact(k_all, k1, "k_all after the first update (3 tokens) of layer 0")
    exact(v_all, v1, "v_all after the first update (3 tokens) of layer 0")
    k_all, v_all = update(cache, 0, k2, v2, stored=4)
    exact(k_all, torch.cat([k1, k2], dim=2), "k_all after storing 3 then 1 token(s) in layer 0 (old ones first)")
    exact(v_all, torch.cat([v1, v2], dim=2), "v_all after storing 3 then 1 token(s) in layer 0 (old ones first)")
    length(cache, 0, 4, "after storing 3 then 1 token(s) in layer 0")
    length(cache, 1, 0, "when only layer 0 was written")


@weight(1)
def test_storage_preallocated(student):
    """update writes into the preallocated k/v storage: it never moves or grows"""
    cache = student.kv_cache.KVCache(2, 1, 4, 16, 8)
    shape = (2, 1, 4, 16, 8)
    ptrs = storage(cache, "after construction", shape)
    for step, t in enumerate((3, 1, 1)):
        update(cache, 0, randn(1, 4, t, 8, seed=10 + step), randn(1, 4, t, 8, seed=20 + step), stored=3 + step)
    if storage(cache, "after three updates", shape) != ptrs:
        raise AssertionError("KVCache.k / KVCache.v moved to new memory during update (their data_ptr() "
                             "changed): write into the preallocated storage in place (e.g. "
                             "self.k[layer, :, :, start:end] = k_new) instead of building new tensors.")


@weight(1)
def test_overflow_raises(student):
    """exactly max_seq_len tokens fit; ValueError when an update would exceed max_seq_len"""
    cache = student.kv_cache.KVCache(1, 1, 2, 4, 8)
    update(cache, 0, randn(1, 2, 3, 8, seed=5), randn(1, 2, 3, 8, seed=6), stored=3)
    expect_student_error(lambda: cache.update(0, randn(1, 2, 2, 8, seed=7), randn(1, 2, 2, 8, seed=8)),
                         "ValueError", "KVCache(max_seq_len=4) holding 3 tokens, update with 2 more")
    update(cache, 0, randn(1, 2, 1, 8, seed=9), randn(1, 2, 1, 8, seed=10), stored=4)  # the last free position
    length(cache, 0, 4, "after filling KVCache(max_seq_len=4) exactly (3 tokens, then 1)")
    expect_student_error(lambda: cache.update(0, randn(1, 2, 1, 8, seed=11), randn(1, 2, 1, 8, seed=12)),
                         "ValueError", "KVCache(max_seq_len=4) holding 4 tokens, update with 1 more")


@weight(0.5)
def test_reset_empties(student):
    """reset() forgets every stored token: length 0, and the next update returns only the new tokens"""
    cache = student.kv_cache.KVCache(1, 1, 2, 4, 8)
    update(cache, 0, randn(1, 2, 3, 8, seed=13), randn(1, 2, 3, 8, seed=14), stored=3)
    cache.reset()
    length(cache, 0, 0, "after reset()")
    k, v = randn(1, 2, 4, 8, seed=15), randn(1, 2, 4, 8, seed=16)
    k_all, v_all = update(cache, 0, k, v, stored=4)
    exact(k_all, k, "k_all of the first update after reset() (only the new tokens)")
    exact(v_all, v, "v_all of the first update after reset() (only the new tokens)")


@weight(0.5)
@pytest.mark.parametrize("positional", ["sinusoidal", "rope"])
def test_generate_same_tokens(student, reference, positional):
    """generate gives the same tokens with and without the cache"""
    check_same_tokens(student, reference, positional)


@weight(0.5)
@pytest.mark.parametrize("positional", ["sinusoidal", "rope"])
def test_prefill_logits_match_full_forward(student, reference, assignment, positional):
    """a 7-token prefill into an empty cache, then single tokens: all logits equal a forward without cache"""
    # float32 accumulated over three layers, in a different order than without the cache
    check_cached_logits(student, reference, positional, assignment.tolerance("grad32"), seed=31, tokens_seed=1031,
                        batch=3, seq_len=10, prefill=7, d_model=48, num_heads=4, num_layers=3, max_seq_len=16)
