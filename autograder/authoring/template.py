"""Generate the student template from the reference by cutting out solution blocks.

In the reference, a block between ``# BEGIN SOLUTION <hint>`` and ``# END SOLUTION`` becomes
``raise NotImplementedError("<function>: <hint>")`` at the block's indentation. Signatures,
docstrings and everything outside the blocks are kept, so the template imports cleanly and
every stub says where to start.
"""
from __future__ import annotations

import ast
import filecmp
import re
import shutil
import tempfile
from pathlib import Path

BEGIN = re.compile(r"^(?P<indent>\s*)# BEGIN SOLUTION\b ?(?P<hint>.*)$")
END = re.compile(r"^\s*# END SOLUTION\s*$")
DEF = re.compile(r"^(?P<indent>\s*)(?:async\s+)?(?:def|class)\s+(?P<name>\w+)")
SKIP = {"__pycache__", ".pytest_cache"}


class TemplateError(Exception):
    pass


def _enclosing(lines: list[str], index: int, indent: int) -> str:
    """Dotted name of the def/class around line ``index`` (e.g. ``MultiHeadAttention.forward``)."""
    names: list[str] = []
    for line in reversed(lines[:index]):
        m = DEF.match(line)
        if m and len(m["indent"]) < indent:
            names.append(m["name"])
            indent = len(m["indent"])
            if indent == 0:
                break
    return ".".join(reversed(names))


def strip_solutions(source: str, filename: str = "<source>") -> str:
    """The template text of one reference file."""
    lines = source.splitlines(keepends=True)
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = BEGIN.match(lines[i].rstrip("\n"))
        if END.match(lines[i]):
            raise TemplateError(f"{filename}:{i + 1}: END SOLUTION without BEGIN SOLUTION")
        if not m:
            out.append(lines[i])
            i += 1
            continue
        start = i
        i += 1
        while i < len(lines) and not END.match(lines[i]):
            if BEGIN.match(lines[i].rstrip("\n")):
                raise TemplateError(f"{filename}:{i + 1}: nested BEGIN SOLUTION")
            i += 1
        if i == len(lines):
            raise TemplateError(f"{filename}:{start + 1}: BEGIN SOLUTION without END SOLUTION")
        indent = m["indent"]
        where = _enclosing(lines, start, len(indent))
        hint = m["hint"].strip() or "implement this part"
        message = f"{where}: {hint}" if where else hint
        out.append(f"{indent}# TODO: {hint}\n" if not where else "")
        out.append(f"{indent}raise NotImplementedError({message!r})\n")
        i += 1  # skip END
    text = "".join(out)
    try:
        ast.parse(text, filename)
    except SyntaxError as e:
        raise TemplateError(f"{filename}: the generated template does not parse: {e}") from None
    return text


def generate(reference_pkg: Path, out_pkg: Path) -> list[Path]:
    """Write the template of ``reference_pkg`` into ``out_pkg`` (replacing it); returns the files."""
    if out_pkg.exists():
        shutil.rmtree(out_pkg)
    written = []
    for src in sorted(reference_pkg.rglob("*")):
        rel = src.relative_to(reference_pkg)
        if any(part in SKIP for part in rel.parts) or src.is_dir() or src.suffix == ".pyc":
            continue
        dst = out_pkg / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix == ".py":
            dst.write_text(strip_solutions(src.read_text(), str(src)))
        else:
            shutil.copyfile(src, dst)
        written.append(dst)
    return written


def stale_files(reference_pkg: Path, out_pkg: Path) -> list[str]:
    """Files of the committed template that differ from a fresh generation (empty = in sync)."""
    with tempfile.TemporaryDirectory(prefix="ag-template-") as tmp:
        fresh = Path(tmp) / out_pkg.name
        generate(reference_pkg, fresh)
        problems = []
        want = {p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file()}
        have = {p.relative_to(out_pkg) for p in out_pkg.rglob("*")
                if p.is_file() and not any(s in SKIP for s in p.relative_to(out_pkg).parts)
                and p.suffix != ".pyc"} if out_pkg.exists() else set()
        problems += [f"missing: {p}" for p in sorted(want - have)]
        problems += [f"not in the reference: {p}" for p in sorted(have - want)]
        problems += [f"out of date: {p}" for p in sorted(want & have)
                     if not filecmp.cmp(fresh / p, out_pkg / p, shallow=False)]
        return problems
