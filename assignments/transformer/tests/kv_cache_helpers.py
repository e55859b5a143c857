"""Helpers for the kv_cache suites (grader side): typed cache calls and a seeded student model."""
from __future__ import annotations

import torch

from autograder.testing import typename
from autograder.testing import StudentCodeError
from autograder.testing import assert_close, check_tensor

POSITIONAL = ["sinusoidal", "learned", "rope", "alibi"]
LM_CONFIG = dict(vocab_size=50, d_model=32, num_heads=4, num_layers=2, max_seq_len=32)
# Weight seeds per positional option (lm_head scaled by LM_HEAD_SCALE) for which greedy decoding of
# the prompt tokens(2, 5, seed=seed + 100) never meets a near-tie: the top-2 logit gap stays above
# 0.1 for 12 new tokens, so float rounding (cached vs full forward) cannot flip a token.
LM_SEEDS = {"sinusoidal": 9, "learned": 12, "rope": 9, "alibi": 1}
LM_HEAD_SCALE = 8.0


def exact(actual, expected: torch.Tensor, what: str) -> None:
    """A copy must be bit-exact."""
    assert_close(actual, expected, what, atol=0.0, rtol=0.0)


def update(cache, layer: int, k: torch.Tensor, v: torch.Tensor, stored: int):
    """``cache.update(layer, k, v)``, checked to return a pair (k_all, v_all) of shape (B, H, stored, D)."""
    out = cache.update(layer, k, v)
    if type(out) not in (tuple, list) or len(out) != 2:
        raise AssertionError(f"KVCache.update(layer={layer}, k_new, v_new) must return a pair (k_all, v_all), "
                             f"got {type(out).__name__}.")
    b, h, _, d = k.shape
    for name, t in zip(("k_all", "v_all"), out):
        check_tensor(t, f"{name} returned by KVCache.update(layer={layer}, ...) with {stored} tokens stored",
                     shape=(b, h, stored, d), dtype=k.dtype)
    return out


def length(cache, layer: int, expected: int, when: str) -> None:
    got = cache.length(layer)
    if type(got) is not int:
        raise AssertionError(f"KVCache.length({layer}) must return an int, got {type(got).__name__}.")
    if got != expected:
        raise AssertionError(f"KVCache.length({layer}) {when}: expected {expected}, got {got}.")


def storage(cache, what: str, shape: tuple) -> tuple[int, int]:
    """Check cache.k / cache.v are tensors of the preallocated shape; return their data pointers."""
    ptrs = []
    for name in ("k", "v"):
        kind = typename(getattr(cache, name))
        if kind not in ("Tensor", "Parameter"):
            raise AssertionError(f"KVCache.{name} must be a torch.Tensor of shape (num_layers, B, H, max_seq_len, D), "
                                 f"got {kind}.")
        ptr, meta = getattr(cache, name).data_ptr(), getattr(cache, name).size()
        if type(ptr) is not int or not isinstance(meta, tuple):
            raise AssertionError(f"KVCache.{name}.data_ptr() / .size() returned unexpected types.")
        if tuple(meta) != tuple(shape):
            raise AssertionError(f"KVCache.{name} {what}: expected shape (num_layers, B, H, max_seq_len, D) = "
                                 f"{tuple(shape)}, got {tuple(meta)}. Allocate the storage once and write "
                                 "into it (no torch.cat, no reallocation).")
        ptrs.append(ptr)
    return tuple(ptrs)


def seeded_lm(student, reference, positional: str, seed: int | None = None, **config):
    """The student's TransformerLM in eval mode, holding seeded weights made by the reference's.

    Only data comes from the reference (its state_dict), so the public tests replay in the kit.
    """
    config = {**LM_CONFIG, **config, "positional": positional}
    torch.manual_seed(LM_SEEDS[positional] if seed is None else seed)
    weights = dict(reference.model.TransformerLM(**config).state_dict())
    weights["lm_head.weight"] = weights["lm_head.weight"] * LM_HEAD_SCALE
    model = student.model.TransformerLM(**config)
    try:
        model.load_state_dict(weights, strict=True)
    except StudentCodeError as e:
        raise AssertionError(
            f"Loading reference weights into your TransformerLM(positional={positional!r}) with strict=True "
            "failed, so cached decoding cannot be checked: its state_dict must hold exactly the parameters "
            f"the contract lists (see the model part).\n{e.student_message}"
        ) from None
    model.eval()
    return model


def tokens(*shape: int, seed: int, vocab: int = LM_CONFIG["vocab_size"]) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


def prompt(positional: str) -> torch.Tensor:
    """The (2, 5) prompt that goes with LM_SEEDS[positional]."""
    return tokens(2, 5, seed=LM_SEEDS[positional] + 100)


def generated(student, model, idx: torch.Tensor, n: int, use_cache: bool) -> torch.Tensor:
    out = student.model.generate(model, idx, n, use_cache=use_cache)
    what = f"generate(model, idx of shape {tuple(idx.shape)}, max_new_tokens={n}, use_cache={use_cache})"
    check_tensor(out, what, shape=(idx.shape[0], idx.shape[1] + n), dtype=idx.dtype)
    if not torch.equal(out[:, :idx.shape[1]], idx):
        raise AssertionError(f"{what}: the output must start with the prompt idx.")
    return out


def check_same_tokens(student, reference, positional: str, n: int = 12) -> None:
    """generate(use_cache=True) gives exactly the tokens of generate(use_cache=False)."""
    model = seeded_lm(student, reference, positional)
    idx = prompt(positional)
    want = generated(student, model, idx, n, use_cache=False)
    got = generated(student, model, idx, n, use_cache=True)
    diff = (got != want).nonzero()
    if len(diff):
        b, t = (int(i) for i in diff[0])
        raise AssertionError(
            f"TransformerLM(positional={positional!r}): generate with use_cache=True differs from "
            f"use_cache=False, first at new token {t - idx.shape[1]} (batch row {b}) of {n}: got token "
            f"{int(got[b, t])}, expected {int(want[b, t])}. With a cache, each step must see the same "
            "keys/values and the same positions as a full forward: positions continue at "
            "kv_cache.length(0) (absolute encodings, RoPE angles, ALiBi distances), they do not restart at 0."
        )


def check_cached_logits(student, reference, positional: str, tol, *, seed: int | None, tokens_seed: int, batch: int,
                        seq_len: int, prefill: int, **config) -> None:
    """A ``prefill``-token prefill into an empty cache, then one token at a time up to ``seq_len``: every call's
    logits equal those of the student's own forward without cache (the prefill: at all its positions, not only
    the last one, which is all that generate reads)."""
    model = seeded_lm(student, reference, positional, seed=seed, **config)
    config = {**LM_CONFIG, **config}
    layers, heads, d = config["num_layers"], config["num_heads"], config["d_model"]
    cache = student.kv_cache.KVCache(layers, batch, heads, config["max_seq_len"], d // heads)
    seq = tokens(batch, seq_len, seed=tokens_seed, vocab=config["vocab_size"])
    name = f"TransformerLM(positional={positional!r}, num_layers={layers})"
    want = model(seq[:, :prefill])
    try:
        assert_close(model(seq[:, :prefill], kv_cache=cache), want,
                     f"{name} logits of a {prefill}-token prefill into an empty KV cache vs a forward without cache",
                     tol)
    except AssertionError as e:
        raise AssertionError(
            f"{e} A forward with a cache must give the same logits as one without, at every position. The usual "
            "cause: TransformerLM.forward (model.py) does not make every block causal when a cache is given (e.g. "
            "is_causal=kv_cache is None). A prefill of several tokens into a cache must be causally masked like a "
            "forward without cache (is_causal=True always; query i attends key j iff j <= i + kv_cache.length(layer) "
            "before the update). generate only reads the last position of the prefill, so its tokens can look "
            "right while these logits are wrong. Also check that positions start at kv_cache.length(0) (0 for an "
            "empty cache) and that attention runs over the keys/values KVCache.update returns.") from None
    for t in range(prefill, seq_len):
        before = {0: "", 1: f", then token {prefill}"}.get(t - prefill,
                                                            f", then tokens {prefill}..{t - 1} one at a time")
        try:
            assert_close(model(seq[:, t:t + 1], kv_cache=cache), model(seq[:, :t + 1])[:, -1:],
                         f"{name} logits of token {t} fed alone with {t} tokens cached (the {prefill}-token "
                         f"prefill{before}) vs the last position of a forward without cache on all {t + 1} tokens",
                         tol)
        except AssertionError as e:
            raise AssertionError(
                f"{e} After the prefill, positions must continue at kv_cache.length(layer) (absolute encodings, "
                "RoPE angles, ALiBi distances), not restart at 0, and attention must run over all the stored "
                "keys/values followed by the new one.") from None
    for layer in range(layers):
        length(cache, layer, seq_len, f"after a {prefill}-token prefill and {seq_len - prefill} single-token "
               "steps through the model (each block appends its own layer's keys/values)")
