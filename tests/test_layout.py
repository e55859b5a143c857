"""The package's layout is its architecture: no import cycles, nothing in the trust boundary
(autograder.sandbox) imports grading code, old module paths still import, suites' names are stable."""
from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import autograder

PACKAGE = Path(autograder.__file__).resolve().parent
ROOT = PACKAGE.parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The autograder modules ``name`` imports, anywhere in it (function-level imports included),
    each with the packages its import runs."""
    is_pkg = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets.add(module)
            targets |= {f"{module}.{a.name}" for a in node.names}
    out = set()
    for t in targets:
        parts = t.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a, a.b and a.b.c
            candidate = ".".join(parts[:i])
            if candidate in MODULES and candidate != name:
                out.add(candidate)
    out.discard("autograder")  # the top package only installs the finder for old paths
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read():
    assert "autograder.sandbox.forkserver" in GRAPH["autograder.sandbox.client"]
    assert "autograder.grading.plugin" in GRAPH["autograder.grading.hostserver"]  # a function-level import


def test_no_import_cycles():
    assert _cycles() == []


def test_the_sandbox_imports_no_grading_code():
    for name, deps in GRAPH.items():
        if name.startswith("autograder.sandbox"):
            outside = sorted(d for d in deps if not d.startswith("autograder.sandbox"))
            assert outside == [], f"{name} imports {outside}"


@pytest.mark.parametrize("old", sorted(autograder.MOVED))
def test_old_module_paths_import_the_same_module(old):
    assert (PACKAGE / Path(*autograder.MOVED[old].split("."))).with_suffix(".py").exists(), old
    assert importlib.import_module(f"autograder.{old}") is importlib.import_module(f"autograder.{autograder.MOVED[old]}")


def test_old_names_still_work():
    from autograder.client import forward_backward  # noqa: F401 - as suites wrote it before
    from autograder.sandbox import kill_user, plan  # noqa: F401 - autograder.sandbox was a module
    from autograder.testing import fetch, forward_backward as fb, measured, oracle, repeat, routine, store  # noqa: F401

    assert fb is forward_backward
    out = subprocess.run([sys.executable, "-m", "autograder.cli", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "selfcheck" in out.stdout, out.stderr[-2000:]


def test_every_module_named_in_the_architecture_page_exists():
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = set(__import__("re").findall(r"`(autograder(?:\.\w+)+)`", text))
    assert len(named) >= 20
    missing = sorted(n for n in named if n not in MODULES
                     and n.rpartition(".")[0] not in MODULES)  # (a function of a module counts)
    assert missing == []


def test_every_subpackage_is_packaged():
    """pyproject lists the packages for the wheel (the Gradescope zip and the student kit install it)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    present = {".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGE.rglob("__init__.py")}
    assert listed == present
