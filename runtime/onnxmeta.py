"""Read an ONNX file's ``metadata_props`` without onnx and without loading its weights.

An ONNX file is a protobuf ``ModelProto``; its metadata is the repeated field 14
(``StringStringEntryProto``: key = field 1, value = field 2). :func:`read_metadata_props`
walks the top-level fields, seeking past every other one (the graph included), so a
model of any size is read in a few small reads. The runtime uses it to learn, before
onnxruntime touches the file, whether the weights live in an external ``.weights``
file and how (``zor.weights``).

:func:`find_initializers` walks into the graph (field 7) the same way and returns where
the raw bytes of the named initializers (``GraphProto`` field 5, ``TensorProto``: dims
1, data_type 2, name 8, raw_data 9, data_location 14) lie in the file, so the runtime
can read a tensor into memory of its own choosing (:mod:`zor.runtime.hugepages`).

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

import io
import os
from dataclasses import dataclass
from typing import BinaryIO, Collection, Iterator, Union

__all__ = ["read_metadata_props", "find_initializers", "RawTensor", "ScanError"]

_METADATA_PROPS = 14
_GRAPH, _INITIALIZER = 7, 5                                   # ModelProto.graph, GraphProto.initializer
_DIMS, _DATA_TYPE, _NAME, _RAW_DATA, _DATA_LOCATION = 1, 2, 8, 9, 14   # TensorProto fields
_ONNX_DTYPES = {1: "float32", 3: "int8", 2: "uint8", 6: "int32", 7: "int64", 10: "float16"}


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


def _skip(f: BinaryIO, wire: int, end: int, field: int) -> None:
    """Seek past the value of ``field`` (wire type ``wire``) of a message that ends at byte ``end``."""
    if wire == 0:
        _varint(f)
    elif wire == 1:
        f.seek(8, os.SEEK_CUR)
    elif wire == 5:
        f.seek(4, os.SEEK_CUR)
    elif wire == 2:
        n = _varint(f)
        if f.tell() + n > end:
            raise ScanError(f"field {field} runs past the end of its message (byte {end})")
        f.seek(n, os.SEEK_CUR)
    else:
        raise ScanError(f"unsupported wire type {wire} (field {field})")


def _scan(f: BinaryIO, size: int) -> dict[str, str]:
    props: dict[str, str] = {}
    while f.tell() < size:
        tag = _varint(f)
        field, wire = tag >> 3, tag & 7
        if field == 0:
            raise ScanError("field number 0")
        if field == _METADATA_PROPS and wire == 2:
            n = _varint(f)
            if f.tell() + n > size:
                raise ScanError(f"field {field} runs past the end of the file")
            key, value = _entry(f.read(n))
            props[key] = value
        else:
            _skip(f, wire, size, field)
    if f.tell() != size:
        raise ScanError("the last field runs past the end of the file")
    return props


def read_metadata_props(path: Union[str, os.PathLike]) -> dict[str, str]:
    """The ``metadata_props`` of the ONNX file at ``path``; ScanError when it is not well-formed protobuf."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        return _scan(f, size)


@dataclass(frozen=True)
class RawTensor:
    """Where an initializer's ``raw_data`` lies in the file."""

    name: str
    dtype: str            # numpy name ("float32", "int8", ...)
    shape: tuple
    offset: int           # first byte of raw_data in the file
    nbytes: int


def _tensor(f: BinaryIO, end: int) -> RawTensor | None:
    """One TensorProto ending at ``end``; None unless its data is inline ``raw_data`` of a known dtype."""
    name, dtype, dims, raw, external = "", 0, [], None, False
    while f.tell() < end:
        tag = _varint(f)
        field, wire = tag >> 3, tag & 7
        if field == _DIMS and wire == 0:
            dims.append(_varint(f))
        elif field == _DIMS and wire == 2:                      # packed dims
            n = _varint(f)
            stop = f.tell() + n
            while f.tell() < stop:
                dims.append(_varint(f))
        elif field == _DATA_TYPE and wire == 0:
            dtype = _varint(f)
        elif field == _DATA_LOCATION and wire == 0:
            external = _varint(f) == 1
        elif field in (_NAME, _RAW_DATA) and wire == 2:
            n = _varint(f)
            if f.tell() + n > end:
                raise ScanError(f"tensor field {field} runs past its message")
            if field == _NAME:
                name = f.read(n).decode("utf-8", errors="replace")
            else:
                raw = (f.tell(), n)
                f.seek(n, os.SEEK_CUR)
        else:
            _skip(f, wire, end, field)
    if f.tell() != end:
        raise ScanError("a tensor runs past its message")
    if raw is None or external or dtype not in _ONNX_DTYPES:
        return None
    return RawTensor(name, _ONNX_DTYPES[dtype], tuple(dims), raw[0], raw[1])


def _messages(f: BinaryIO, end: int, number: int) -> Iterator[int]:
    """For each length-delimited field ``number`` of the message ending at byte ``end``: the
    file is positioned at its start and its end is yielded; every other field is sought past."""
    while f.tell() < end:
        tag = _varint(f)
        field, wire = tag >> 3, tag & 7
        if field == number and wire == 2:
            n = _varint(f)
            stop = f.tell() + n
            if stop > end:
                raise ScanError(f"field {field} runs past the end of its message (byte {end})")
            yield stop
            f.seek(stop)
        else:
            _skip(f, wire, end, field)


def find_initializers(path: Union[str, os.PathLike], names: Collection[str]) -> dict[str, RawTensor]:
    """Where the ``raw_data`` of each initializer in ``names`` lies in the ONNX file at ``path``.

    Initializers not found, stored another way (typed fields, external data) or of an
    unknown dtype are left out; ScanError when the file is not well-formed protobuf.
    Only the small fields are read: the tensors' bytes are sought past.
    """
    wanted, found = set(names), {}
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        for graph_end in _messages(f, size, _GRAPH):
            for tensor_end in _messages(f, graph_end, _INITIALIZER):
                t = _tensor(f, tensor_end)
                if t is not None and t.name in wanted:
                    found[t.name] = t
                    if len(found) == len(wanted):
                        return found
    return found
