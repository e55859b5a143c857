"""The worker's audit of a call (routine ``audit_call``): which tensors count as allocations."""
from __future__ import annotations

import torch

from autograder.sandbox.routines import audit_call


def test_views_do_not_count_and_every_new_tensor_does():
    big = torch.ones(300, 300)  # made before the call: only what the call creates counts

    def views(x):
        return x.t().transpose(0, 1).view(-1).expand(2, -1)

    report = audit_call(views, big)
    assert report["max_numel"] == 0, report
    for op, fn in [("aten::triu", torch.triu), ("aten::tril", torch.tril), ("aten::tanh", torch.tanh),
                   ("aten::mul", lambda x: x * 2)]:
        report = audit_call(fn, big)  # a new N x N tensor, whatever its op's name starts with
        assert report["max_numel"] == 90000 and report["max_op"].split(".")[0] == op, (op, report)
