"""``out.backward(grad)`` without the sympy import it costs the first time.

torch's ``autograd._make_grads`` imports ``torch.fx.experimental.symbolic_shapes`` (and with it
sympy, about a CPU-second and 40 MB) the first time ``backward`` is handed a gradient tensor. A
grading backpropagates given gradients in the worker and in the grader, and nothing else there
needs sympy; backpropagating the scalar ``(out * grad).sum()`` gives ``out`` the same gradient,
exactly (``grad`` times ones), without that import. The same path is taken whether or not sympy
is already loaded, so what an audit of the call records does not depend on earlier tests.
"""
from __future__ import annotations

import torch


def backprop(out: torch.Tensor, grad: torch.Tensor) -> None:
    """Accumulate the gradients of ``out`` against ``grad`` into the leaves, as ``out.backward(grad)``."""
    if fast_path(out, grad):
        (out * grad).sum().backward()
    else:  # anything unusual keeps torch's own checks and messages
        out.backward(grad)


def fast_path(out: object, grad: object) -> bool:
    """Whether :func:`backprop` goes through ``(out * grad).sum()``: plain dense floating tensors of one
    shape, dtype and device, with grad mode on (``out.backward`` also works with it off, a product would
    not: code under test may leave it off)."""
    return (type(out) is torch.Tensor and type(grad) is torch.Tensor and torch.is_grad_enabled()
            and out.requires_grad and not grad.requires_grad and out.layout == torch.strided
            and grad.layout == torch.strided and out.shape == grad.shape and out.dtype == grad.dtype
            and out.device == grad.device and out.is_floating_point())
