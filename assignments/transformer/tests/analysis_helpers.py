"""Measured costs for the analysis suites (grader side): the REFERENCE modules, built on the meta device.

Every expected value is measured, never derived from a formula: parameters are counted on the
reference's MultiHeadAttention / TransformerBlock, FLOPs with torch's own FLOP formulas (the registry
behind torch.utils.flop_counter.FlopCounterMode, see :class:`MatmulFlops`) on the reference's attention
and block (never the student's: on CPU it counts 0 for fused kernels),
and bytes from the reference's KVCache storage and a materialised score tensor. The meta device
makes realistic sizes free (no memory is allocated, no arithmetic runs).

Answers must be Python ints (the contract says ``-> int``): a float of the right value still fails,
with a message saying so.
"""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

from autograder.testing import Remote
from autograder.testing import measured

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


class MatmulFlops(TorchDispatchMode):
    """Counts FLOPs like FlopCounterMode (same formulas, same ops) on meta tensors, without torch._dynamo.

    On the meta device, pointwise ops, reductions, layer norm, matrix products and *_like get their shapes from Python reference kernels
    that import torch._dynamo and sympy (together 1.4 CPU-seconds and ~140 MB kept by the grading process
    for the rest of the run, on a 768 MB Gradescope container). Their FLOPs are not counted anyway,
    so this mode gives their outputs the right shape and dtype directly. The project's tests check it
    against FlopCounterMode on every configuration the suites use.
    """

    @classmethod
    def _should_skip_dynamo(cls) -> bool:  # the default wraps __torch_dispatch__ in a dynamo import
        return False

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten.native_layer_norm.default:
            x, normalized = args[0], args[1]
            stats = (*x.shape[:x.dim() - len(normalized)], *([1] * len(normalized)))
            return (torch.empty(x.shape, dtype=x.dtype, device=x.device), torch.empty(stats, device=x.device),
                    torch.empty(stats, device=x.device))
        if torch.Tag.pointwise in func.tags and not func._schema.is_mutable:
            flat = tree_flatten((args, kwargs))[0]
            tensors = [a for a in flat if isinstance(a, torch.Tensor)]
            dtype = tensors[0].dtype
            for a in tree_flatten(args)[0]:
                if isinstance(a, (torch.Tensor, bool, int, float)):
                    dtype = torch.promote_types(dtype, torch.result_type(tensors[0], a))
            if func._overloadpacket in _PREDICATES:
                dtype = torch.bool
            return torch.empty(_broadcast(*(t.shape for t in tensors)), dtype=dtype, device=tensors[0].device)
        if func._overloadpacket in _LIKE:
            x = args[0]
            return torch.empty(x.shape, dtype=kwargs.get("dtype") or x.dtype, device=x.device)
        if func in _REDUCTIONS:  # (x, dim, keepdim=False, ...)
            x, dims = args[0], args[1]
            keep = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
            dims = {d % x.dim() for d in ([dims] if isinstance(dims, int) else dims or range(x.dim()))}
            shape = [1 if i in dims else n for i, n in enumerate(x.shape) if keep or i not in dims]
            return torch.empty(shape, dtype=kwargs.get("dtype") or x.dtype, device=x.device)
        if func in _PRODUCTS:
            a, b = args[_PRODUCTS[func]:_PRODUCTS[func] + 2]
            if a.shape[-1] != b.shape[-2] or a.shape[:-2] != b.shape[:-2]:
                raise RuntimeError(f"{func}: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be multiplied")
            out = torch.empty(*a.shape[:-1], b.shape[-1], dtype=a.dtype, device=a.device)
        else:
            out = func(*args, **kwargs)
        if func._overloadpacket in flop_registry:
            self.total += flop_registry[func._overloadpacket](*args, **kwargs, out_val=out)
        return out


def _broadcast(*shapes: torch.Size) -> tuple[int, ...]:
    """torch.broadcast_shapes without its import of sympy."""
    out: list[int] = []
    for dims in zip(*(((1,) * (max(map(len, shapes)) - len(s))) + tuple(s) for s in shapes)):
        sizes = {d for d in dims if d != 1}
        if len(sizes) > 1:
            raise RuntimeError(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


# Matrix products -> index of the first factor among the arguments (addmm/baddbmm add a bias first).
_PRODUCTS = {torch.ops.aten.mm.default: 0, torch.ops.aten.bmm.default: 0, torch.ops.aten.addmm.default: 1,
             torch.ops.aten.baddbmm.default: 1}
_LIKE = {torch.ops.aten.empty_like, torch.ops.aten.zeros_like, torch.ops.aten.ones_like, torch.ops.aten.full_like,
         torch.ops.aten.clone}
_REDUCTIONS = {torch.ops.aten.amax.default, torch.ops.aten.amin.default, torch.ops.aten.sum.dim_IntList,
               torch.ops.aten.mean.dim}
_PREDICATES = {getattr(torch.ops.aten, name) for name in ("eq", "ne", "lt", "le", "gt", "ge", "logical_and",
                                                           "logical_or", "logical_not", "logical_xor", "isnan",
                                                           "isinf", "isfinite")}


def attention_flops(reference, batch: int, seq_len: int, d_model: int, num_heads: int) -> int:
    """FLOPs of the reference's scaled_dot_product_attention on (B, H, L, d_model / H) q, k, v."""
    def measure(ref) -> int:
        q, k, v = (torch.empty(batch, num_heads, seq_len, d_model // num_heads, device=META) for _ in range(3))
        with MatmulFlops() as counter:
            ref.attention.scaled_dot_product_attention(q, k, v)
        return counter.total

    # One recorded value, so the count also replays in the student kit (no reference code there).
    return measured(reference, f"attention_flops{(batch, seq_len, d_model, num_heads)}", measure)


def block_flops(reference, batch: int, seq_len: int, d_model: int, num_heads: int, d_ff: int | None) -> int:
    def measure(ref) -> int:
        with META:
            m = ref.block.TransformerBlock(d_model, num_heads, d_ff=d_ff).eval()
        x = torch.empty(batch, seq_len, d_model, device=META)
        with MatmulFlops() as counter, torch.no_grad():
            m(x)
        return counter.total

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
