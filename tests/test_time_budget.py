"""The time budget: a hang costs its call limit once, not in every later test; a slow function that
finishes is never cut off; nothing waits past the grading's deadline, and tests that could not start
before it are listed as not run with the reason."""
from __future__ import annotations

import ast
import shutil
import time

import pytest

from autograder.sandbox.client import Limits, WorkerClient
from autograder.sandbox.errors import WorkerCrashed, WorkerTimeout

MOD = '''
import time
from torch import nn

def helper(x):
    return x + 1

def loops_calling_helper():
    i = 0
    while i < 1:  # the condition never changes
        helper(i)

def outer():
    return loops_calling_helper()

def slow(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        helper(0)
    return "done"

def hangs_for(n):
    while n > 2:  # hangs only for n > 2
        helper(n)
    return n

class Attention(nn.Module):
    def forward(self, x):
        while True:
            x = helper(x)

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = Attention()

    def forward(self, x):
        return self.attn(x)
'''

# A call that fails at once, a new worker forked for it included, against a limit of 3 s: typically
# 0.04 s, under 2.5 s even on a loaded machine (2.0 s was seen once in a full run of the project's
# tests), and still below the 3 s that waiting the limit out again would take.
FAST_S = 2.5

HANGS_AT_IMPORT = "import time\nwhile True:\n    time.sleep(0.05)\n"
IMPORTS_IT = "from . import stuck\n\ndef f():\n    return 1\n"


@pytest.fixture
def root(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "mod.py").write_text(MOD)
    (tmp_path / "pkg" / "stuck.py").write_text(HANGS_AT_IMPORT)
    (tmp_path / "pkg" / "uses_stuck.py").write_text(IMPORTS_IT)
    return tmp_path


@pytest.fixture
def client(root):
    c = WorkerClient(root, "pkg", Limits(call_s=3, import_s=3, start_s=60))
    c.test_name = "part: the first test"
    yield c
    c.close()


def timed(fn, *args):
    t0 = time.monotonic()
    try:
        return fn(*args), time.monotonic() - t0
    except WorkerTimeout as e:
        return e, time.monotonic() - t0


def test_a_hung_function_costs_its_limit_once(client):
    s = client.root_ref()
    first, took = timed(s.mod.outer)
    assert isinstance(first, WorkerTimeout) and took >= 3
    text = str(first)
    # the loop is named, not the helper it calls, nor the caller that waits for it
    assert "Your function loops_calling_helper (pkg/mod.py, line 8) had been running for at least 1.5 s" in text
    client.test_name = "part: a later test"
    for call in (s.mod.loops_calling_helper, s.mod.outer):
        again, took = timed(call)
        assert isinstance(again, WorkerTimeout) and took < FAST_S, (again, took)
        assert str(again).startswith("Your function loops_calling_helper (pkg/mod.py, line 8) did not finish in an "
                                     'earlier test, "part: the first test", where it was stopped after 3 s; so this '
                                     "call of it"), str(again)
    assert s.mod.helper(1) == 2  # the helper the loop called still works
    assert s.mod.slow(0.1) == "done"


def test_a_hung_method_fails_fast_through_its_callers(client):
    s = client.root_ref()
    first, took = timed(s.mod.Attention(), 1)
    assert isinstance(first, WorkerTimeout) and took >= 3
    assert "Attention.forward" in str(first)
    again, took = timed(s.mod.Block(), 1)  # a new object, reached through another module's forward
    assert isinstance(again, WorkerTimeout) and took < FAST_S
    assert "Your function Attention.forward" in str(again) and "in forward" in str(again)  # the call path


def test_slow_calls_that_finish_are_never_cut_off(client):
    s = client.root_ref()
    for _ in range(3):  # 2.2 s each against a 3 s limit: marked halfway, never stopped
        assert s.mod.slow(2.2) == "done"
    assert client.hangs == []


def test_an_input_dependent_hang_stops_only_that_function(client):
    s = client.root_ref()
    assert s.mod.hangs_for(1) == 1
    hung, _ = timed(s.mod.hangs_for, 5)
    assert isinstance(hung, WorkerTimeout)
    assert s.mod.slow(0.1) == "done" and s.mod.helper(2) == 3


def test_a_hang_at_import_costs_its_limit_once(client):
    s = client.root_ref()
    first, took = timed(lambda: s.stuck.anything())
    assert isinstance(first, WorkerTimeout) and took >= 3
    assert "The top level of pkg/stuck.py had been running" in str(first)
    again, took = timed(lambda: s.uses_stuck.f())  # imports the module that hung
    assert isinstance(again, WorkerTimeout) and took < FAST_S
    assert str(again).startswith("The top level of pkg/stuck.py did not finish in an earlier test")
    assert s.mod.helper(1) == 2


def test_no_call_waits_past_the_deadline(client):
    client.deadline = time.time() + 1.5
    hung, took = timed(client.root_ref().mod.hangs_for, 9)
    assert isinstance(hung, WorkerTimeout) and took < 2.5
    assert "the grading's time budget was used up" in str(hung)


def test_student_code_cannot_break_the_report(root):
    """A report forged or blocked by the student's code only loses the fast path: the limit still holds."""
    (root / "pkg" / "forge.py").write_text(
        "import os, signal\n"
        "def forge(*args):\n"
        "    for fd in range(3, 64):  # wherever the report pipe is\n"
        "        try:\n"
        "            os.write(fd, b'AGHANG {\"frames\": [{\"file\": \"/etc/passwd\", \"held\": true}]}\\n')\n"
        "        except OSError:\n"
        "            pass\n"
        "def forged():\n"
        "    signal.signal(signal.SIGUSR2, forge)\n"
        "    while True: pass\n"
        "def ignored():\n"
        "    signal.signal(signal.SIGUSR2, signal.SIG_IGN)\n"
        "    while True: pass\n")
    c = WorkerClient(root, "pkg", Limits(call_s=2, import_s=3, start_s=60))
    try:
        for fn in ("forged", "ignored"):
            assert c.root_ref().mod.helper(1) == 2  # a started worker: only the call is timed below
            t0 = time.monotonic()
            with pytest.raises((WorkerTimeout, WorkerCrashed)) as e:  # the forgery may hit the reply pipe too
                getattr(c.root_ref().forge, fn)()
            took = time.monotonic() - t0
            assert took < 4, took
            assert "passwd" not in str(e.value)
        assert c.hangs == []
    finally:
        c.close()


# --------------------------------------------------------------------------- a whole grading


def hang_in_forward(src_root, dest):
    """The reference with an infinite loop at the top of MultiHeadAttention.forward."""
    shutil.copytree(src_root, dest, ignore=shutil.ignore_patterns("__pycache__"))
    path = dest / "transformer_lab" / "mha.py"
    text = path.read_text()
    tree = ast.parse(text)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MultiHeadAttention")
    fn = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "forward")
    first = fn.body[1] if isinstance(fn.body[0], ast.Expr) and isinstance(fn.body[0].value, ast.Constant) \
        else fn.body[0]
    lines = text.splitlines(True)
    pad = " " * first.col_offset
    lines.insert(first.lineno - 1, f"{pad}i = 0\n{pad}while i < 1:\n{pad}    pass\n")
    path.write_text("".join(lines))
    return dest


@pytest.mark.slow
def test_a_hang_in_forward_costs_one_limit_and_only_its_parts(cfg, tmp_path):
    from autograder.grading.runner import grade

    parts = ["attention", "mha", "block", "posenc", "analysis", "written"]
    sub = hang_in_forward(cfg.reference_root, tmp_path / "sub")
    assert (sub / "answers.ipynb").is_file()
    ref = grade(cfg, cfg.reference_root, parts=parts, time_limits={"call_s": 5})
    res = grade(cfg, sub, parts=parts, time_limits={"call_s": 5})
    by_part = res.extra_data["parts"]
    for part in ("attention", "posenc", "analysis", "written"):
        assert by_part[part]["score"] == by_part[part]["max_score"] > 0, part
    assert by_part["mha"]["score"] < by_part["mha"]["max_score"]
    stopped = [t for t in res.tests if "did not finish within 5 s" in (t.output or "")]
    fast = [t for t in res.tests if "did not finish in an earlier test" in (t.output or "")]
    assert len(stopped) == 1 and len(fast) >= 5, [t.output for t in res.tests if t.status == "failed"]
    assert f'earlier test, "{stopped[0].name}"' in fast[0].output  # names the test where it first hung
    assert res.execution_time < ref.execution_time + 5 + 20, (res.execution_time, ref.execution_time)


@pytest.mark.slow
def test_tests_after_the_deadline_are_listed_as_not_run(cfg, tmp_path):
    from autograder.grading.runner import grade

    sub = hang_in_forward(cfg.reference_root, tmp_path / "sub")
    # 9 s in all, no test may start in the last 2.25 s: the first hang (call_s 5 s) runs into that
    res = grade(cfg, sub, parts=["mha", "block", "model"], time_limits={"call_s": 5, "total_s": 9})
    from autograder.grading.manifest import read_manifest

    assert len(res.tests) == len([e for e in read_manifest(cfg.manifest_path)
                                  if e.part in ("mha", "block", "model")])  # every test listed
    not_run = [t for t in res.tests if (t.output or "").startswith("Not run: the grading's time budget")]
    assert not_run and all(t.score == 0 for t in not_run)
    assert "did not complete" in res.output and "time budget" in res.output
    assert res.execution_time < 9 + 5
