"""The analysis suites' FLOP counter (analysis_helpers.MatmulFlops) against torch's FlopCounterMode.

MatmulFlops exists so that the grading process never imports torch._dynamo (see its docstring); these
tests hold it to FlopCounterMode's counts on the reference over every configuration the suites use,
and check in a fresh interpreter that counting leaves torch._dynamo unimported.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tests.conftest import ASSIGNMENT, ROOT

HELPERS = ASSIGNMENT / "tests"
REFERENCE = ROOT / "reference"


@pytest.fixture(scope="module")
def helpers_and_reference():
    sys.path[:0] = [str(HELPERS), str(REFERENCE)]
    try:
        import analysis_helpers
        import transformer_lab.attention
        import transformer_lab.block
        yield analysis_helpers, transformer_lab
    finally:
        del sys.path[:2]


def _suite_configs(helpers) -> list[tuple[int, int, int, int, int | None]]:
    """(batch, seq_len, d_model, num_heads, d_ff) of every FLOP check in the public and hidden suites."""
    configs = [(2, 16, 64, 4, None)]
    for seed in (300, 400, 401):
        for c in helpers.random_configs(seed, 6):
            configs += [(c["batch"], c["seq_len"], c["d_model"], c["num_heads"], d_ff) for d_ff in (None, c["d_ff"])]
    return configs


def test_matmul_flops_equals_flop_counter_mode(helpers_and_reference):
    helpers, ref = helpers_and_reference
    meta = torch.device("meta")
    for b, l, d, h, d_ff in _suite_configs(helpers):
        q, k, v = (torch.empty(b, h, l, d // h, device=meta) for _ in range(3))
        with FlopCounterMode(display=False) as counter:
            ref.attention.scaled_dot_product_attention(q, k, v)
        assert helpers.attention_flops(ref, b, l, d, h) == counter.get_total_flops() > 0, (b, l, d, h)
        with meta:
            block = ref.block.TransformerBlock(d, h, d_ff=d_ff).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            block(torch.empty(b, l, d, device=meta))
        assert helpers.block_flops(ref, b, l, d, h, d_ff) == counter.get_total_flops() > 0, (b, l, d, h, d_ff)


def test_matmul_flops_counts_what_runs(helpers_and_reference):
    """A mode that counted nothing, or counted pointwise ops, would fail here."""
    helpers, _ = helpers_and_reference
    a, b = torch.empty(3, 5, 7, device="meta"), torch.empty(3, 7, 2, device="meta")
    with helpers.MatmulFlops() as counter:
        c = torch.bmm(a, b) * 2.0 + 1
        mask = c > 0
        torch.where(mask, c, torch.zeros_like(c)).softmax(-1)
    assert counter.total == 2 * 3 * 5 * 7 * 2
    assert c.shape == (3, 5, 2) and mask.dtype == torch.bool


def test_counting_leaves_dynamo_unimported():
    code = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(HELPERS)!r}, {str(REFERENCE)!r}]
        import analysis_helpers as h, transformer_lab.attention, transformer_lab.block, transformer_lab.kv_cache
        import transformer_lab as ref
        h.attention_flops(ref, 8, 2048, 512, 8), h.block_flops(ref, 3, 100, 96, 3, 1000)
        h.mha_params(ref, 64, 8, True), h.block_params(ref, 64, 8, None, True)
        h.kv_bytes(ref, 2, 2, 4, 64, 16, h.torch.float16), h.scores_bytes(2, 4, 64, h.torch.float32)
        print("torch._dynamo" in sys.modules, "sympy" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"], out.stdout
