"""Measured costs for the analysis suites (grader side): the REFERENCE modules, built on the meta device.

Every expected value is measured, never derived from a formula: parameters are counted on the
reference's MultiHeadAttention / TransformerBlock, FLOPs with torch.utils.flop_counter.FlopCounterMode
on the reference's attention and block (never the student's: on CPU it counts 0 for fused kernels),
and bytes from the reference's KVCache storage and a materialised score tensor. The meta device
makes realistic sizes free (no memory is allocated, no arithmetic runs).

Answers must be Python ints (the contract says ``-> int``): a float of the right value still fails,
with a message saying so.
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from autograder.client import Remote
from autograder.golden import measured

META = torch.device("meta")
DTYPES = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2, torch.float64: 8}


def call_text(name: str, **kwargs) -> str:
    return f"{name}(" + ", ".join(f"{k}={v}" for k, v in kwargs.items()) + ")"


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_count(got, expected: int, call: str, measured: str) -> None:
    """``got`` must be the int ``expected``; the message names the call and what was measured."""
    if type(got) is not int:
        kind = "an object that is not a plain Python number" if isinstance(got, Remote) else type(got).__name__
        hint = " of the right value" if type(got) is float and got == expected else ""
        raise AssertionError(f"{call}: expected a Python int, got {kind}{hint}. Return an int "
                             "(integer arithmetic: // rather than /, no numpy or torch numbers).")
    if got != expected:
        raise AssertionError(f"{call}: expected {expected} ({measured}), got {got}.")


def mha_params(reference, d_model: int, num_heads: int, bias: bool) -> int:
    with META:
        m = reference.mha.MultiHeadAttention(d_model, num_heads, bias=bias)
    return sum(p.numel() for p in m.parameters())


def block_params(reference, d_model: int, num_heads: int, d_ff: int | None, bias: bool) -> int:
    with META:
        m = reference.block.TransformerBlock(d_model, num_heads, d_ff=d_ff, bias=bias)
    return sum(p.numel() for p in m.parameters())


def attention_flops(reference, batch: int, seq_len: int, d_model: int, num_heads: int) -> int:
    """FLOPs of the reference's scaled_dot_product_attention on (B, H, L, d_model / H) q, k, v."""
    def measure(ref) -> int:
        q, k, v = (torch.empty(batch, num_heads, seq_len, d_model // num_heads, device=META) for _ in range(3))
        with FlopCounterMode(display=False) as counter:
            ref.attention.scaled_dot_product_attention(q, k, v)
        return counter.get_total_flops()

    # One recorded value, so the count also replays in the student kit (no reference code there).
    return measured(reference, f"attention_flops{(batch, seq_len, d_model, num_heads)}", measure)


def block_flops(reference, batch: int, seq_len: int, d_model: int, num_heads: int, d_ff: int | None) -> int:
    def measure(ref) -> int:
        with META:
            m = ref.block.TransformerBlock(d_model, num_heads, d_ff=d_ff).eval()
        x = torch.empty(batch, seq_len, d_model, device=META)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            m(x)
        return counter.get_total_flops()

    return measured(reference, f"block_flops{(batch, seq_len, d_model, num_heads, d_ff)}", measure)


def kv_bytes(reference, num_layers: int, batch: int, num_heads: int, seq_len: int, head_dim: int,
             dtype: torch.dtype) -> int:
    cache = reference.kv_cache.KVCache(num_layers, batch, num_heads, seq_len, head_dim, dtype=dtype, device=META)
    return sum(t.element_size() * t.numel() for t in (cache.k, cache.v))


def scores_bytes(batch: int, num_heads: int, seq_len: int, dtype: torch.dtype) -> int:
    scores = torch.empty(batch, num_heads, seq_len, seq_len, dtype=dtype, device=META)
    return scores.element_size() * scores.numel()


def random_configs(seed: int, n: int) -> list[dict]:
    """n seeded configurations: batch, seq_len, num_heads, head_dim (d_model = heads * head_dim), d_ff, layers."""
    g = torch.Generator().manual_seed(seed)

    def pick(*choices):
        return choices[int(torch.randint(len(choices), (1,), generator=g))]

    configs = []
    for _ in range(n):
        heads, head_dim = pick(1, 2, 3, 4, 6, 8, 12, 16), pick(8, 16, 24, 32, 64)
        configs.append(dict(batch=pick(1, 2, 3, 8), seq_len=pick(1, 7, 64, 100, 512, 2048), num_heads=heads,
                            head_dim=head_dim, d_model=heads * head_dim, d_ff=pick(48, 100, 256, 1000),
                            num_layers=pick(1, 2, 6, 12), dtype=pick(*DTYPES)))
    return configs
