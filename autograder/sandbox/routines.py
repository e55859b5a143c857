"""Routines the harness runs inside the worker, next to student objects (e.g. training loops).

They run in the untrusted process, so what they return is information, not evidence: a suite
that grades learning evaluates the trained model itself (its own loss on its own data).
"""
from __future__ import annotations

import math
import sys
from typing import Any, Callable

import torch

from autograder.sandbox.backprop import backprop


def train_lm(model: Any, inputs: torch.Tensor, targets: torch.Tensor, *, steps: int, lr: float = 3e-3,
             batch_size: int = 32, seed: int = 0, weight_decay: float = 0.0) -> list[float]:
    """Train ``model`` (idx (B, L) -> logits (B, L, V)) with AdamW on cross-entropy; returns losses.

    ``targets`` uses -100 for positions that do not count. Deterministic for a given seed.
    """
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model.train()
    opt = _AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    losses = []
    for _ in range(steps):
        batch = torch.randint(0, inputs.shape[0], (batch_size,), generator=g)
        logits = model(inputs[batch])
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets[batch].reshape(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


class _AdamW:
    """AdamW (decoupled weight decay, bias-corrected moments), the update of torch.optim.AdamW.

    Written out because torch.optim's ``step`` imports torch._dynamo on its first call, about a
    CPU-second of imports in the worker for nothing (no compiled code runs here).
    """

    def __init__(self, params: list[torch.Tensor], lr: float, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params, self.lr, self.weight_decay, self.betas, self.eps = params, lr, weight_decay, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        bc1, bc2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        live = [i for i, p in enumerate(self.params) if p.grad is not None]  # as torch.optim: skip grad None
        if not live:
            return
        ps, grads = [self.params[i] for i in live], [self.params[i].grad for i in live]
        ms, vs = [self.m[i] for i in live], [self.v[i] for i in live]
        if self.weight_decay:
            torch._foreach_mul_(ps, 1 - self.lr * self.weight_decay)
        torch._foreach_lerp_(ms, grads, 1 - b1)
        torch._foreach_mul_(vs, b2)
        torch._foreach_addcmul_(vs, grads, grads, 1 - b2)
        denom = torch._foreach_sqrt(vs)
        torch._foreach_div_(denom, math.sqrt(bc2))
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(ps, ms, denom, -self.lr / bc1)


# Ops that only re-view memory that already exists (Triton's interpreter calls set_ on whole
# storages): they create no new tensor, so they never count as the largest allocation. Matched by
# the op's whole name (its overload left out): "aten::t" is the transpose, not tanh, tril or triu.
_VIEWS_OF_STORAGE = frozenset({"aten::set_", "aten::alias", "aten::as_strided", "aten::view", "aten::_unsafe_view",
                               "aten::expand", "aten::t", "aten::transpose", "aten::permute", "aten::detach"})


class _Audit:
    """Records the aten ops, the largest tensor produced and the Triton launches during a call."""

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        audit = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                name = func.name()
                audit.ops.add(name)
                audit.calls += 1
                if name.split(".", 1)[0] in _VIEWS_OF_STORAGE:  # re-views of existing memory, not allocations
                    return out
                for t in out if isinstance(out, (tuple, list)) else (out,):
                    if isinstance(t, torch.Tensor) and t.numel() > audit.max_numel:
                        audit.max_numel, audit.max_shape = t.numel(), list(t.shape)
                        audit.max_op = func.name()
                return out

        _skip_dynamo_import(Mode)
        self.mode = Mode()
        self.ops: set[str] = set()
        self.calls = 0  # aten ops dispatched, repeats included
        self.max_numel = 0
        self.max_shape: list[int] = []
        self.max_op = ""
        self.launches = 0
        self._patched: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> _Audit:
        self._patch_triton()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.mode.__exit__(*exc)
        for owner, name, original in self._patched:
            setattr(owner, name, original)

    def _patch_triton(self) -> None:
        try:
            import triton.runtime.jit as jit
        except Exception:  # noqa: BLE001 - no triton: nothing can launch
            return
        owners = [jit.JITFunction]
        try:
            from triton.runtime.interpreter import InterpretedFunction

            owners.append(InterpretedFunction)
        except Exception:  # noqa: BLE001
            pass
        for owner in owners:
            original = owner.__dict__.get("run")
            if original is None:
                continue

            def counted(this, *a, __original=original, **k):
                self.launches += 1
                return __original(this, *a, **k)

            setattr(owner, "run", counted)
            self._patched.append((owner, "run", original))


def _skip_dynamo_import(mode_cls: type) -> None:
    """torch wraps a TorchDispatchMode's ``__torch_dispatch__`` so that dynamo never traces it, and
    that wrapper imports torch._dynamo on its first call (about a CPU-second). Nothing compiled runs
    in the worker, so when dynamo is not loaded yet, record the function as its own dynamo-disabled
    version (the wrapper's cache), which skips the import; other torch versions simply import it."""
    raw = getattr(mode_cls.__dict__.get("__torch_dispatch__"), "__wrapped__", None)
    if raw is not None and "torch._dynamo" not in sys.modules:
        setattr(raw, "__dynamo_disable", raw)


def audit_call(fn: Any, *args: Any, backward: Any = None, **kwargs: Any) -> dict:
    """Call ``fn`` under an audit; with ``backward`` (a grad_output), also backpropagate it.

    Returns the output, the aten ops seen (and how many were dispatched), the largest tensor created (numel, shape, op), the
    number of Triton kernel launches and, with ``backward``, the input gradients. The audit runs
    in the worker, so it is a guard against honest mistakes and casual shortcuts; the grader also
    checks the submitted source itself.
    """
    if backward is not None:
        args = tuple(a.detach().clone().requires_grad_(True) if isinstance(a, torch.Tensor)
                     and a.is_floating_point() else a for a in args)
    with _Audit() as audit:
        out = fn(*args, **kwargs)
        if backward is not None:
            first = out[0] if isinstance(out, (tuple, list)) else out
            backprop(first, backward)
    return {
        "output": out,
        "ops": sorted(audit.ops),
        "calls": audit.calls,
        "max_numel": audit.max_numel,
        "max_shape": audit.max_shape,
        "max_op": audit.max_op,
        "triton_launches": audit.launches,
        "grads": [a.grad if isinstance(a, torch.Tensor) else None for a in args] if backward is not None else None,
    }


_AOT_REPORTS: dict[tuple, dict] = {}


def aot_compile(fn: Any, *, backward: bool = False, target: str = "sm_90", timeout_s: float = 100.0,
                forward_request: dict | None = None, backward_request: dict | None = None) -> dict:
    """Compile the Triton kernels that the launch code of ``fn``'s module picks, for ``target``
    ("native": this machine's GPU), and report what each uses (see :mod:`autograder.sandbox.aot`).

    The launches are recorded here (the student's launch code runs, no kernel does); the compile runs in
    a child process without torch or the interpreter, which imports the student's module afresh: it
    inherits this worker's sandbox and its time counts against this call. With ``backward_request``,
    the first call does the forward and the backward and keeps both reports for this worker (keyed by
    the module's source), so the flash_backward test's call costs nothing.
    """
    import hashlib
    import os
    from pathlib import Path

    from autograder.sandbox import aot

    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    path = getattr(module, "__file__", None)
    if module is None or not path:
        raise RuntimeError("cannot locate the module of the function to compile")
    name = module.__name__
    root = Path(path).resolve().parents[name.count(".")]  # transformer_lab/flash.py -> the root above it
    fwd = {"backward": False, **(forward_request or {})}
    bwd = {**(backward_request or {}), "backward": True}
    key = (hashlib.sha256(Path(path).read_bytes()).hexdigest(), target, repr(fwd), repr(bwd))
    if (key, backward) not in _AOT_REPORTS:
        wanted = [fwd, bwd] if backward_request is not None else [bwd if backward else fwd]
        cache = os.path.join(os.environ.get("HOME") or os.environ.get("TMPDIR") or "/tmp", ".triton-aot")
        # Launches recorded here (nothing runs), all compiled in one child without torch.
        reports = aot.check_many(module, root, wanted, target=target, cache_dir=cache, timeout=timeout_s)
        for req, report in zip(wanted, reports):
            _AOT_REPORTS[(key, req["backward"])] = report
    return _AOT_REPORTS[(key, backward)]


def _registry() -> dict[str, Callable[..., Any]]:
    from autograder.sandbox.gpu_routines import REGISTRY as GPU

    return {"train_lm": train_lm, "audit_call": audit_call, "aot_compile": aot_compile, **GPU}


REGISTRY: dict[str, Callable[..., Any]] = _registry()
