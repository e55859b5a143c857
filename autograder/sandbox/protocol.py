"""Wire format between the grader and the student worker.

A frame is ``MAGIC | len(header) | len(blob) | header | blob``: the header is UTF-8 JSON and the
blob a safetensors archive holding every tensor the message refers to. Neither part can execute
code when decoded, so the grader can read whatever the (untrusted) worker sends. Tensors become
``{"__tensor__": key, "device": ..., "requires_grad": ...}`` in the JSON; the other tagged forms
are tuples, dtypes, devices, torch.Size and handles to objects that stay in the worker.
"""
from __future__ import annotations

import json
import math
import os
import select
import struct
import time
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

MAGIC = b"AGF1"
_LENGTHS = struct.Struct("<4sQQ")
MAX_HEADER_BYTES = 16 * 1024 * 1024
MAX_BLOB_BYTES = 2 * 1024 * 1024 * 1024
MAX_DEPTH = 32


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame (or closed the channel)."""


class ChannelClosed(ProtocolError):
    """End of file on the channel: the peer exited or closed its end."""


MAX_TYPE_NAME = 200


class Handle:
    """Reference to an object that lives in the worker (a module, a cache, ...).

    ``type_name`` is the short name of its type (``Lin``), ``qualname`` the qualified one as the
    worker reports it (``numpy.ndarray``, ``transformer_lab.mha.MultiHeadAttention``; empty when
    unknown): text for messages, never trusted for anything else.
    """

    __slots__ = ("id", "type_name", "qualname")

    def __init__(self, id: int, type_name: str, qualname: str = "") -> None:
        self.id = id
        self.type_name = type_name
        self.qualname = qualname

    def __repr__(self) -> str:
        return f"Handle({self.id}, {self.type_name!r})"


# ----------------------------------------------------------------------------- encoding


def encode(value: Any, make_handle=None) -> tuple[Any, dict[str, torch.Tensor]]:
    """Turn ``value`` into (JSON-able structure, tensors); unknown objects go to ``make_handle``."""
    tensors: dict[str, torch.Tensor] = {}

    def enc(v: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ValueError("value nested too deeply to send")
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, int):
            return int(v)
        if isinstance(v, float):
            if math.isfinite(v):
                return float(v)
            return {"__float__": repr(float(v))}
        if isinstance(v, torch.Tensor):
            if v.device.type == "meta":  # shape and dtype only: there is no data to send
                return {"__meta_tensor__": [int(x) for x in v.shape],
                        "dtype": str(v.dtype).removeprefix("torch.")}
            key = f"t{len(tensors)}"
            t = v.detach()
            if t.is_complex():
                raise ValueError("complex tensors are not supported")
            tensors[key] = t.to("cpu").contiguous().clone()
            return {
                "__tensor__": key,
                "device": str(v.device),
                "requires_grad": bool(v.requires_grad),
            }
        if isinstance(v, torch.dtype):
            return {"__dtype__": str(v).removeprefix("torch.")}
        if isinstance(v, torch.device):
            return {"__device__": str(v)}
        if isinstance(v, torch.Size):
            return {"__size__": [int(x) for x in v]}
        if isinstance(v, Handle):
            if v.qualname:
                return {"__handle__": v.id, "type": v.type_name, "qualname": v.qualname}
            return {"__handle__": v.id, "type": v.type_name}
        if isinstance(v, tuple):
            return {"__tuple__": [enc(x, depth + 1) for x in v]}
        if isinstance(v, list):
            return [enc(x, depth + 1) for x in v]
        if isinstance(v, dict):
            if all(isinstance(k, str) for k in v):
                if any(k.startswith("__") and k.endswith("__") for k in v):
                    return {"__dict__": [[k, enc(x, depth + 1)] for k, x in v.items()]}
                return {k: enc(x, depth + 1) for k, x in v.items()}
            return {"__dict__": [[enc(k, depth + 1), enc(x, depth + 1)] for k, x in v.items()]}
        if make_handle is not None:
            return enc(make_handle(v), depth + 1)
        raise TypeError(f"cannot send a value of type {type(v).__name__}")

    return enc(value, 0), tensors


_DTYPES = {
    name: getattr(torch, name)
    for name in (
        "float64 float32 float16 bfloat16 int64 int32 int16 int8 uint8 bool "
        "float8_e4m3fn float8_e5m2 complex64 complex128"
    ).split()
    if hasattr(torch, name)
}


def decode(obj: Any, tensors: dict[str, torch.Tensor], move_to_device: bool = True) -> Any:
    """Inverse of :func:`encode`; handles stay :class:`Handle` objects."""

    def dev(name: str) -> torch.device:
        d = torch.device(name)
        if d.type == "cuda" and not torch.cuda.is_available():
            return torch.device("cpu")
        return d

    def dec(o: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ProtocolError("frame nested too deeply")
        if isinstance(o, list):
            return [dec(x, depth + 1) for x in o]
        if not isinstance(o, dict):
            if o is None or isinstance(o, (bool, int, float, str)):
                return o
            raise ProtocolError(f"unexpected JSON value {type(o).__name__}")
        if "__tensor__" in o:
            key = o["__tensor__"]
            if not isinstance(key, str) or key not in tensors:
                raise ProtocolError(f"frame refers to a missing tensor {key!r}")
            t = tensors[key]
            if move_to_device and isinstance(o.get("device"), str) and o["device"] != "cpu":
                t = t.to(dev(o["device"]))
            if o.get("requires_grad") is True and t.is_floating_point():
                t.requires_grad_(True)
            return t
        if "__meta_tensor__" in o:
            if o.get("dtype") not in _DTYPES:
                raise ProtocolError(f"unknown dtype {o.get('dtype')!r}")
            return torch.empty([int(x) for x in o["__meta_tensor__"]], dtype=_DTYPES[o["dtype"]], device="meta")
        if "__float__" in o:
            text = o["__float__"]
            if text not in ("nan", "inf", "-inf"):
                raise ProtocolError(f"bad float {text!r}")
            return float(text)
        if "__dtype__" in o:
            name = o["__dtype__"]
            if name not in _DTYPES:
                raise ProtocolError(f"unknown dtype {name!r}")
            return _DTYPES[name]
        if "__device__" in o:
            return torch.device(str(o["__device__"]))
        if "__size__" in o:
            return torch.Size([int(x) for x in o["__size__"]])
        if "__handle__" in o:
            qualname = o.get("qualname", "")
            return Handle(int(o["__handle__"]), str(o.get("type", "object"))[:MAX_TYPE_NAME],
                          qualname[:MAX_TYPE_NAME] if isinstance(qualname, str) else "")
        if "__tuple__" in o:
            return tuple(dec(x, depth + 1) for x in o["__tuple__"])
        if "__dict__" in o:
            return {_hashable(dec(k, depth + 1)): dec(x, depth + 1) for k, x in o["__dict__"]}
        return {k: dec(x, depth + 1) for k, x in o.items()}

    return dec(obj, 0)


def _hashable(k: Any) -> Any:
    if isinstance(k, list):
        return tuple(_hashable(x) for x in k)
    if isinstance(k, (torch.Tensor, dict)):
        raise ProtocolError("unhashable dictionary key in frame")
    return k


# ----------------------------------------------------------------------------- framing


def pack(message: dict, make_handle=None) -> bytes:
    """Encode one message (a dict whose values may hold tensors) as a frame."""
    body, tensors = encode(message, make_handle)
    header = json.dumps(body, allow_nan=False).encode()
    blob = st_save(tensors) if tensors else b""
    return _LENGTHS.pack(MAGIC, len(header), len(blob)) + header + blob


def unpack(header: bytes, blob: bytes, move_to_device: bool = True) -> dict:
    try:
        body = json.loads(header.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"frame header is not JSON: {e}") from None
    try:
        tensors = st_load(blob) if blob else {}
    except Exception as e:  # safetensors raises its own error types
        raise ProtocolError(f"frame tensors are not a valid safetensors archive: {e}") from None
    msg = decode(body, tensors, move_to_device)
    if not isinstance(msg, dict):
        raise ProtocolError("frame is not a JSON object")
    return msg


def write_frame(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks: list[bytes] = []
    remaining = n
    while remaining:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                raise TimeoutError
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise ChannelClosed("channel closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, deadline: float | None = None, move_to_device: bool = True) -> dict:
    """Read and decode one frame; ``TimeoutError`` past ``deadline`` (time.monotonic())."""
    head = _read_exact(fd, _LENGTHS.size, deadline)
    magic, n_header, n_blob = _LENGTHS.unpack(head)
    if magic != MAGIC:
        raise ProtocolError("bad frame marker (something other than the worker wrote to the channel)")
    if n_header > MAX_HEADER_BYTES or n_blob > MAX_BLOB_BYTES:
        raise ProtocolError(f"frame too large ({n_header} + {n_blob} bytes)")
    header = _read_exact(fd, n_header, deadline)
    blob = _read_exact(fd, n_blob, deadline)
    return unpack(header, blob, move_to_device)
