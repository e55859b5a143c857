"""autograder.sandbox.backprop: the same gradients as ``out.backward(grad)``, without importing sympy."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from autograder.sandbox import backprop as bp


def _inputs(dtype: torch.dtype) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x, w = (torch.randn(4, 7, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True) for _ in range(2))
    out = torch.softmax(x * w, dim=-1).transpose(0, 1)  # a non-contiguous output, as some submissions return
    grad = torch.randn(out.shape, generator=g, dtype=torch.float64).to(dtype)
    return [x, w], out, grad


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_same_gradients_bit_for_bit(dtype):
    leaves, out, grad = _inputs(dtype)
    assert bp.fast_path(out, grad)  # the product path is what is compared here, not torch with itself
    bp.backprop(out, grad)
    ours = [t.grad for t in leaves]
    leaves, out, grad = _inputs(dtype)
    out.backward(grad)
    for a, b in zip(ours, (t.grad for t in leaves)):
        assert a.dtype == dtype and torch.equal(a, b)


def test_grad_mode_left_off_by_the_code_under_test():
    leaves, out, grad = _inputs(torch.float32)
    with torch.no_grad():  # out.backward(grad) works here; a product made here would have no graph
        assert not bp.fast_path(out, grad)
        bp.backprop(out, grad)
    assert all(t.grad is not None for t in leaves)


def test_unusual_calls_keep_torchs_own_errors():
    x = torch.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError) as ours:
        bp.backprop(x * 2, torch.ones(4))  # wrong shape: torch's message, not a broadcast
    with pytest.raises(RuntimeError) as torchs:
        (x * 2).backward(torch.ones(4))
    assert str(ours.value) == str(torchs.value)


def test_no_sympy_import():
    code = ("import sys, torch\nfrom autograder.sandbox.backprop import backprop\n"
            "x = torch.randn(5, 3, requires_grad=True)\nbackprop(torch.tanh(x), torch.ones(5, 3))\n"
            "assert x.grad is not None\nprint('sympy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"
