"""What a student reads when their code fails inside a harness routine: what their code raised,
in their function, never the routine's name or Triton's interpreter wrapper."""
from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from autograder.sandbox.client import Limits, WorkerClient
from autograder.sandbox.errors import StudentCodeError
from conftest import ASSIGNMENT

FLASH = '''
import torch
import triton
import triton.language as tl


@triton.jit
def _kernel(X, N: tl.constexpr):
    raise NotImplementedError("_kernel: write the kernel")


def flash_attention_forward(q, k, v, is_causal=False, softmax_scale=None):
    out = torch.empty_like(q)
    _kernel[(1,)](out, N=16)
    return out, out
'''


@pytest.fixture(scope="module")
def flash_helpers():
    spec = importlib.util.spec_from_file_location("flash_helpers", ASSIGNMENT / "tests" / "flash_helpers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
def test_a_kernel_stub_reads_as_the_students_error(tmp_path, flash_helpers, monkeypatch):
    (tmp_path / "transformer_lab").mkdir()
    (tmp_path / "transformer_lab" / "__init__.py").write_text("")
    (tmp_path / "transformer_lab" / "flash.py").write_text(FLASH)
    monkeypatch.setattr(flash_helpers, "on_gpu", lambda: False)
    client = WorkerClient(tmp_path, "transformer_lab", Limits(call_s=60, import_s=60, start_s=120),
                          env={"TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""})
    try:
        q = torch.zeros(1, 1, 16, 16)
        with pytest.raises(StudentCodeError) as e:
            flash_helpers.audited(client.root_ref(), client, "flash_attention_forward", q, q, q, what="forward")
    finally:
        client.close()
    text = str(e.value)
    assert text.startswith("Your code raised NotImplementedError in transformer_lab.flash.flash_attention_forward(...): "
                           "_kernel: write the kernel"), text
    assert "InterpreterError" not in text and "audit_call" not in text and "running" not in text, text
    # the student's frames from the launch down to the raise in the kernel
    assert "in flash_attention_forward" in text and "in _kernel" in text and 'raise NotImplementedError' in text
    assert "autograder" not in text and "site-packages" not in text, text
    assert sys.modules.get("transformer_lab.flash") is None  # never imported in the grader
