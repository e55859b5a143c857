"""The worker client: proxies, handles, and what happens when student code misbehaves."""
from __future__ import annotations

import time

import pytest
import torch

from autograder.client import Limits, WorkerClient, fetch, forward_backward, repeat, store, typename
from autograder.errors import StaleObject, StudentCodeError, WorkerCrashed, WorkerTimeout

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
    while True:
        pass

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


def test_hang_times_out_and_restarts(client):
    t0 = time.monotonic()
    with pytest.raises(WorkerTimeout, match="did not finish within 8 s"):
        client.root_ref().mod.spin()
    assert time.monotonic() - t0 < 15
    assert client.root_ref().mod.add(1) == 2


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
