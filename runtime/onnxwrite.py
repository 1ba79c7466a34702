"""Write new weights into an exported Zor model without onnx: a small protobuf rewriter.

The runtime cannot import onnx, but it can patch a float32 Zor export whose layout it
knows (:mod:`zor.runtime.onnxmeta` finds every initializer's ``raw_data``):

1. each named float32 initializer's ``raw_data`` is overwritten in place (same name,
   dims and byte count, so no protobuf length changes);
2. the ``ModelProto``'s top-level fields other than ``metadata_props`` (14) are kept
   as they are; the metadata entries are written again with the updated values;
3. ``zor.integrity`` is recomputed the way the exporter records it
   (zor.common.format): SHA-256 of each initializer's ``TensorProto`` bytes, of the
   graph's other bytes, and :func:`~zor.common.format.metadata_digest` of the other
   entries; it is written last.

Protobuf wire format: key = varint (field << 3 | wire type); type 2 is a varint
length then the bytes. A ``StringStringEntryProto`` is key (1) and value (2).

Example:
    >>> _entry("k", "v")
    b'r\\x06\\n\\x01k\\x12\\x01v'
"""

from __future__ import annotations

import json
from typing import Mapping

import numpy as np

from zor.common import format as fmt
from zor.common.errors import ModelFileError

from .onnxmeta import ScanError, scan_model

__all__ = ["patch_model"]

_METADATA_PROPS = 14


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ModelFileError("model template: a varint runs past the end (truncated or not protobuf)")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _entry(key: str, value: str) -> bytes:
    return _field(_METADATA_PROPS, _field(1, key.encode()) + _field(2, value.encode()))


def _without_metadata(buf: bytes) -> bytes:
    """The top-level fields of a ModelProto other than metadata_props, in file order, as written."""
    out, pos = bytearray(), 0
    while pos < len(buf):
        start = pos
        key, pos = _read_varint(buf, pos)
        wire = key & 7
        if wire == 0:
            _, pos = _read_varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            n, pos = _read_varint(buf, pos)
            pos += n
        else:
            raise ModelFileError(f"model template: wire type {wire} at byte {start} (not a ModelProto)")
        if pos > len(buf):
            raise ModelFileError("model template: a field runs past the end (truncated)")
        if key >> 3 != _METADATA_PROPS:
            out += buf[start:pos]
    return bytes(out)


def patch_model(template: bytes, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> bytes:
    """``template`` (a float32 Zor export) with ``tensors`` written into its initializers and
    ``metadata`` entries replaced, ``zor.integrity`` recomputed. ModelFileError when a tensor is
    not a float32 initializer of the same shape."""
    try:
        scan = scan_model(template, digests=False)
    except ScanError as exc:
        raise ModelFileError(f"model template: not a readable ONNX file ({exc})") from exc
    buf = bytearray(template)
    for name, value in tensors.items():
        info = scan.initializers.get(name)
        raw = info.raw if info is not None else None
        value = np.ascontiguousarray(value, dtype="<f4")
        if raw is None or raw.dtype != "float32" or tuple(raw.shape) != value.shape or raw.nbytes != value.nbytes:
            raise ModelFileError(f"model template: expected a float32 initializer {name} of shape {value.shape} "
                                 "stored inline")
        buf[raw.offset:raw.offset + raw.nbytes] = value.tobytes()
    body = _without_metadata(bytes(buf))
    entries = [(k, metadata.get(k, v)) for k, v in scan.metadata if k != fmt.KEYS.INTEGRITY]
    entries += [(k, v) for k, v in metadata.items() if k not in dict(entries) and k != fmt.KEYS.INTEGRITY]
    data = body + b"".join(_entry(k, v) for k, v in entries)
    patched = scan_model(data, digests=True)
    record = {"version": fmt.INTEGRITY_VERSION, "graph": patched.graph_sha256,
              "initializers": {n: i.sha256 for n, i in patched.initializers.items()},
              "metadata": fmt.metadata_digest(entries)}
    return data + _entry(fmt.KEYS.INTEGRITY, json.dumps(record, sort_keys=True))
