"""Helpers for the flash suites (grader side): the integrity checks, audited calls, oracles, GPU timing.

Integrity, three ways (any failure fails every flash test, with the reason):
- the submitted source, parsed with ``ast`` (never imported): no SDPA or other library attention,
  no torch matrix products (``@``, matmul, bmm, matmul-like einsum, ...) or torch softmax outside
  ``@triton.jit`` functions;
- the runtime audit (routine ``audit_call`` in the worker): no forbidden aten op during the call,
  at least one Triton kernel launch;
- in the dedicated tests, no tensor as large as one N x N matrix created during the call.
Oracles are computed here in float64 (naive attention), so the verdicts do not depend only on the
reference.
"""
from __future__ import annotations

import ast
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from autograder.testing import backprop, fetch, routine, store
from autograder.testing import assert_close, check_tensor, kind_of

FLASH_FILE = ("transformer_lab", "flash.py")
HEAD_DIMS = (16, 32, 64, 128)
LOG2E = 1.4426950408889634


def device() -> torch.device:
    """Where the flash suites run: the GPU when there is one (compiled kernels), else the CPU (interpreter)."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def on_gpu() -> bool:
    return torch.cuda.is_available()


# --------------------------------------------------------------------------- tolerances


def tolerance(dtype: torch.dtype, what: str = "out") -> dict[str, float]:
    """atol/rtol for the output ("out"), the lse ("lse") or the gradients ("grad") in ``dtype``.

    Under the interpreter float32 is computed exactly in float32; compiled GPU kernels use TF32
    for float32 tl.dot by default, hence looser GPU bounds. Every bug the suites target (missing
    rescale, causal off-by-one, log2 lse, wrong strides) is off by far more.
    """
    gpu = on_gpu()
    if dtype == torch.float32:
        if gpu:  # TF32 products: ~1e-3 relative error on each score
            return {"atol": 3e-2, "rtol": 3e-2} if what == "grad" else {"atol": 2e-2, "rtol": 2e-2}
        return {"out": {"atol": 1e-5, "rtol": 1e-4}, "lse": {"atol": 1e-5, "rtol": 1e-4},
                "grad": {"atol": 1e-4, "rtol": 1e-3}}[what]
    if dtype == torch.float16:
        if gpu:
            return {"atol": 1e-2, "rtol": 1e-2}
        return {"out": {"atol": 3e-3, "rtol": 3e-3}, "lse": {"atol": 1e-3, "rtol": 1e-3},
                "grad": {"atol": 1e-2, "rtol": 1e-2}}[what]
    if dtype == torch.bfloat16:
        return {"out": {"atol": 3e-2, "rtol": 3e-2}, "lse": {"atol": 1e-2, "rtol": 1e-2},
                "grad": {"atol": 5e-2, "rtol": 5e-2}}[what]
    raise ValueError(f"no tolerance for {dtype}")


# --------------------------------------------------------------------------- inputs and oracles


def qkv(b: int, h: int, n: int, d: int, *, seed: int, dtype: torch.dtype = torch.float32,
        scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded q, k, v (B, H, N, D) on the flash device."""
    g = torch.Generator().manual_seed(seed)
    out = [(torch.randn(b, h, n, d, generator=g, dtype=torch.float64) * scale).to(dtype).to(device())
           for _ in range(3)]
    return out[0], out[1], out[2]


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, is_causal: bool = False,
                    softmax_scale: float | None = None, on: str | torch.device | None = None,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(o, lse) in float64 (computed on ``on``, default q's device; returned on the CPU): the textbook
    formula, natural-log lse."""
    on = q.device if on is None else on
    q, k, v = (t.to(on, torch.float64) for t in (q, k, v))
    scale = 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else softmax_scale
    s = q @ k.transpose(-2, -1) * scale
    if is_causal:
        n = q.shape[-2]
        s = s.masked_fill(~torch.ones(n, n, dtype=torch.bool, device=s.device).tril(), float("-inf"))
    return (torch.softmax(s, dim=-1) @ v).cpu(), torch.logsumexp(s, dim=-1).cpu()


def naive_grads(q, k, v, grad_out, is_causal=False, softmax_scale=None) -> list[torch.Tensor]:
    """dq, dk, dv of naive attention in float64 (on the inputs' device; returned on the CPU)."""
    leaves = [t.detach().double().requires_grad_(True) for t in (q, k, v)]
    o, _ = naive_attention(*leaves, is_causal=is_causal, softmax_scale=softmax_scale)
    backprop(o, grad_out.detach().cpu().double())
    return [t.grad.cpu() for t in leaves]


def describe(b, h, n, d, dtype, is_causal, extra: str = "") -> str:
    name = str(dtype).removeprefix("torch.")
    return f"(B, H, N, D)=({b}, {h}, {n}, {d}) {name}, is_causal={is_causal}{extra}"


# --------------------------------------------------------------------------- static check


FORBIDDEN_MODULES = ("flash_attn", "flash_attn_interface", "xformers", "flashinfer", "sageattention",
                     "transformer_engine", "apex", "deepspeed", "torch.nn.attention")
OWN_MODULES = ("attention", "mha", "block", "model")  # the package's own naive attention paths
FORBIDDEN_NAME_PARTS = ("scaled_dot_product", "efficient_attention", "cudnn_attention", "multi_head_attention",
                        "MultiheadAttention", "memory_efficient_attention", "flex_attention")
TORCH_ATTENTION_ATTRS = ("_flash_attention_forward", "_flash_attention_backward")
MATMUL_CALLS = {"matmul", "bmm", "mm", "baddbmm", "addbmm", "addmm", "tensordot", "linear", "bilinear",
                "chain_matmul", "multi_dot", "inner", "__matmul__", "__rmatmul__"}
SOFTMAX_CALLS = {"softmax", "log_softmax", "_softmax", "_safe_softmax", "_masked_softmax"}
JIT_DECORATORS = {"jit", "autotune", "heuristics"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Call):
        node = node.func
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _is_jit(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(_dotted(d).split(".")[-1] in JIT_DECORATORS for d in fn.decorator_list)


def _einsum_is_matmul(equation: str, n_operands: int) -> bool:
    """True when the einsum has an output index that only one operand has and another only a second one
    has (an outer product or a matrix product, e.g. "bhnd,bhmd->bhnm"); a row-wise dot such as
    "bhnd,bhnd->bhn" is not."""
    eq = equation.replace(" ", "").replace("...", "")
    lhs, _, out = eq.partition("->")
    ops = lhs.split(",")
    if "->" not in eq:
        counts = {c: lhs.count(c) for c in set(lhs) if c.isalpha()}
        out = "".join(sorted(c for c, n in counts.items() if n == 1))
    if len(ops) < 2 or n_operands < 2:
        return False
    exclusive = []
    for i, op in enumerate(ops):
        others = set("".join(o for j, o in enumerate(ops) if j != i))
        exclusive.append({c for c in out if c in op and c not in others})
    return sum(1 for e in exclusive if e) >= 2


class _SourceChecker(ast.NodeVisitor):
    def __init__(self, docstrings: set[int]) -> None:
        self.problems: list[str] = []
        self.jit_depth = 0
        self.docstrings = docstrings

    def add(self, node: ast.AST, message: str) -> None:
        self.problems.append(f"line {getattr(node, 'lineno', '?')}: {message}")

    def _function(self, node) -> None:
        jit = _is_jit(node)
        self.jit_depth += jit
        self.generic_visit(node)
        self.jit_depth -= jit

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def _module(self, node: ast.AST, module: str) -> None:
        if any(module == m or module.startswith(m + ".") for m in FORBIDDEN_MODULES):
            self.add(node, f"imports {module} (another attention implementation); write the kernel yourself")
        parts = module.split(".")
        if (parts[0] == "transformer_lab" and len(parts) > 1 and parts[1] in OWN_MODULES) or \
                (module.startswith(".") and module.lstrip(".").split(".")[0] in OWN_MODULES):
            self.add(node, f"imports {module}: flash.py must not reuse the naive attention of the other parts")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._module(node, alias.name)
            self._name(node, alias.asname or "")
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = "." * node.level + (node.module or "")
        self._module(node, module)
        for alias in node.names:
            if node.level and not node.module:  # from . import attention
                self._module(node, module + alias.name)
            elif node.module in ("transformer_lab", "torch.nn"):  # from transformer_lab import attention
                self._module(node, f"{node.module}.{alias.name}")
            self._name(node, alias.name)
            self._name(node, alias.asname or "")
        self.generic_visit(node)

    def _name(self, node: ast.AST, name: str) -> None:
        if name and any(part in name for part in FORBIDDEN_NAME_PARTS):
            self.add(node, f"uses {name} (library attention is not allowed in flash.py)")

    def visit_Name(self, node: ast.Name) -> None:
        self._name(node, node.id)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self._name(node, node.attr)
        if node.attr in TORCH_ATTENTION_ATTRS and _dotted(node).startswith("torch."):
            self.add(node, f"uses {_dotted(node)} (library attention is not allowed in flash.py)")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and id(node) not in self.docstrings:
            text = node.value
            if any(part in text for part in FORBIDDEN_NAME_PARTS[:3]) or \
                    any(text == m or text.startswith(m + ".") for m in FORBIDDEN_MODULES):
                self.add(node, f"refers to {text[:60]!r} (library attention is not allowed in flash.py)")

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if isinstance(node.op, ast.MatMult) and not self.jit_depth:
            self.add(node, "uses the @ operator outside a @triton.jit kernel (matrix products of q, k, v "
                           "belong in the kernel: tl.dot)")
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.op, ast.MatMult) and not self.jit_depth:
            self.add(node, "uses the @= operator outside a @triton.jit kernel")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if not self.jit_depth:
            name = _dotted(node.func).split(".")[-1]
            if name in MATMUL_CALLS:
                self.add(node, f"calls {_dotted(node.func)}(...) outside a @triton.jit kernel (torch matrix "
                               "products are not allowed in flash.py; use tl.dot inside the kernel)")
            elif name in SOFTMAX_CALLS:
                self.add(node, f"calls {_dotted(node.func)}(...) outside a @triton.jit kernel (the softmax "
                               "belongs in the kernel's online loop)")
            elif name == "einsum":
                eq = node.args[0] if node.args else None
                if not (isinstance(eq, ast.Constant) and isinstance(eq.value, str)):
                    self.add(node, "calls einsum with an equation that is not a string literal (cannot check "
                                   "that it is not a matrix product)")
                elif _einsum_is_matmul(eq.value, len(node.args) - 1):
                    self.add(node, f"calls einsum({eq.value!r}, ...), a matrix product, outside a @triton.jit "
                                   "kernel")
        self.generic_visit(node)


def _docstring_ids(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = getattr(node, "body", [])
            for stmt in body:
                # every bare string statement is documentation, not code
                if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
                        and isinstance(stmt.value.value, str):
                    ids.add(id(stmt.value))
    return ids


def source_problems(source: str) -> list[str]:
    """What the static check finds in the text of flash.py (empty = clean)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        return [f"flash.py does not parse: {e.msg} (line {e.lineno})"]
    checker = _SourceChecker(_docstring_ids(tree))
    checker.visit(tree)
    return checker.problems


_STATIC_CACHE: dict[Path, list[str]] = {}


def static_problems(submission_dir: Path) -> list[str]:
    path = Path(submission_dir).joinpath(*FLASH_FILE)
    if path not in _STATIC_CACHE:
        if not path.is_file():
            _STATIC_CACHE[path] = ["there is no transformer_lab/flash.py in your submission"]
        elif path.stat().st_size > 2_000_000:
            _STATIC_CACHE[path] = ["transformer_lab/flash.py is larger than 2 MB"]
        else:
            _STATIC_CACHE[path] = source_problems(path.read_text(encoding="utf-8", errors="replace"))
    return _STATIC_CACHE[path]


def require_clean_source(submission_dir: Path) -> None:
    if not Path(submission_dir).joinpath(*FLASH_FILE).is_file():
        raise AssertionError(f"{'/'.join(FLASH_FILE)} was not found in the submission, so no flash test can earn "
                             "points: submit it with the other files.")
    problems = static_problems(submission_dir)
    if problems:
        shown = "\n".join(f"  - {p}" for p in problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise AssertionError(
            "Integrity check of transformer_lab/flash.py failed, so no flash test can earn points:\n"
            f"{shown}{more}\nThe attention must be computed by your Triton kernels: no torch matrix products, "
            "torch softmax, scaled_dot_product_attention or attention libraries outside @triton.jit functions.")


# --------------------------------------------------------------------------- runtime audit


FORBIDDEN_OP_PREFIXES = ("aten::_scaled_dot_product", "aten::scaled_dot_product", "aten::_flash_attention",
                         "aten::_efficient_attention", "aten::_cudnn_attention", "aten::_fused_sdp",
                         "aten::_native_multi_head_attention", "aten::_transformer_encoder",
                         "aten::_triton_scaled_dot", "aten::_triton_multi_head")
MATMUL_OPS = {"aten::mm", "aten::bmm", "aten::matmul", "aten::baddbmm", "aten::addmm", "aten::addbmm",
              "aten::addmv", "aten::mv", "aten::linear", "aten::_addmm_activation", "aten::tensordot",
              "aten::einsum", "aten::_int_mm", "aten::_scaled_mm", "aten::chain_matmul", "aten::linalg_multi_dot",
              "aten::inner", "aten::outer", "aten::bilinear"}
SOFTMAX_OPS = {"aten::_softmax", "aten::softmax", "aten::_log_softmax", "aten::log_softmax",
               "aten::_softmax_backward_data", "aten::_log_softmax_backward_data", "aten::_safe_softmax",
               "aten::_masked_softmax"}


def _base(op: str) -> str:
    ns, _, rest = op.partition("::")
    return f"{ns}::{rest.split('.')[0]}" if rest else op


def forbidden_ops(ops: list[str]) -> list[str]:
    bad = []
    for op in ops:
        base = _base(op)
        if base.startswith(FORBIDDEN_OP_PREFIXES) or base in MATMUL_OPS or base in SOFTMAX_OPS:
            bad.append(base)
    return sorted(set(bad))


def _check_report(report: Any, what: str) -> dict:
    if not isinstance(report, dict) or not isinstance(report.get("ops"), list) or \
            type(report.get("triton_launches")) is not int or type(report.get("max_numel")) is not int:
        raise AssertionError(f"{what}: the audit of your call returned a malformed report.")
    return report


def audited(student, student_client, name: str, *args, backward: torch.Tensor | None = None,
            what: str = "", **kwargs) -> dict:
    """Call ``student.flash.<name>(*args, **kwargs)`` under the worker's audit; fail on forbidden ops
    or when no Triton kernel was launched. Returns the audit report (output, ops, max_numel, grads...)."""
    fn = fetch(getattr(student.flash, name))
    # compiled kernels (GPU) may spend a while compiling/autotuning on their first call
    timeout = 90.0 if on_gpu() else None
    # Errors name the student's function, as if it had been called directly.
    call = f"{FLASH_FILE[0]}.flash.{name}(...)" + (" followed by .backward()" if backward is not None else "")
    report = _check_report(routine(student_client, "audit_call", fn, *args, backward=backward, timeout=timeout,
                                   what=call, **kwargs), what or name)
    phase = "forward and backward" if backward is not None else "the forward"
    bad = forbidden_ops(report["ops"])
    if bad:
        hint = ""
        if any(op in MATMUL_OPS for op in bad):
            hint = (" torch matrix products (matmul, bmm, einsum, @ ...) are not allowed in flash.py: do the "
                    "products with tl.dot inside your kernels (and compute delta = rowsum(dO * O) with a Triton "
                    "kernel or elementwise ops, not einsum).")
        raise AssertionError(
            f"Integrity check failed in {what or name}: during {phase}, these forbidden torch operations ran: "
            f"{', '.join(bad)}.{hint} The flash part must compute attention with your own Triton kernels, "
            "so this test earns no points.")
    if report["triton_launches"] < 1:
        raise AssertionError(
            f"Integrity check failed in {what or name}: no Triton kernel was launched during {phase}. "
            "flash_attention must run your @triton.jit kernel (kernel[grid](...)).")
    return report


def forward_output(report: dict, what: str, shape: tuple, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(o, lse) out of an audited flash_attention_forward call, with types, shapes, dtypes and device checked."""
    out = report.get("output")
    if type(out) not in (tuple, list) or len(out) != 2:
        raise AssertionError(f"{what}: flash_attention_forward must return a pair (o, lse), got "
                             f"{kind_of(out)}.")
    o, lse = out
    check_tensor(o, f"{what}: o", shape=shape, dtype=dtype, device=device())
    check_tensor(lse, f"{what}: lse", shape=shape[:3], dtype=torch.float32, device=device())
    return o, lse


def compare(actual: torch.Tensor, expected: torch.Tensor, what: str, tol: dict) -> None:
    """assert_close on the CPU in float64 (dtype and device were checked already)."""
    assert_close(actual.detach().cpu().double(), expected.detach().cpu().double(), what,
                 atol=tol["atol"], rtol=tol["rtol"])


def check_forward(o, lse, q, k, v, *, is_causal: bool, what: str, softmax_scale=None,
                  reference: tuple | None = None) -> None:
    """Student (o, lse) vs naive float64 attention and, when given, the reference's (o, lse)."""
    want_o, want_lse = naive_attention(q, k, v, is_causal, softmax_scale)
    try:
        compare(lse, want_lse, f"{what}: lse (natural-log log-sum-exp of the scaled, masked scores)",
                tolerance(q.dtype, "lse"))
    except AssertionError as e:
        got = lse.detach().cpu().double()
        if torch.allclose(got, want_lse * LOG2E, atol=1e-3, rtol=1e-3):
            raise AssertionError(f"{e}\nHint: your lse is log2-based (m + log2(l)); the API asks for the "
                                 "natural log: multiply by ln(2).") from None
        raise
    compare(o, want_o, f"{what}: output o vs naive float64 attention", tolerance(q.dtype, "out"))
    if reference is not None:
        ref_o, ref_lse = reference
        compare(o, ref_o, f"{what}: output o vs the reference kernel", tolerance(q.dtype, "out"))
        compare(lse, ref_lse, f"{what}: lse vs the reference kernel", tolerance(q.dtype, "lse"))


def run_forward(student, student_client, q, k, v, *, is_causal: bool, what: str, softmax_scale=None,
                reference=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The audited student forward, checked against naive attention (and the reference's answer)."""
    kwargs = {"is_causal": is_causal}
    if softmax_scale is not None:
        kwargs["softmax_scale"] = softmax_scale
    report = audited(student, student_client, "flash_attention_forward", q, k, v, what=what, **kwargs)
    o, lse = forward_output(report, what, tuple(q.shape), q.dtype)
    check_forward(o, lse, q, k, v, is_causal=is_causal, what=what, softmax_scale=softmax_scale,
                  reference=reference)
    return o, lse


def run_attention(student, student_client, q, k, v, *, is_causal: bool, what: str) -> torch.Tensor:
    """The audited student flash_attention (output only), checked against naive attention."""
    report = audited(student, student_client, "flash_attention", q, k, v, is_causal=is_causal, what=what)
    o = check_tensor(report.get("output"), f"{what}: output of flash_attention", shape=tuple(q.shape),
                     dtype=q.dtype, device=device())
    want, _ = naive_attention(q, k, v, is_causal)
    compare(o, want, f"{what}: output of flash_attention vs naive float64 attention", tolerance(q.dtype, "out"))
    return o


def run_backward(student, student_client, q, k, v, grad_out, *, is_causal: bool, what: str,
                 softmax_scale=None) -> dict:
    """Audited forward+backward of student.flash.flash_attention; grads vs naive float64 autograd."""
    kwargs = {"is_causal": is_causal}
    if softmax_scale is not None:
        kwargs["softmax_scale"] = softmax_scale
    report = audited(student, student_client, "flash_attention", q, k, v, backward=grad_out, what=what,
                     **kwargs)
    if report["triton_launches"] < 2:
        raise AssertionError(f"Integrity check failed in {what}: only {report['triton_launches']} Triton launch "
                             "during forward and backward; the backward must run Triton kernels too.")
    grads = report.get("grads")
    if type(grads) not in (list, tuple) or len(grads) != 3:
        raise AssertionError(f"{what}: the audit returned no gradients for q, k, v.")
    want = naive_grads(q, k, v, grad_out, is_causal, softmax_scale)
    for name, got, exp, src in zip(("dq", "dk", "dv"), grads, want, (q, k, v)):
        if got is None:
            raise AssertionError(f"{what}: no gradient reached {name[1]}; flash_attention must be differentiable "
                                 "(a torch.autograd.Function with a backward).")
        check_tensor(got, f"{what}: {name}", shape=tuple(src.shape), dtype=src.dtype, device=device())
        compare(got, exp, f"{what}: {name} vs autograd through naive float64 attention",
                tolerance(q.dtype, "grad"))
    return report


def check_no_nxn(report: dict, n: int, what: str) -> None:
    """No tensor with as many elements as one N x N matrix was created during the audited call."""
    if report["max_numel"] >= n * n:
        raise AssertionError(
            f"Integrity check failed in {what}: a tensor of shape {report.get('max_shape')} "
            f"({report['max_numel']} elements, made by {report.get('max_op')}) was created, at least one "
            f"N x N = {n}x{n} matrix. FlashAttention must never materialise the score matrix in memory.")


# --------------------------------------------------------------------------- ahead-of-time compile


def aot_check(student, student_client, *, backward: bool) -> str:
    """Compile the student's kernels for a real GPU (sm_90 here, this machine's card on a GPU machine) at
    the configurations their own launch code picks (routine ``aot_compile`` in the worker, see
    autograder.sandbox.aot); fail with Triton's error or the exceeded resource. Returns the report's text."""
    from autograder.testing import format_report

    fn = fetch(student.flash.flash_attention_forward)
    target = "native" if on_gpu() else "sm_90"
    what = "the backward kernels" if backward else "the forward kernel"
    # Forward: the largest and the smallest tiles (N = 200 and 4096, every head dim, causal or not, bf16),
    # at most 3 compiles; backward: the largest tiles of each kernel. Both in one child process: the
    # worker keeps the backward's report for the flash_backward test.
    report = routine(student_client, "aot_compile", fn, backward=backward, target=target, timeout_s=95.0,
                     forward_request={"per_kernel": 2, "max_compiles": 3},
                     backward_request={"per_kernel": 1, "max_compiles": 3},
                     timeout=100.0, what=f"compiling {what} of {'/'.join(FLASH_FILE)} for a GPU")
    try:
        if type(report.get("ok")) is not bool or type(report.get("units")) is not list:
            raise TypeError("malformed")
        text = format_report(report)
    except Exception:  # noqa: BLE001 - the report comes from the worker: anything may arrive
        raise AssertionError(f"compiling {what} for a GPU returned a malformed report.") from None
    if not report["ok"]:
        raise AssertionError(
            f"{what[0].upper()}{what[1:]} of flash.py would not run on a real GPU ({report.get('target')}, "
            f"{report.get('card')}):\n{text}\nTriton's interpreter accepts kernels that a GPU compile rejects: tl.dot "
            "needs every dimension >= 16, and the tiles kept in shared memory (num_stages buffers of the K and V "
            "blocks) must fit the card's shared memory. Check with `autograder selfcheck` (it prints this report).")
    return text


# --------------------------------------------------------------------------- GPU timing


def _timed_request(client, fn, stored, kwargs: dict, repeats: int, what: str, timeout: float) -> tuple[float, float]:
    """(median reported ms, grader wall seconds per call) of one cuda_time request."""
    t0 = time.perf_counter()
    res = routine(client, "cuda_time", fn, stored, kwargs, repeats=repeats, warmup=0, timeout=timeout,
                  what=f"timed GPU runs of {what}")
    wall = time.perf_counter() - t0
    ms = res.get("ms") if isinstance(res, dict) else None
    if type(ms) is not list or len(ms) != repeats or not all(type(x) is float and math.isfinite(x) and x > 0
                                                            for x in ms):
        raise AssertionError(f"{what}: the timing routine returned malformed timings.")
    if sum(ms) / 1e3 > wall:
        raise AssertionError(
            f"{what}: the kernel times reported from the worker ({sum(ms):.3f} ms for {repeats} runs) exceed the "
            f"grader's own wall-clock time of the request ({wall * 1e3:.3f} ms); timings cannot be trusted.")
    return statistics.median(ms), wall / repeats


def compare_cuda_times(a: tuple, b: tuple, kwargs: dict, *, rounds: int, repeats: int = 5,
                       what: str, warm_timeout: float = 90.0) -> dict:
    """Time a = (client, fn, args) against b, alternating requests; CUDA events + L2 flush in the workers.

    Returns the median over rounds of the reported ratio a/b, the same ratio on the grader's wall clock
    and ``ratio`` = the larger of the two: a worker cannot report itself faster than the grader's clock
    allows, while an honest faster kernel still gets a ratio <= 1 (the wall-clock ratio lies between
    the true ratio and 1).
    """
    sides = []
    for client, fn, args in (a, b):
        stored = store(client, list(args))
        # warm-up: compilation and autotuning happen here, outside the timed requests
        routine(client, "cuda_time", fn, stored, kwargs, repeats=1, warmup=1, timeout=warm_timeout,
                what=f"the first GPU runs (compilation, warm-up) of {what}")
        sides.append((client, fn, stored))
    reported, walls, a_ms, b_ms = [], [], [], []
    for r in range(rounds):
        order = (0, 1) if r % 2 == 0 else (1, 0)
        got = {}
        for i in order:
            client, fn, stored = sides[i]
            got[i] = _timed_request(client, fn, stored, kwargs, repeats, what, timeout=60.0)
        reported.append(got[0][0] / got[1][0])
        walls.append(got[0][1] / got[1][1])
        a_ms.append(got[0][0])
        b_ms.append(got[1][0])
    rep, wall = statistics.median(reported), statistics.median(walls)
    return {"reported_ratio": rep, "wall_ratio": wall, "ratio": max(rep, wall),
            "a_ms": statistics.median(a_ms), "b_ms": statistics.median(b_ms)}


def attention_flops(b: int, h: int, n: int, d: int, is_causal: bool) -> float:
    """Forward FLOPs of attention (QK^T and PV, a multiply-add = 2), halved when causal."""
    flops = 4.0 * b * h * n * n * d
    return flops / 2 if is_causal else flops
