"""``out.backward(grad)`` without the sympy import it costs the first time.

torch's ``autograd._make_grads`` imports ``torch.fx.experimental.symbolic_shapes`` (and with it
sympy, about a CPU-second and 40 MB) the first time ``backward`` is handed a gradient tensor. A
grading backpropagates given gradients in the worker and in the grader, and nothing else there
needs sympy; backpropagating the scalar ``(out * grad).sum()`` gives ``out`` the same gradient,
exactly (``grad`` times ones), without that import.
"""
from __future__ import annotations

import sys

import torch


def backprop(out: torch.Tensor, grad: torch.Tensor) -> None:
    """Accumulate the gradients of ``out`` against ``grad`` into the leaves, as ``out.backward(grad)``."""
    if ("sympy" not in sys.modules and isinstance(out, torch.Tensor) and isinstance(grad, torch.Tensor)
            and type(out) is torch.Tensor and type(grad) is torch.Tensor and out.requires_grad
            and not grad.requires_grad and out.shape == grad.shape and out.dtype == grad.dtype
            and out.device == grad.device and out.is_floating_point() and not out.is_nested):
        (out * grad).sum().backward()
    else:  # anything unusual keeps torch's own checks and messages
        out.backward(grad)
