"""Hidden tests: the KV cache (kv_cache.py) and cached decoding."""
import pytest
import torch
from gradescope_utils.autograder_utils.decorators import weight

from autograder.testing import fetch
from autograder.testing import (TimedCall, best_measurement, check_tensor, expect_student_error,
                                time_alternating)
from kv_cache_helpers import (POSITIONAL, check_cached_logits, check_same_tokens, exact, generated, length,
                              seeded_lm, storage, tokens, update)
from suite_helpers import randn

pytestmark = pytest.mark.part("kv_cache")


def write_schedule(cache, schedule, b, h, d, dtype=torch.float32, seed=0):
    """Apply (layer, T) updates; check each return value and every layer's length; return what was written."""
    written, layers = {}, max(layer for layer, _ in schedule) + 1
    for step, (layer, t) in enumerate(schedule):
        k, v = (randn(b, h, t, d, seed=seed + 2 * step + i, dtype=dtype) for i in (0, 1))
        ks, vs = written.setdefault(layer, ([], []))
        ks.append(k)
        vs.append(v)
        n = sum(x.shape[2] for x in ks)
        k_all, v_all = update(cache, layer, k, v, stored=n)
        where = f"after update #{step + 1} (layer {layer}, {t} token(s); {n} stored in that layer)"
        exact(k_all, torch.cat(ks, dim=2), f"k_all {where}")
        exact(v_all, torch.cat(vs, dim=2), f"v_all {where}")
        for other in range(layers):
            length(cache, other, sum(x.shape[2] for x in written.get(other, ([], []))[0]),
                   f"{where}; each layer counts its own tokens")
    return {layer: (torch.cat(ks, dim=2), torch.cat(vs, dim=2)) for layer, (ks, vs) in written.items()}


@weight(1)
def test_update_appends_per_layer(student):
    """each layer appends independently: update returns that layer's tokens in order, length counts per layer"""
    cache = student.kv_cache.KVCache(3, 2, 2, 20, 4)
    write_schedule(cache, [(0, 5), (2, 2), (0, 1), (1, 3), (0, 1), (2, 4), (1, 1), (0, 1)], 2, 2, 4, seed=100)


@weight(1)
def test_storage_written_in_place(student):
    """update copies into the preallocated k/v (float64 too): same memory and shape, holding the written tokens"""
    shape = (2, 2, 3, 12, 4)
    cache = student.kv_cache.KVCache(*shape[:3], 12, 4, dtype=torch.float64)
    ptrs = storage(cache, "after construction", shape)
    written = write_schedule(cache, [(1, 4), (0, 2), (1, 1), (0, 1), (1, 1), (0, 1), (1, 1)], 2, 3, 4,
                             dtype=torch.float64, seed=200)
    if storage(cache, "after seven updates", shape) != ptrs:
        raise AssertionError("KVCache.k / KVCache.v moved to new memory during update (their data_ptr() "
                             "changed): write into the preallocated storage in place (e.g. "
                             "self.k[layer, :, :, start:end] = k_new) instead of building new tensors.")
    for name, index in (("k", 0), ("v", 1)):
        full = check_tensor(fetch(getattr(cache, name)), f"KVCache.{name}", shape=shape, dtype=torch.float64)
        for layer, pair in written.items():
            n = pair[index].shape[2]
            exact(full[layer, :, :, :n], pair[index],
                  f"KVCache.{name}[{layer}, :, :, :{n}] (the storage must hold the tokens written to layer {layer})")


@weight(0.5)
def test_reset(student):
    """reset empties every layer: lengths are 0, the next update returns only new tokens, the room is back"""
    cache = student.kv_cache.KVCache(2, 1, 2, 8, 4)
    write_schedule(cache, [(0, 5), (1, 5)], 1, 2, 4, seed=300)
    cache.reset()
    for layer in (0, 1):
        length(cache, layer, 0, "after reset()")
    k, v = randn(1, 2, 8, 4, seed=310), randn(1, 2, 8, 4, seed=311)
    k_all, v_all = update(cache, 0, k, v, stored=8)
    exact(k_all, k, "k_all of the first update after reset() (only the new tokens, max_seq_len of them)")
    exact(v_all, v, "v_all of the first update after reset() (only the new tokens, max_seq_len of them)")
    length(cache, 1, 0, "after reset() and an update of layer 0 only")


@weight(0.5)
def test_capacity(student):
    """exactly max_seq_len tokens fit in each layer; one more raises ValueError"""
    cache = student.kv_cache.KVCache(2, 1, 2, 6, 4)
    write_schedule(cache, [(0, 4), (0, 2), (1, 6)], 1, 2, 4, seed=400)
    expect_student_error(lambda: cache.update(0, randn(1, 2, 1, 4, seed=410), randn(1, 2, 1, 4, seed=411)),
                         "ValueError", "KVCache(max_seq_len=6) with layer 0 full, update with 1 more token")
    fresh = student.kv_cache.KVCache(1, 1, 2, 6, 4)
    expect_student_error(lambda: fresh.update(0, randn(1, 2, 7, 4, seed=412), randn(1, 2, 7, 4, seed=413)),
                         "ValueError", "empty KVCache(max_seq_len=6), update with 7 tokens at once")


@weight(0.5)
@pytest.mark.parametrize("positional", POSITIONAL)
def test_generate_same_tokens(student, reference, positional):
    """generate gives the same tokens with and without the cache"""
    check_same_tokens(student, reference, positional)


@weight(0.5)
@pytest.mark.parametrize("positional", POSITIONAL)
def test_cached_logits_match_full_forward(student, reference, assignment, positional):
    """prefill, then one token at a time: each step's logits equal the last position of a full forward"""
    # float32 accumulated over two layers, in a different order than without the cache
    check_cached_logits(student, reference, positional, assignment.tolerance("grad32"), seed=None, tokens_seed=500,
                        batch=2, seq_len=12, prefill=5)


SPEED_ATTEMPTS = 3  # measured again while failing: a loaded machine must not cost a correct cache its points
SPEED_REPEATS = 3  # pairs per ratio (the uncached call at 64 tokens is most of the test's time)


@weight(2)
def test_cached_decoding_faster(student, student_client, reference):
    """decoding with the cache beats recomputing, by more for longer outputs (flat cost per token)"""
    # A batch of 16 makes recomputation compute-bound while a cached step stays cheap. Reference on one
    # core of a loaded 2-core machine: speedup 2.2-3.8x at 16 new tokens, 4.6-10x at 64 (typically 2.5x and
    # 7x); decoding without a cache gives ~1x at both. Seed 8: no greedy near-tie (top-2 gap > 5e-3).
    config = dict(vocab_size=64, d_model=64, num_heads=4, num_layers=2, max_seq_len=80)
    model = seeded_lm(student, reference, "sinusoidal", seed=8, **config)
    idx = tokens(16, 8, seed=600, vocab=64)
    short, long = 16, 64
    if not torch.equal(generated(student, model, idx, long, True), generated(student, model, idx, long, False)):
        raise AssertionError("generate with use_cache=True gives other tokens than use_cache=False, so its speed "
                             "is not graded: fix cached decoding first.")

    def measure() -> tuple[dict[int, float], dict[int, tuple[float, float]]]:
        # Each ratio is the median of SPEED_REPEATS back-to-back pairs; a measurement that fails is taken
        # again (SPEED_ATTEMPTS). The long one goes first: the check above has just run both calls at
        # that length on this worker, so they need no warm-up.
        speedup, ms = {}, {}
        for n in (long, short):
            calls = [TimedCall(student.model.generate, student_client, [model, idx, n], {"use_cache": c})
                     for c in (False, True)]
            timing, inner = time_alternating(*calls, repeats=SPEED_REPEATS, warm=n == long)
            speedup[n], ms[n] = timing.ratio, timing.per_call_ms(inner)
        return speedup, ms

    def passes(measured) -> float:
        speedup = measured[0]
        return float(speedup[long] >= 2.0 and speedup[long] > speedup[short])

    (speedup, ms), taken = best_measurement(measure, passes, attempts=SPEED_ATTEMPTS)
    summary = "; ".join(f"{n} new tokens: {ms[n][1]:.1f} ms with the cache, {ms[n][0]:.1f} ms without "
                        f"(speedup {speedup[n]:.2f}x)" for n in (short, long))
    if not passes((speedup, ms)):
        raise AssertionError(
            f"Cached decoding is not fast enough for a batch of {idx.shape[0]} prompts of {idx.shape[1]} tokens: "
            f"{summary} (it fell short in each of {taken} measurements; these are the first). Expected a speedup "
            f"of at least 2x at {long} new tokens, larger than at {short} (a cached step costs about the same at "
            "any length, recomputing costs more and more). With the cache, each step after the prefill must feed "
            "only the newest token through the model and attend over the stored keys/values."
        )
