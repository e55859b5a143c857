"""The wire format: round trips, and frames a hostile worker could send."""
from __future__ import annotations

import os
import pickle
import struct

import pytest
import torch

from autograder.sandbox.protocol import (MAGIC, Handle, ProtocolError, pack, read_frame, unpack,
                                 write_frame)


def roundtrip(message: dict) -> dict:
    frame = pack(message)
    _, n_header, n_blob = struct.unpack("<4sQQ", frame[:20])
    return unpack(frame[20:20 + n_header], frame[20 + n_header:])


def test_roundtrip_values():
    t = torch.randn(3, 4)
    msg = {
        "tensor": t, "half": t.half(), "bf16": t.bfloat16(), "bool": t > 0, "long": torch.arange(5),
        "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 3),
        "nested": [1, 2.5, None, True, "s", (1, (2, 3))], "nan": float("nan"), "inf": float("-inf"),
        "dtype": torch.float16, "device": torch.device("cpu"), "size": torch.Size([2, 3]),
        "handle": Handle(7, "Module"), "odd_keys": {"__tensor__": 1}, "int_keys": {1: "a"},
        "view": t[:, 1], "meta": torch.empty(3, 5, dtype=torch.float16, device="meta"),
    }
    out = roundtrip(msg)
    for key in ("tensor", "half", "bf16", "bool", "long", "scalar", "empty", "view"):
        assert type(out[key]) is torch.Tensor and out[key].dtype == msg[key].dtype
        assert torch.equal(out[key], msg[key])
    assert out["nested"] == [1, 2.5, None, True, "s", (1, (2, 3))]
    assert out["nan"] != out["nan"] and out["inf"] == float("-inf")
    assert out["dtype"] is torch.float16 and out["size"] == torch.Size([2, 3])
    assert isinstance(out["handle"], Handle) and out["handle"].id == 7
    assert out["odd_keys"] == {"__tensor__": 1} and out["int_keys"] == {1: "a"}
    assert out["meta"].is_meta and out["meta"].shape == (3, 5) and out["meta"].dtype == torch.float16


def test_requires_grad_survives():
    out = roundtrip({"x": torch.ones(2, requires_grad=True)})
    assert out["x"].requires_grad


def test_unknown_objects_are_refused_without_handle_maker():
    with pytest.raises(TypeError):
        pack({"x": object()})


@pytest.mark.parametrize("header,blob,match", [
    (b"not json", b"", "not JSON"),
    (b"[1, 2]", b"", "not a JSON object"),
    (b'{"x": {"__tensor__": "t9"}}', b"", "missing tensor"),
    (b'{"x": {"__dtype__": "evil"}}', b"", "unknown dtype"),
    (b'{"x": {"__float__": "1e400"}}', b"", "bad float"),
    (b'{"x": 1}', pickle.dumps({"a": 1}), "safetensors"),
])
def test_malformed_frames_are_rejected(header, blob, match):
    with pytest.raises(ProtocolError, match=match):
        unpack(header, blob)


def test_pickled_tensors_are_never_loaded():
    """A blob that is a torch.save pickle (which could run code) is refused, not unpickled."""
    import io

    buf = io.BytesIO()
    torch.save({"t0": torch.ones(2)}, buf)
    with pytest.raises(ProtocolError):
        unpack(b'{"x": {"__tensor__": "t0"}}', buf.getvalue())


def test_framing_over_a_pipe_and_limits():
    r, w = os.pipe()
    try:
        write_frame(w, pack({"a": torch.arange(3)}))
        assert torch.equal(read_frame(r, None)["a"], torch.arange(3))
        os.write(w, b"XXXX" + b"\0" * 16)
        with pytest.raises(ProtocolError, match="marker"):
            read_frame(r, None)
        os.write(w, struct.pack("<4sQQ", MAGIC, 1 << 40, 0))
        with pytest.raises(ProtocolError, match="too large"):
            read_frame(r, None)
    finally:
        os.close(r)
        os.close(w)


def test_read_times_out():
    import time

    r, w = os.pipe()
    try:
        with pytest.raises(TimeoutError):
            read_frame(r, time.monotonic() + 0.2)
    finally:
        os.close(r)
        os.close(w)
