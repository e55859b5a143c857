"""The worker client: proxies, handles, and what happens when student code misbehaves."""
from __future__ import annotations

import re
import time

import pytest
import torch

from autograder.sandbox.client import (DUMP_WAIT_S, Limits, WorkerClient, fetch, forward_backward, repeat, routine, store,
                               typename, where_it_was)
from autograder.sandbox.errors import StaleObject, StudentCodeError, WorkerCrashed, WorkerTimeout
from autograder.testing import assert_equal, check_tensor

MOD = '''
import ctypes, os, sys, time
import torch
from torch import nn

COUNTER = [0]

def add(a, b=1):
    return a + b

def boom():
    raise ValueError("bad input shape")

def segfault():
    ctypes.string_at(0)

def hard_exit():
    os._exit(7)

def soft_exit():
    sys.exit(3)

def spin():
    while True: pass  # one line: wherever the loop is stopped, it is this line

def inner_loop():
    while True: pass  # inner_loop spins here

def outer_call():
    return inner_loop()  # outer_call calls here

def ignore_dump_then_spin():
    import signal
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    spin()

def block_dump_then_spin():
    import signal
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    spin()

def default_dump_then_spin():  # SIGUSR1's default action ends the process
    import signal
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    spin()

def flood_dump_then_spin():
    # A handler of the student's replaces the grader's: it floods the dump pipe with a forged
    # stack naming files outside the package, and a huge name inside it.
    import signal
    fd = int(sys.argv[-1]) if sys.argv[-1].isdigit() else 5
    here = os.path.abspath(__file__)
    fake = ('Current thread 0x0000000000000001 (most recent call first):\\n'
            '  File "/etc/passwd", line 1 in secret\\n'
            '  File "' + os.path.dirname(here) + '/../../hidden/test_x.py", line 2 in hidden\\n'
            '  File "' + here + '", line 3 in \\x1b[31m' + 'y' * 5000 + '\\n').encode() + b"z" * 2_000_000
    def handler(*a):
        try:
            os.write(fd, fake)
        except OSError:
            pass
    signal.signal(signal.SIGUSR1, handler)
    spin()

def as_numpy():
    import numpy
    return numpy.zeros(3)

def shout(n):
    print("x" * n)
    print("err" * 10, file=sys.stderr)
    return n

def subclass():
    class Sneaky(torch.Tensor):
        pass
    return torch.ones(2).as_subclass(Sneaky)

class Lin(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, x):
        COUNTER[0] += 1
        return self.fc(x)
'''


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("impl")
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "mod.py").write_text(MOD)
    (root / "pkg" / "broken.py").write_text("def f(:\n")
    (root / "pkg" / "slow_import.py").write_text("import time\nwhile True:\n    time.sleep(0.1)\n")
    return root


@pytest.fixture(scope="module")
def client(root):
    c = WorkerClient(root, "pkg", Limits(call_s=8, import_s=3, start_s=60))  # a first backward can take 3 s under load
    yield c
    c.close()


def test_calls_and_values(client):
    s = client.root_ref()
    assert s.mod.add(2, b=5) == 7
    out = s.mod.add(torch.ones(2), torch.ones(2))
    assert type(out) is torch.Tensor and torch.equal(out, torch.full((2,), 2.0))


def test_objects_stay_in_the_worker(client):
    s = client.root_ref()
    m = s.mod.Lin(4)
    assert typename(m) == "Lin"
    assert m.eval()._ag_handle().id == m._ag_handle().id  # eval() returns the same object
    w = fetch(m.fc.weight)
    assert type(w) is torch.Tensor and w.shape == (4, 4)
    names = [n for n, _ in m.named_parameters()]
    assert names == ["fc.weight", "fc.bias"]
    x = torch.randn(3, 4)
    res = forward_backward(m, [x], torch.ones(3, 4), wrt=[0], params=True)
    sd = m.state_dict()
    assert torch.allclose(res["output"], x @ sd["fc.weight"].T + sd["fc.bias"])
    assert torch.allclose(res["grads"][0], torch.ones(3, 4) @ sd["fc.weight"])
    assert set(res["param_grads"]) == {"fc.weight", "fc.bias"}


def test_repeat_with_stored_args(client):
    s = client.root_ref()
    m = s.mod.Lin(4)
    args = store(client, [torch.randn(2, 4)])
    before = fetch(s.mod.COUNTER)[0]
    repeat(m, args, 5)
    assert fetch(s.mod.COUNTER)[0] == before + 5


def test_student_exception_is_reported_with_their_traceback(client):
    with pytest.raises(StudentCodeError, match="ValueError.*bad input shape") as e:
        client.root_ref().mod.boom()
    assert "mod.py" in str(e.value) and "autograder" not in str(e.value)


def test_sys_exit_is_an_error_not_a_pass(client):
    with pytest.raises(StudentCodeError, match=r"sys.exit\(3\)"):
        client.root_ref().mod.soft_exit()


@pytest.mark.parametrize("fn,needle", [("segfault", "SIGSEGV"), ("hard_exit", "exited with code 7")])
def test_crash_then_restart(client, fn, needle):
    s = client.root_ref()
    m = s.mod.Lin(2)
    gen = client.generation
    with pytest.raises(WorkerCrashed, match=needle):
        getattr(s.mod, fn)()
    assert s.mod.add(1) == 2  # a fresh worker serves the next call
    assert client.generation == gen + 1
    with pytest.raises(StaleObject, match="restarted"):
        m(torch.ones(1, 2))


def line_of(text: str) -> int:
    return next(i for i, line in enumerate(MOD.splitlines(), 1) if text in line)


def test_hang_times_out_and_restarts(client):
    t0 = time.monotonic()
    with pytest.raises(WorkerTimeout, match="did not finish within 8 s") as e:
        client.root_ref().mod.spin()
    assert time.monotonic() - t0 < 15
    # where it was (a forked worker: the fork server is on by default), in the student's terms
    assert str(e.value) == ("Your code did not finish within 8 s (pkg.mod.spin(...)) and was stopped. "
                            f"At that moment it was in spin (pkg/mod.py, line {line_of('while True')}). "
                            f"Your function spin (pkg/mod.py, line {line_of('while True') - 1}) had been running for "
                            "at least 4 s: from now on every call of it in this grading fails at once instead of "
                            "waiting 8 s again.")
    assert client.root_ref().mod.add(1) == 2


@pytest.fixture(scope="module")
def quick(root):
    c = WorkerClient(root, "pkg", Limits(call_s=1, import_s=3, start_s=60))
    yield c
    c.close()


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "started"])
def test_timeout_names_the_students_frames(root, fork):
    c = WorkerClient(root, "pkg", Limits(call_s=1, import_s=5, start_s=60), fork=fork)
    try:
        with pytest.raises(WorkerTimeout) as e:
            c.root_ref().mod.outer_call()
    finally:
        c.close()
    text = str(e.value)
    assert text.endswith(f"it was in inner_loop (pkg/mod.py, line {line_of('inner_loop spins')}), "
                         f"called from outer_call (pkg/mod.py, line {line_of('outer_call calls')})."), text
    assert "worker" not in text and str(root) not in text and "autograder" not in text


@pytest.mark.parametrize("fn", ["ignore_dump_then_spin", "block_dump_then_spin", "default_dump_then_spin",
                                "flood_dump_then_spin"])
def test_a_worker_that_takes_the_dump_signal_still_times_out_in_bounded_time(quick, fn):
    s = quick.root_ref()
    assert s.mod.add(1) == 2  # a running worker: what is timed below is the call alone
    t0 = time.monotonic()
    with pytest.raises(WorkerTimeout) as e:
        getattr(s.mod, fn)()
    elapsed = time.monotonic() - t0
    assert elapsed < 1 + DUMP_WAIT_S + 1.5, elapsed
    text = str(e.value)
    plain = f"Your code did not finish within 1 s (pkg.mod.{fn}(...)) and was stopped."
    if fn != "flood_dump_then_spin":  # ignored, blocked, or fatal: no dump, the plain message
        assert text == plain
    else:  # a forged 2 MB dump: only its frame inside the package is shown, cut short and defanged
        assert text.startswith(plain + " At that moment it was in ?[31myyy") and text.endswith("... (pkg/mod.py, line 3).")
        assert "passwd" not in text and "hidden" not in text and "\x1b" not in text and len(text) < 400, text
    assert s.mod.add(1) == 2


def test_an_interrupt_during_the_stack_dump_still_stops_the_worker(quick, monkeypatch):
    """A test timeout or Ctrl-C that lands while the grader waits for the stacks: the hung worker is
    still discarded, so the next request gets its own reply from a fresh worker."""
    import autograder.sandbox.client as client_mod

    def interrupted(proc):
        raise KeyboardInterrupt

    monkeypatch.setattr(client_mod, "stack_dump", interrupted)
    s = quick.root_ref()
    with pytest.raises(KeyboardInterrupt):
        s.mod.spin()
    monkeypatch.undo()
    assert s.mod.add(41) == 42


def test_the_reference_is_never_located(root):
    """The reference's client does not say where its code was: a student must not read its insides."""
    c = WorkerClient(root, "pkg", Limits(call_s=1, import_s=5, start_s=60), label="the reference solution",
                     locate_hangs=False)
    try:
        with pytest.raises(WorkerTimeout) as e:
            c.root_ref().mod.outer_call()
    finally:
        c.close()
    assert str(e.value) == "The reference solution did not finish within 1 s (pkg.mod.outer_call(...)) and was stopped."


def test_where_it_was_shows_only_the_students_files_briefly(tmp_path):
    root = tmp_path / "sub"
    pkg = root / "pkg"
    frames = "".join(f'  File "{f}", line {n} in {fn}\n' for f, n, fn in [
        ("/usr/lib/python3/site-packages/torch/functional.py", 10, "einsum"),
        (f"{pkg}/attention.py", 40, "softmax"),
        (f"{pkg}/../../hidden/test_mha.py", 7, "test_secret"),  # outside, however it is spelled
        (f"{root}/pkg_other/x.py", 1, "elsewhere"),
        (f"{pkg}/mha.py", 12, "forward\x1b[2J" + "x" * 300),
        (f"{pkg}/__init__.py", 1, "<module>"),
        ("/opt/autograder/sandbox/worker.py", 200, "op_call"),
        ("/opt/autograder/sandbox/worker.py", 220, "serve"),
    ])
    other = f'Thread 0x00007f00 (most recent call first):\n  File "{pkg}/noise.py", line 3 in background\n\n'
    dump = other + "Current thread 0x00007f01 (most recent call first):\n" + frames
    text = where_it_was(dump, root, "pkg")
    assert text.startswith("it was in softmax (pkg/attention.py, line 40), called from forward?[2Jxxx"), text
    assert text.endswith("... (pkg/mha.py, line 12), called from the top level of pkg/__init__.py (line 1)"), text
    assert not re.search(r"hidden|secret|einsum|elsewhere|noise|op_call|serve|/usr|/opt|\x1b", text), text
    deep = "Current thread 0x1 (most recent call first):\n" + "".join(
        f'  File "{pkg}/r.py", line {i} in rec\n' for i in range(100))
    assert where_it_was(deep, root, "pkg").endswith("(and 95 more calls in your files further out)")
    for junk in ("", "garbage\n" * 1000, '  File "x", line 1 in f\n', "\x00" * 10_000,
                 "Thread 0x1 (most recent call first):\n  File \"/etc/passwd\", line 1 in f\n"):
        assert where_it_was(junk, root, "pkg") == ""


def test_wrong_kinds_name_the_type_that_came_back(client):
    s = client.root_ref()
    with pytest.raises(AssertionError, match=r"^out: expected a torch.Tensor, got numpy.ndarray\.$"):
        check_tensor(s.mod.as_numpy(), "out")
    with pytest.raises(AssertionError, match=r"^out: expected a torch.Tensor, got pkg.mod.Lin\.$"):
        check_tensor(s.mod.Lin(2), "out")
    with pytest.raises(AssertionError, match=r"^n: expected a int, got numpy.ndarray\.$"):
        assert_equal(s.mod.as_numpy(), 3, "n")


def test_routine_errors_name_the_students_function_not_the_routine(client):
    s = client.root_ref()
    boom = fetch(s.mod.boom)  # a function read by name is named so, not by its type ("function")
    with pytest.raises(StudentCodeError) as e:
        boom()
    assert str(e.value).startswith("Your code raised ValueError in pkg.mod.boom(...): bad input shape"), e.value
    with pytest.raises(StudentCodeError) as e:
        routine(client, "audit_call", boom)
    assert str(e.value).startswith("Your code raised ValueError in pkg.mod.boom(...): bad input shape"), e.value
    assert "audit_call" not in str(e.value) and "routine" not in str(e.value)
    with pytest.raises(StudentCodeError) as e:
        routine(client, "audit_call", boom, what="pkg.mod.boom(...) followed by .backward()")
    assert str(e.value).startswith("Your code raised ValueError in pkg.mod.boom(...) followed by .backward(): "
                                   "bad input shape"), e.value
    m = s.mod.Lin(2)
    with pytest.raises(StudentCodeError) as e:  # an object: what the routine does to it
        routine(client, "train_lm", m, torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, 3, dtype=torch.long),
                steps=1, batch_size=2)
    assert str(e.value).startswith("Your code raised RuntimeError in training your Lin: "), e.value
    with pytest.raises(StudentCodeError, match=r"^Your code raised TypeError in Lin\.fc\(\.\.\.\): "):
        m.fc("not a tensor")


def test_import_failures_are_remembered(client):
    s = client.root_ref()
    with pytest.raises(StudentCodeError, match="SyntaxError"):
        s.broken.f()
    t0 = time.monotonic()
    with pytest.raises(WorkerTimeout):
        s.slow_import.x()
    with pytest.raises(WorkerTimeout):  # not another 3 s
        s.slow_import.y()
    assert time.monotonic() - t0 < 6
    assert s.mod.add(1) == 2


def test_output_is_captured_and_truncated(client):
    mark = client.output_mark()
    client.root_ref().mod.shout(100_000)
    text = client.output_since(mark)
    assert "errerr" in text and "omitted" in text and len(text) < 12_000


def test_tensor_subclasses_arrive_as_plain_tensors(client):
    out = client.root_ref().mod.subclass()
    assert type(out) is torch.Tensor


def test_missing_package(tmp_path):
    c = WorkerClient(tmp_path, "pkg", Limits(call_s=5, import_s=5, start_s=60))
    try:
        with pytest.raises(StudentCodeError, match="ModuleNotFoundError"):
            c.root_ref().mod.add(1)
    finally:
        c.close()
