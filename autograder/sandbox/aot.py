"""Ahead-of-time compilation of a submission's Triton kernels for real GPUs, on a machine without one.

Triton's interpreter (what runs the kernels on CPU machines) accepts programs a GPU compile rejects
(tl.dot tiles under 16, too much shared memory), so the kernels are also compiled for sm_80 (A100)
and sm_90 (H100) with ``triton.compile`` and the ptxas bundled in the triton wheel, and the result
is checked against the card's limits.

Which configurations? The ones the submission's own launch code picks: ``flash_attention_forward``
(and the backward) is called on a few shapes of zero tensors with ``TRITON_INTERPRET`` unset (launch
code takes its GPU branch) and every kernel launch intercepted: a launch records its kernel,
arguments, constexprs, num_warps and num_stages and runs nothing; an autotuned launch records every
candidate its ``prune_configs_by`` keeps. This works in any process, the grader's worker included,
where the kernels are interpreter objects.

A few of those launches are then compiled for the target (1-3 CPU-seconds each) in a child process:
one where the interpreter has run cannot compile (it leaves ``triton.language`` patched), and the
child imports the submission with torch stubbed out (kernels never use it), so it stays small next
to the worker in a 768 MB container. Used by the grader (the worker's child inherits the sandbox;
see :func:`autograder.sandbox.routines.aot_compile`), by ``autograder selfcheck`` and by the project's tests.
Run ``python -m autograder.sandbox.aot ROOT [--target sm_80|sm_90] [--backward]`` for a report.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autograder.sandbox.student_imports import package_or_bare

HEAD_DIMS = (16, 32, 64, 128)


@dataclass(frozen=True)
class Target:
    name: str
    capability: int
    max_shared: int  # bytes of shared memory one block may use (the opt-in maximum)
    card: str


TARGETS = {
    "sm_80": Target("sm_80", 80, 166912, "A100"),  # 163 KiB
    "sm_90": Target("sm_90", 90, 232448, "H100"),  # 227 KiB
}
DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def present_target() -> Target | None:
    """The GPU of this machine as a Target, or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    try:
        from triton.runtime import driver

        smem = int(driver.active.utils.get_device_properties(torch.cuda.current_device())["max_shared_mem"])
    except Exception:  # noqa: BLE001 - fall back to the known figure of the family
        smem = TARGETS["sm_90" if major >= 9 else "sm_80"].max_shared
    return Target(f"sm_{major}{minor}", major * 10 + minor, smem, torch.cuda.get_device_name())


def resolve_target(name: str) -> Target:
    if name == "native":
        t = present_target()
        if t is None:
            raise ValueError("no GPU here: name a target (sm_80 or sm_90)")
        return t
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r} (known: {', '.join(TARGETS)}, native)")
    return TARGETS[name]


# --------------------------------------------------------------------------- recording launches


def _encode(value: Any) -> Any:
    """A launch argument as JSON: tensors by dtype and alignment, scalars as they are."""
    import torch

    if isinstance(value, torch.Tensor):
        return {"tensor": str(value.dtype).removeprefix("torch."), "aligned": value.data_ptr() % 16 == 0}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "value") and isinstance(getattr(value, "value"), (bool, int, float, str)):  # tl.constexpr
        return value.value
    return {"unsupported": type(value).__name__}


class _FakeDtype:
    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        return f"torch.{self.name}"

    __repr__ = __str__


_FAKE_DTYPES: dict[str, _FakeDtype] = {}


class _FakeTensor:
    """What Triton's binder reads of a tensor argument (dtype and alignment), without torch. One dtype
    object per name, kept alive: Triton caches its type string by the dtype object, as for torch's."""

    def __init__(self, dtype: str, aligned: bool) -> None:
        self.dtype = _FAKE_DTYPES.setdefault(dtype, _FakeDtype(dtype))
        self._ptr = 0 if aligned else 2

    def data_ptr(self) -> int:
        return self._ptr


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "tensor" in value:
        return _FakeTensor(value["tensor"], bool(value.get("aligned", True)))
    if isinstance(value, dict):
        raise ValueError(f"an argument of type {value.get('unsupported')} cannot be compiled ahead of time")
    return value


def _arg_names(fn: Any) -> list[str]:
    import inspect

    return list(getattr(fn, "arg_names", None) or inspect.signature(fn.fn).parameters)


def _constexpr_names(fn: Any) -> set[str]:
    """The tl.constexpr parameters of a JITFunction or of an InterpretedFunction (by annotation)."""
    import inspect

    if hasattr(fn, "params"):
        return {p.name for p in fn.params if p.is_constexpr}
    out = set()
    for name, p in inspect.signature(fn.fn).parameters.items():
        ann = p.annotation
        if (isinstance(ann, str) and ann.split(".")[-1] == "constexpr") or getattr(ann, "__name__", "") == "constexpr":
            out.add(name)
    return out


class _Recorder:
    """Patches Triton's launchers so a launch is recorded instead of run (see the module docstring)."""

    def __init__(self) -> None:
        self.launches: list[dict] = []
        self._group = 0
        self._saved: list[tuple[Any, str, Any]] = []

    def _record(self, fn: Any, args: tuple, kwargs: dict, group: int | None, config: dict | None) -> None:
        raw = fn.fn
        kid = f"{raw.__module__}:{raw.__qualname__}"
        kw = {k: v for k, v in kwargs.items() if k not in ("grid", "warmup")}
        names = _constexpr_names(fn)
        self.launches.append({
            "kernel": kid, "module": raw.__module__, "qualname": raw.__qualname__, "name": raw.__name__,
            "args": [_encode(a) for a in args], "kwargs": {k: _encode(v) for k, v in kw.items()},
            "group": group, "config": config,
            "constexprs": {n: _encode(v) for n, v in zip(_arg_names(fn), args) if n in names}
            | {k: _encode(v) for k, v in kw.items() if k in names},
        })

    def __enter__(self) -> _Recorder:
        from triton.runtime import autotuner, jit

        rec = self

        def run(this, *args, grid=None, warmup=False, **kwargs):
            rec._record(this, args, kwargs, getattr(rec, "_current_group", None), getattr(rec, "_current_cfg", None))
            return None

        def tuned(this, *args, **kwargs):
            this.nargs = dict(zip(this.arg_names, args))
            configs = this.prune_configs(kwargs) if len(this.configs) > 1 else this.configs
            rec._group += 1
            for cfg in configs:
                rec._current_group, rec._current_cfg = rec._group, {k: _encode(v) for k, v in cfg.all_kwargs().items()}
                try:
                    this.fn.run(*args, **kwargs, **cfg.all_kwargs())
                finally:
                    rec._current_group = rec._current_cfg = None
            return None

        owners = [(jit.JITFunction, "run", run), (autotuner.Autotuner, "run", tuned)]
        if "triton.runtime.interpreter" in sys.modules:  # (importing it patches triton.language: only if loaded)
            owners.append((sys.modules["triton.runtime.interpreter"].InterpretedFunction, "run", run))
        for owner, name, new in owners:
            self._saved.append((owner, name, owner.__dict__[name]))
            setattr(owner, name, new)
        return self

    def __exit__(self, *exc: Any) -> None:
        for owner, name, old in self._saved:
            setattr(owner, name, old)


def forward_shapes(n_values: tuple[int, ...] = (200, 4096), head_dims: tuple[int, ...] = HEAD_DIMS,
                   dtypes: tuple[str, ...] = ("bfloat16",), causal: tuple[bool, ...] = (False, True)) -> list[dict]:
    """(B, H, N, D), dtype and causality of the calls whose launches are recorded."""
    return [{"shape": [1, 2, n, d], "dtype": dt, "causal": c}
            for dt in dtypes for n in n_values for d in head_dims for c in causal]


def record(module: Any, shapes: list[dict], backward: bool) -> list[dict]:
    """Call the submission's flash functions on ``shapes`` with every Triton launch recorded, not run.

    With ``backward``, the launches of ``flash_attention(...).backward()`` that the forward alone does not
    make. Launch code is first run as on a GPU (no TRITON_INTERPRET); if it raises there, again with
    TRITON_INTERPRET=1 in the environment (configurations as it would pick them here).
    """
    import torch

    from autograder.sandbox.backprop import backprop

    def calls(rec: _Recorder) -> None:
        for s in shapes:
            dtype = getattr(torch, s["dtype"])
            q, k, v = (torch.zeros(s["shape"], dtype=dtype) for _ in range(3))
            start = len(rec.launches)
            if backward:
                qs = [t.clone().requires_grad_(True) for t in (q, k, v)]
                with _Recorder() as fwd_only:
                    module.flash_attention_forward(q, k, v, is_causal=s["causal"])
                o = module.flash_attention(*qs, is_causal=s["causal"])
                backprop(o, torch.zeros_like(o))
                forward_kernels = {x["kernel"] for x in fwd_only.launches}
                rec.launches[start:] = [x for x in rec.launches[start:] if x["kernel"] not in forward_kernels]
            else:
                module.flash_attention_forward(q, k, v, is_causal=s["causal"])
            for x in rec.launches[start:]:
                x["call"] = s

    saved = os.environ.pop("TRITON_INTERPRET", None)
    try:
        rec = _Recorder()
        try:
            with rec:
                calls(rec)
            mode = "as on a GPU"
        except Exception:  # noqa: BLE001 - e.g. launch code that insists on CUDA tensors here
            os.environ["TRITON_INTERPRET"] = "1"
            rec = _Recorder()
            with rec:
                calls(rec)
            mode = "as under the interpreter (the launch code raised when run as on a GPU)"
    finally:
        if saved is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved
    for x in rec.launches:
        x["mode"] = mode
    return rec.launches


# --------------------------------------------------------------------------- choosing what to compile


def _launch_key(x: dict) -> str:
    return json.dumps([x["kernel"], x["args"], x["kwargs"]], sort_keys=True, default=str)


def _size(x: dict) -> int:
    """Tile volume proxy: product of the integer constexprs (block sizes, head dim) times num_stages."""
    size = 1
    for v in x["constexprs"].values():
        if type(v) is int and v > 1:
            size *= v
    stages = x["kwargs"].get("num_stages")
    return size * (stages if type(stages) is int and stages > 0 else 3)


def units(launches: list[dict]) -> list[dict]:
    """Distinct launches, an autotuned launch as one unit holding its candidates (any one may run)."""
    out: dict[str, dict] = {}
    groups: dict[int, list[dict]] = {}
    for x in launches:
        if x["group"] is None:
            out.setdefault(_launch_key(x), {"kernel": x["kernel"], "name": x["name"], "autotuned": False,
                                            "candidates": [x]})
        else:
            groups.setdefault(x["group"], []).append(x)
    for members in groups.values():
        key = "|".join(sorted(_launch_key(m) for m in members))
        out.setdefault(key, {"kernel": members[0]["kernel"], "name": members[0]["name"], "autotuned": True,
                             "candidates": sorted(members, key=_size, reverse=True)})
    for u in out.values():
        u["size"] = max(_size(c) for c in u["candidates"])
    return list(out.values())


def select(all_units: list[dict], per_kernel: int | None) -> list[dict]:
    """Per kernel the largest unit (most shared memory and registers) and, with ``per_kernel`` = 2, the
    smallest (smallest tiles, e.g. a tl.dot dimension under 16); None keeps every unit."""
    if per_kernel is None:
        return all_units
    by_kernel: dict[str, list[dict]] = {}
    for u in all_units:
        by_kernel.setdefault(u["kernel"], []).append(u)
    chosen: list[dict] = []
    for pick in (max, min)[:per_kernel]:
        for us in by_kernel.values():
            u = pick(us, key=lambda u: u["size"])
            if all(u is not c for c in chosen):
                chosen.append(u)
    return chosen


# --------------------------------------------------------------------------- compiling


def _ptxas_figures(log: str) -> dict:
    """Registers, stack frame and spills out of ``ptxas -v``'s log (the last function it reports)."""
    import re

    out: dict[str, int | None] = {"registers": None, "stack_bytes": 0, "spill_bytes": 0}
    for m in re.finditer(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log):
        out["stack_bytes"], out["spill_bytes"] = int(m.group(1)), max(int(m.group(2)), int(m.group(3)))
    for m in re.finditer(r"Used (\d+) registers", log):
        out["registers"] = int(m.group(1))
    return out


def _ptxas_log(ptx: str, capability: int) -> str:
    """``ptxas -v`` on the kernel's PTX with the ptxas Triton uses for this target (when the compile came
    from Triton's cache and printed no log)."""
    import tempfile

    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        proc = subprocess.run([get_ptxas(capability).path, "-v", "--regAllocOptLevel=2",
                               f"--gpu-name={sm_arch_from_capability(capability)}", str(src), "-o",
                               str(Path(tmp) / "k.o")], capture_output=True, text=True, timeout=300)
    return proc.stdout + proc.stderr


def _figures(kernel: Any, log: str, target: Target) -> dict:
    """ptxas's figures for a compiled kernel: from the log Triton printed, else (a hit in Triton's cache,
    no log) from our note beside the cache, else from running ptxas -v again; kept beside the cache."""
    from triton.runtime.cache import get_cache_manager

    name = f"aot-figures-{target.capability}.json"
    cache = get_cache_manager(kernel.hash)
    if "registers" in log:
        figures = _ptxas_figures(log)
    else:
        saved = cache.get_file(name)
        if saved:
            return json.loads(Path(saved).read_text())
        figures = _ptxas_figures(_ptxas_log(kernel.asm.get("ptx", ""), target.capability))
    cache.put(json.dumps(figures), name, binary=False)
    return figures


def _compile_error(e: BaseException, context_lines: int = 8) -> str:
    """Triton's error, the reason first: a CompilationError shows the kernel source up to the failing
    expression and keeps the reason (e.g. tl.dot's shape rule) in the exception it was raised from."""
    reasons = []
    inner: BaseException | None = e.__cause__ or e.__context__
    while inner is not None and len(reasons) < 5:
        text = str(inner).strip()
        if text and type(inner).__name__ != "CompilationError":
            reasons.append(f"{type(inner).__name__}: {text.splitlines()[-1][:500]}")
        inner = inner.__cause__ or inner.__context__
    lines = str(e).strip().splitlines()
    excerpt = "\n".join(lines[:1] + lines[1:][-context_lines:])
    head = reasons[-1] if reasons else f"{type(e).__name__}"
    return f"{head}\n{excerpt}"


def compile_launch(fn: Any, launch: dict, target: Target) -> dict:
    """Compile one recorded launch of JITFunction ``fn`` for ``target``; the figures or the error."""
    import contextlib
    import io

    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    t0 = time.perf_counter()
    cfg = {k: v for k, v in launch["constexprs"].items()}
    kw = launch["kwargs"]
    report = {"kernel": launch["name"], "target": target.name, "constexprs": cfg,
              "num_warps": kw.get("num_warps", 4), "num_stages": kw.get("num_stages", 3),
              "dtype": launch.get("call", {}).get("dtype"), "shape": launch.get("call", {}).get("shape"),
              "causal": launch.get("call", {}).get("causal"), "max_shared": target.max_shared}
    try:
        gpu = GPUTarget("cuda", target.capability, 32)
        backend = make_backend(gpu)
        binder = create_function_from_signature(fn.signature, fn.params, backend)
        args = [_decode(a) for a in launch["args"]]
        kwargs = {k: _decode(v) for k, v in kw.items()}
        kwargs.setdefault("debug", False)
        bound, specialization, options = binder(*args, **kwargs)
        options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
        log = io.StringIO()
        knobs.nvidia.dump_ptxas_log = True  # Triton prints ptxas -v's log (registers, spills) on a compile
        try:
            with contextlib.redirect_stdout(log):
                kernel = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=gpu,
                                        options=options.__dict__)
        finally:
            knobs.nvidia.dump_ptxas_log = False
    except Exception as e:  # noqa: BLE001 - Triton's compile errors are the report
        report.update(ok=False, error=_compile_error(e), seconds=round(time.perf_counter() - t0, 2))
        return report
    ptx = kernel.asm.get("ptx", "")
    report.update(shared=int(kernel.metadata.shared), **_figures(kernel, log.getvalue(), target),
                  mma="mma.sync" in ptx or "wgmma" in ptx, wgmma="wgmma" in ptx,
                  seconds=round(time.perf_counter() - t0, 2))
    problems = []
    if report["shared"] > target.max_shared:
        problems.append(f"needs {report['shared']} bytes of shared memory per block, more than the "
                        f"{target.max_shared} a {target.card} ({target.name}) block may use")
    report["ok"] = not problems
    report["error"] = "; ".join(problems) or None
    return report


def compile_units(chosen: list[dict], kernels: dict[str, Any], target: Target,
                  max_compiles: int | None) -> list[dict]:
    """Compile each unit; an autotuned unit passes when one candidate does (the autotuner skips the
    others on the GPU), so with a budget its candidates are tried largest first until one passes.
    Every unit compiles at least one candidate; after a unit fails the rest are left (the verdict is known)."""
    done = 0
    out = []
    for u in chosen:
        u = dict(u, results=[])
        out.append(u)
        fn = kernels.get(u["kernel"])
        if not callable(getattr(fn, "run", None)):
            u.update(ok=True, skipped=str(fn), pruned_or_skipped=len(u["candidates"]))
            continue
        for cand in u["candidates"]:
            if max_compiles is not None and done >= max_compiles and u["results"]:
                break
            u["results"].append(compile_launch(fn, cand, target))
            done += 1
            if u["autotuned"] and max_compiles is not None and u["results"][-1]["ok"]:
                break
        u["ok"] = any(r["ok"] for r in u["results"]) if u["autotuned"] else all(r["ok"] for r in u["results"])
        u["pruned_or_skipped"] = len(u["candidates"]) - len(u["results"])
        if not u["ok"] and max_compiles is not None:
            break
    return out


# --------------------------------------------------------------------------- the compile process


class _TorchStub:
    """Stands for anything of torch while the compile process imports the submission: kernels never use
    torch, and not importing it keeps that process small (about 35 MB instead of 180 MB of its own
    memory, next to a worker and a grader that already hold torch in a 768 MB container)."""

    def __init__(self, name: str = "torch") -> None:
        object.__setattr__(self, "_name", name)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        return _TorchStub(f"{self._name}.{key}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and callable(args[0]) and not kwargs:  # a decorator: leave the function as is
            return args[0]
        return _TorchStub(f"{self._name}()")

    def __mro_entries__(self, bases: tuple) -> tuple:  # class F(torch.autograd.Function)
        return (object,)

    def __repr__(self) -> str:
        return self._name

    def __bool__(self) -> bool:
        return False

    def __iter__(self) -> Any:
        return iter(())

    def __getitem__(self, key: Any) -> Any:
        return _TorchStub(f"{self._name}[]")

    def __hash__(self) -> int:
        return hash(self._name)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, _TorchStub) and other._name == self._name


def _install_torch_stub() -> Any:
    import importlib.abc
    import importlib.machinery
    import types

    class Module(types.ModuleType):
        def __getattr__(self, key: str) -> Any:
            if key.startswith("__"):
                raise AttributeError(key)
            return _TorchStub(f"{self.__name__}.{key}")

    class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path, target=None):  # noqa: ANN001
            if name == "torch" or name.startswith("torch."):
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):  # noqa: ANN001
            return Module(spec.name)

        def exec_module(self, module):  # noqa: ANN001
            module.__path__ = []

    finder = Finder()
    sys.meta_path.insert(0, finder)
    return finder


def _find_kernels(root: Path, wanted: list[dict]) -> dict[str, Any]:
    """kernel id -> JITFunction (or why not), importing the submission's modules from ``root`` with torch
    stubbed out; if that import fails, again with the real torch."""
    import importlib

    from triton.runtime.jit import JITFunction

    sys.path.insert(0, str(root))
    modules = sorted({w["module"] for w in wanted})

    def load(m: str) -> Any:  # a broken package face costs nothing here either (as in the worker)
        if "." in m:
            package_or_bare(m.partition(".")[0], str(root))
        return importlib.import_module(m)

    finder = _install_torch_stub()
    try:
        loaded = {m: load(m) for m in modules}
    except Exception:  # noqa: BLE001 - module code that needs the real torch at import time
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n == "torch" or n.startswith("torch.") or n in modules
                     or any(n == m.partition(".")[0] or n.startswith(m.partition(".")[0] + ".")
                            for m in modules if "." in m)]:
            sys.modules.pop(name, None)
        loaded = {m: load(m) for m in modules}
    out: dict[str, Any] = {}
    for w in wanted:
        obj: Any = loaded[w["module"]]
        for part in w["qualname"].split("."):
            obj = getattr(obj, part, None) if part != "<locals>" else None
            if obj is None:
                break
        while obj is not None and not isinstance(obj, JITFunction) and hasattr(obj, "fn"):
            obj = obj.fn  # Autotuner / Heuristics around the kernel
        out[w["kernel"]] = obj if isinstance(obj, JITFunction) else (
            f"{w['qualname']} is not a module-level kernel, so it was not compiled here")
    return out


def _compile_main(request: dict) -> list[list[dict]]:
    """The compile process: ``request`` = root, target and ``jobs``, each ``units`` (of :func:`units`) and
    ``max_compiles``; one list of compiled units per job. One process for every job: Triton's import and
    its first compile's setup (about half a CPU-second) are paid once."""
    target = Target(**request["target"])
    chosen = [u for job in request["jobs"] for u in job["units"]]
    kernels = _find_kernels(Path(request["root"]), [{"kernel": u["kernel"], "module": u["candidates"][0]["module"],
                                                     "qualname": u["candidates"][0]["qualname"]} for u in chosen])
    return [compile_units(job["units"], kernels, target, job.get("max_compiles")) for job in request["jobs"]]


def _child_env(cache_dir: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    if cache_dir:
        env["TRITON_CACHE_DIR"] = cache_dir
    return env


def _run_child(args: list[str], stdin: str, timeout: float, env: dict[str, str], what: str) -> list[str]:
    try:
        proc = subprocess.run([sys.executable, "-I", "-m", "autograder.sandbox.aot", *args], input=stdin,
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what} took more than {timeout:g} s") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("{", "["))]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}")
    return lines


def compile_in_child(root: Path, jobs: list[tuple[list[dict], int | None]], target: Target, *,
                     timeout: float = 300, cache_dir: str | None = None) -> list[list[dict]]:
    """:func:`compile_units` for each job (units, max_compiles) in one fresh process without
    TRITON_INTERPRET and without torch: Triton cannot compile for a GPU in a process where its
    interpreter ran (it patches triton.language for good)."""
    request = {"root": str(root), "target": target.__dict__,
               "jobs": [{"units": chosen, "max_compiles": budget} for chosen, budget in jobs]}
    lines = _run_child(["--compile"], json.dumps(request), timeout, _child_env(cache_dir),
                       "compiling the kernels for a GPU")
    return json.loads(lines[-1])


# --------------------------------------------------------------------------- the whole check


def import_flash(root: Path, module: str = "transformer_lab.flash") -> Any:
    import importlib

    sys.path.insert(0, str(root))
    if "." in module:
        package_or_bare(module.partition(".")[0], str(root))
    return importlib.import_module(module)


def check(module: Any, root: Path, *, target: str = "sm_90", backward: bool = False,
          shapes: list[dict] | None = None, per_kernel: int | None = 2, max_compiles: int | None = 3,
          timeout: float = 300, cache_dir: str | None = None) -> dict:
    """Record the launches of ``module`` (imported from ``root``; any process, the interpreter's
    included) and compile a few for ``target`` in a child process. Returns a JSON-able report:
    ``ok``, ``units`` (each with its compile ``results``), ``mode``, ``error``."""
    request = {"backward": backward, "shapes": shapes, "per_kernel": per_kernel, "max_compiles": max_compiles}
    return check_many(module, root, [request], target=target, timeout=timeout, cache_dir=cache_dir)[0]


REQUEST_KEYS = frozenset({"backward", "shapes", "per_kernel", "max_compiles"})


def check_many(module: Any, root: Path, requests: list[dict], *, target: str = "sm_90", timeout: float = 300,
               cache_dir: str | None = None) -> list[dict]:
    """:func:`check` for each request (``backward``, ``shapes``, ``per_kernel``, ``max_compiles``), the
    launches recorded here one request after another and every compile in one child process, within
    ``timeout`` for all of them. Each report's ``seconds`` is the time of the whole batch."""
    t0 = time.perf_counter()
    for req in requests:
        unknown = set(req) - REQUEST_KEYS
        if unknown:
            raise ValueError(f"unknown ahead-of-time request keys {sorted(unknown)}; known: {sorted(REQUEST_KEYS)}")
    tgt = resolve_target(target)
    reports: list[dict[str, Any]] = []
    jobs: list[tuple[list[dict], int | None]] = []
    for req in requests:
        backward = bool(req.get("backward", False))
        report: dict[str, Any] = {"target": tgt.name, "card": tgt.card, "max_shared": tgt.max_shared,
                                  "backward": backward, "units": [], "ok": False, "error": None}
        reports.append(report)
        try:
            launches = record(module, req.get("shapes") or forward_shapes(), backward)
        except Exception as e:  # noqa: BLE001
            report["error"] = f"calling your launch code with launches recorded failed: {type(e).__name__}: {e}"
            continue
        if not launches:
            report["error"] = "no Triton kernel launch was recorded" + (" in the backward" if backward else "")
            continue
        report["mode"] = launches[0]["mode"]
        all_units = units(launches)
        report["recorded"] = len(all_units)
        report["job"] = len(jobs)
        jobs.append((select(all_units, req.get("per_kernel", 2)), req.get("max_compiles", 3)))
    if jobs:
        compiled = compile_in_child(root, jobs, tgt, timeout=max(1.0, timeout - (time.perf_counter() - t0)),
                                    cache_dir=cache_dir)
        for report in reports:
            if "job" not in report:
                continue
            chosen = compiled[report.pop("job")]
            for u in chosen:
                u["candidates"] = len(u["candidates"])
            report["units"] = chosen
            report["ok"] = all(u["ok"] for u in chosen)
    seconds = round(time.perf_counter() - t0, 2)
    for report in reports:
        report["seconds"] = seconds
    return reports


def run_checks(root: Path, requests: list[dict], *, target: str = "sm_90", timeout: float = 300,
               cache_dir: str | None = None) -> list[dict]:
    """:func:`check` for each request (keyword arguments, ``backward`` and ``module`` included) in one
    fresh ``python -I -m autograder.sandbox.aot`` process that imports the submission without TRITON_INTERPRET
    (launch code then picks its GPU configurations); consecutive requests for one module compile in one
    child (:func:`check_many`), each request with up to 300 s."""
    args = [str(root), "--target", target, "--json", "--request", json.dumps(requests)]
    lines = _run_child(args, "", timeout, _child_env(cache_dir), "the ahead-of-time check")
    return [json.loads(ln) for ln in lines[-len(requests):]]


def run_check(root: Path, *, target: str = "sm_90", backward: bool = False, timeout: float = 300,
              cache_dir: str | None = None, **kw: Any) -> dict:
    """One :func:`check` (see :func:`run_checks`)."""
    return run_checks(root, [{"backward": backward, **kw}], target=target, timeout=timeout, cache_dir=cache_dir)[0]


# --------------------------------------------------------------------------- text report


def format_report(report: dict, limit_error: int = 1500) -> str:
    """One line per compiled kernel configuration (and the errors), for students and for test output."""
    what = "backward" if report.get("backward") else "forward"
    lines = [f"{what} kernels compiled for {report['target']} ({report['card']}, {report['max_shared']} bytes of "
             f"shared memory per block), configurations picked by your launch code {report.get('mode', '')}:"]
    if report.get("error"):
        lines.append(f"  {report['error'][:limit_error]}")
    for u in report.get("units", []):
        if u.get("skipped"):
            lines.append(f"  {u['name']}: {u['skipped']}")
        for r in u["results"]:
            cfg = ", ".join(f"{k}={v}" for k, v in r["constexprs"].items())
            head = (f"  {r['kernel']}[{cfg}, num_warps={r['num_warps']}, num_stages={r['num_stages']}] "
                    f"{r['dtype']}{' (autotune candidate)' if u['autotuned'] else ''}: ")
            if "shared" not in r:
                lines.append(head + "DOES NOT COMPILE: " + r["error"][:limit_error])
                continue
            lines.append(head + f"shared {r['shared']} B, {r['registers']} registers, "
                         f"{'no spills' if not r['spill_bytes'] else str(r['spill_bytes']) + ' B spilled'}, "
                         f"{'wgmma' if r['wgmma'] else 'mma' if r['mma'] else 'no mma'}, "
                         f"{r['seconds']} s" + ("" if r["ok"] else f" -- FAILS: {r['error']}"))
        if u["autotuned"] and u["ok"] and not all(r["ok"] for r in u["results"]):
            lines.append("    (the autotuner skips the candidates that fail on the GPU; prune them with "
                         "prune_configs_by)")
        if u.get("pruned_or_skipped"):
            lines.append(f"    ({u['pruned_or_skipped']} more autotune candidate(s) not compiled here)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--compile"]:  # the compile process (see compile_in_child): JSON in, JSON out
        print(json.dumps(_compile_main(json.loads(sys.stdin.read())), default=str), flush=True)
        return 0
    p = argparse.ArgumentParser(prog="python -m autograder.sandbox.aot", description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path, help="implementation root (contains transformer_lab/)")
    p.add_argument("--target", default="sm_90", help="sm_80, sm_90 or native")
    p.add_argument("--backward", action="store_true", help="the backward kernels instead of the forward")
    p.add_argument("--json", action="store_true", help="print the report as one JSON line")
    p.add_argument("--request", default="{}",
                   help="JSON: shapes, per_kernel, max_compiles, module (a list of such: one report each)")
    a = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        p.error("unset TRITON_INTERPRET: the launch code should pick its GPU configurations")
    req = json.loads(a.request)
    requests = [dict(r) for r in (req if isinstance(req, list) else [{"backward": a.backward, **req}])]
    root = a.root.resolve()
    ok = True
    i = 0
    while i < len(requests):  # consecutive requests for one module share its import and one compile child
        name = requests[i].get("module", "transformer_lab.flash")
        group = []
        while i < len(requests) and requests[i].get("module", "transformer_lab.flash") == name:
            group.append({k: v for k, v in requests[i].items() if k != "module"})
            i += 1
        try:
            module = import_flash(root, name)
        except Exception as e:  # noqa: BLE001
            reports = [{"target": a.target, "card": "", "max_shared": 0, "backward": r.get("backward", False),
                        "units": [], "ok": False, "error": f"importing your module failed: {type(e).__name__}: {e}"}
                       for r in group]
        else:
            reports = check_many(module, root, group, target=a.target, timeout=300.0 * len(group),
                                 cache_dir=os.environ.get("TRITON_CACHE_DIR"))
        for report in reports:
            print(json.dumps(report, default=str) if a.json else format_report(report), flush=True)
            ok = ok and report["ok"]
    return 0 if ok or a.json else 1


if __name__ == "__main__":
    sys.exit(main())
