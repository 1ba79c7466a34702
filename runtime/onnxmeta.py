"""Read an ONNX file's ``metadata_props`` without onnx and without loading its weights.

An ONNX file is a protobuf ``ModelProto``; its metadata is the repeated field 14
(``StringStringEntryProto``: key = field 1, value = field 2). :func:`read_metadata_props`
walks the top-level fields, seeking past every other one (the graph included), so a
model of any size is read in a few small reads. The runtime uses it to learn, before
onnxruntime touches the file, whether the weights live in an external ``.weights``
file and how (``zor.weights``).

Protobuf wire format: each field starts with a varint key = (number << 3) | type;
type 0 is a varint, 1 eight bytes, 2 a varint length then that many bytes, 5 four bytes.

Example:
    >>> import io
    >>> entry = b"\\x0a\\x01k\\x12\\x01v"                       # key "k", value "v"
    >>> data = b"\\x08\\x08" + b"\\x72" + bytes([len(entry)]) + entry    # ir_version 8, then the entry
    >>> _scan(io.BytesIO(data), len(data))
    {'k': 'v'}
"""

from __future__ import annotations

import os
from typing import BinaryIO, Union

__all__ = ["read_metadata_props", "ScanError"]

_METADATA_PROPS = 14


class ScanError(ValueError):
    """The bytes are not a well-formed protobuf message (the caller falls back to onnxruntime's own reading)."""


def _varint(f: BinaryIO) -> int:
    shift = result = 0
    while True:
        b = f.read(1)
        if not b:
            raise ScanError("file ends inside a varint")
        result |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise ScanError("varint longer than 10 bytes")


def _entry(data: bytes) -> tuple[str, str]:
    import io

    f = io.BytesIO(data)
    key = value = ""
    while f.tell() < len(data):
        tag = _varint(f)
        field, wire = tag >> 3, tag & 7
        if wire != 2:
            raise ScanError(f"metadata entry field {field} has wire type {wire}, expected 2 (bytes)")
        n = _varint(f)
        raw = f.read(n)
        if len(raw) != n:
            raise ScanError("metadata entry ends early")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ScanError(f"metadata entry is not UTF-8: {exc}") from None
        if field == 1:
            key = text
        elif field == 2:
            value = text
    return key, value


def _scan(f: BinaryIO, size: int) -> dict[str, str]:
    props: dict[str, str] = {}
    while f.tell() < size:
        tag = _varint(f)
        field, wire = tag >> 3, tag & 7
        if field == 0:
            raise ScanError("field number 0")
        if wire == 0:
            _varint(f)
        elif wire == 1:
            f.seek(8, os.SEEK_CUR)
        elif wire == 5:
            f.seek(4, os.SEEK_CUR)
        elif wire == 2:
            n = _varint(f)
            if f.tell() + n > size:
                raise ScanError(f"field {field} runs past the end of the file")
            if field == _METADATA_PROPS:
                key, value = _entry(f.read(n))
                props[key] = value
            else:
                f.seek(n, os.SEEK_CUR)
        else:
            raise ScanError(f"unsupported wire type {wire} (field {field})")
    if f.tell() != size:
        raise ScanError("the last field runs past the end of the file")
    return props


def read_metadata_props(path: Union[str, os.PathLike]) -> dict[str, str]:
    """The ``metadata_props`` of the ONNX file at ``path``; ScanError when it is not well-formed protobuf."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        return _scan(f, size)
