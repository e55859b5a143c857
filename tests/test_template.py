"""Template generation from the reference, and the committed template/manifest staying in sync."""
from __future__ import annotations

import subprocess
import sys

import pytest

from autograder.authoring.template import TemplateError, generate, stale_files, strip_solutions

SRC = '''import torch


class Thing:
    def forward(self, x):
        """Docstring kept."""
        y = x + 1
        # BEGIN SOLUTION Multiply by two.
        return y * 2
        # END SOLUTION


def f(x):
    # BEGIN SOLUTION
    return x
    # END SOLUTION
'''


def test_solution_blocks_become_hinted_stubs():
    out = strip_solutions(SRC)
    assert "return y * 2" not in out and "return x\n" not in out
    assert "raise NotImplementedError('Thing.forward: Multiply by two.')" in out
    assert "raise NotImplementedError('f: implement this part')" in out
    assert '"""Docstring kept."""' in out and "y = x + 1" in out
    compile(out, "t", "exec")


@pytest.mark.parametrize("src,match", [
    ("def f():\n    # BEGIN SOLUTION\n    return 1\n", "without END"),
    ("def f():\n    return 1\n    # END SOLUTION\n", "without BEGIN"),
    ("def f():\n    # BEGIN SOLUTION\n    # BEGIN SOLUTION\n    # END SOLUTION\n", "nested"),
])
def test_malformed_markers_are_errors(src, match):
    with pytest.raises(TemplateError, match=match):
        strip_solutions(src)


def test_stale_template_is_detected(tmp_path, cfg):
    ref_pkg = cfg.reference_root / cfg.package
    out = tmp_path / cfg.package
    generate(ref_pkg, out)
    assert stale_files(ref_pkg, out) == []
    (out / "attention.py").write_text("# edited by hand\n")
    (out / "extra.py").write_text("")
    problems = stale_files(ref_pkg, out)
    assert "out of date: attention.py" in problems and "not in the reference: extra.py" in problems


def test_template_has_no_solution_code(cfg):
    for path in (cfg.template_root / cfg.package).rglob("*.py"):
        text = path.read_text()
        assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text, path


@pytest.mark.parametrize("command", ["template", "manifest"])
def test_committed_files_are_in_sync(command):
    proc = subprocess.run([sys.executable, "-m", "autograder", command, "--check"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
