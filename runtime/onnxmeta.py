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

:func:`scan_model` walks a whole model held in memory once and gives what the load
checks need (:mod:`zor.runtime.loaders`): the metadata entries in file order, the opset
imports, every node (operator, domain, inputs, outputs, attributes holding subgraphs),
every initializer (dtype, dims, external-data entries, where its raw data lies, and the
SHA-256 of its ``TensorProto`` bytes as written), the SHA-256 of the graph's other bytes,
and the parts a Zor export never holds (model-local functions, training info, sparse
initializers), so a graph is judged before onnxruntime parses it.

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

import hashlib
import io
import mmap
import os
from dataclasses import dataclass, field
from typing import BinaryIO, Collection, Optional, Union

__all__ = ["read_metadata_props", "find_initializers", "RawTensor", "ScanError", "scan_model", "ModelScan",
           "NodeInfo", "InitInfo"]

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
        if f.tell() + n > len(data):
            raise ScanError("metadata entry ends early")
        raw = f.read(n)
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


def find_initializers(path: Union[str, os.PathLike], names: Collection[str]) -> dict[str, RawTensor]:
    """Where the ``raw_data`` of each initializer in ``names`` lies in the ONNX file at ``path``.

    Initializers not found, stored another way (typed fields, external data) or of an
    unknown dtype are left out; ScanError when the file is not well-formed protobuf.
    The file is mapped, not read: only the pages of the small fields are touched.
    """
    wanted = set(names)
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise ScanError("the file is empty")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            scan = scan_model(mapped, digests=False)
    return {n: t.raw for n, t in scan.initializers.items() if n in wanted and t.raw is not None and not t.external}


# ModelProto fields walked by scan_model besides the graph (7) and metadata (14)
_OPSET_IMPORT, _TRAINING_INFO, _FUNCTIONS = 8, 20, 25
_G_NODE, _G_SPARSE_INITIALIZER = 1, 15                                    # GraphProto
_N_INPUT, _N_OUTPUT, _N_NAME, _N_OP, _N_ATTRIBUTE, _N_DOMAIN = 1, 2, 3, 4, 5, 7   # NodeProto
_A_NAME, _A_GRAPH, _A_GRAPHS = 1, 6, 11                                   # AttributeProto
_EXTERNAL_DATA = 13                                                       # TensorProto


@dataclass(frozen=True)
class NodeInfo:
    """One graph node: operator, domain ("" for ONNX's own), name, inputs, outputs, and the names of
    its attributes that hold a subgraph (a Loop's or an If's body)."""

    op_type: str
    domain: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    subgraphs: tuple[str, ...] = ()


@dataclass(frozen=True)
class InitInfo:
    """One initializer: ONNX dtype number, dims, its external-data entries ((key, value) in file order;
    () when its data is inline), where inline ``raw_data`` lies (None otherwise), and the SHA-256 of
    its whole ``TensorProto`` bytes as written ("" when not hashed)."""

    name: str
    data_type: int
    dims: tuple[int, ...]
    external: tuple[tuple[str, str], ...]
    raw: Optional[RawTensor]
    sha256: str


@dataclass
class ModelScan:
    """What :func:`scan_model` found in a model file (see the module docstring)."""

    metadata: list[tuple[str, str]] = field(default_factory=list)
    opsets: list[tuple[str, int]] = field(default_factory=list)
    nodes: list[NodeInfo] = field(default_factory=list)
    initializers: dict[str, InitInfo] = field(default_factory=dict)
    graph_sha256: str = ""          # of the graph's fields other than its initializers, in file order
    graphs: int = 0
    foreign: list[str] = field(default_factory=list)    # parts a Zor export never holds


class _Cursor:
    """A position in a protobuf message that lies in ``buf`` up to byte ``end``."""

    def __init__(self, buf: memoryview, pos: int, end: int) -> None:
        self.buf, self.pos, self.end = buf, pos, end

    def varint(self) -> int:
        result = shift = 0
        while True:
            if self.pos >= self.end:
                raise ScanError("a varint runs past the end of its message")
            b = self.buf[self.pos]
            self.pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise ScanError("varint longer than 10 bytes")

    def key(self) -> tuple[int, int]:
        tag = self.varint()
        if tag >> 3 == 0:
            raise ScanError("field number 0")
        return tag >> 3, tag & 7

    def span(self) -> tuple[int, int]:
        """(start, stop) of the length-delimited value here; the cursor moves past it."""
        n = self.varint()
        start, stop = self.pos, self.pos + n
        if stop > self.end:
            raise ScanError(f"a field of {n} bytes runs past the end of its message (byte {self.end})")
        self.pos = stop
        return start, stop

    def text(self) -> str:
        start, stop = self.span()
        try:
            return bytes(self.buf[start:stop]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ScanError(f"a name is not UTF-8: {exc}") from None

    def skip(self, wire: int) -> None:
        if wire == 0:
            self.varint()
        elif wire in (1, 5):
            self.pos += 8 if wire == 1 else 4
            if self.pos > self.end:
                raise ScanError("a fixed-size field runs past the end of its message")
        elif wire == 2:
            self.span()
        else:
            raise ScanError(f"unsupported wire type {wire}")


def _pairs(buf: memoryview, start: int, stop: int) -> tuple[str, str]:
    """A StringStringEntryProto (key 1, value 2) or an OperatorSetIdProto's domain (1) and version (2)."""
    cur, key, value = _Cursor(buf, start, stop), "", ""
    while cur.pos < cur.end:
        number, wire = cur.key()
        if number in (1, 2) and wire == 2:
            text = cur.text()
            key, value = (text, value) if number == 1 else (key, text)
        elif number == 2 and wire == 0:
            value = str(cur.varint())
        else:
            cur.skip(wire)
    return key, value


def _node(buf: memoryview, start: int, stop: int) -> NodeInfo:
    cur = _Cursor(buf, start, stop)
    op = domain = name = ""
    inputs: list[str] = []
    outputs: list[str] = []
    subgraphs: list[str] = []
    while cur.pos < cur.end:
        number, wire = cur.key()
        if wire != 2 or number not in (_N_INPUT, _N_OUTPUT, _N_NAME, _N_OP, _N_ATTRIBUTE, _N_DOMAIN):
            cur.skip(wire)
        elif number == _N_ATTRIBUTE:
            a, b = cur.span()
            attr, holds_graph = _Cursor(buf, a, b), False
            attr_name = ""
            while attr.pos < attr.end:
                n, w = attr.key()
                if n == _A_NAME and w == 2:
                    attr_name = attr.text()
                else:
                    holds_graph |= n in (_A_GRAPH, _A_GRAPHS)
                    attr.skip(w)
            if holds_graph:
                subgraphs.append(attr_name)
        else:
            text = cur.text()
            if number in (_N_INPUT, _N_OUTPUT):
                (inputs if number == _N_INPUT else outputs).append(text)
            elif number == _N_NAME:
                name = text
            elif number == _N_OP:
                op = text
            else:
                domain = text
    return NodeInfo(op, domain, name, tuple(inputs), tuple(outputs), tuple(subgraphs))


def _initializer(buf: memoryview, start: int, stop: int, digests: bool) -> InitInfo:
    cur = _Cursor(buf, start, stop)
    name, dtype, dims, external, raw = "", 0, [], [], None
    while cur.pos < cur.end:
        number, wire = cur.key()
        if number == _DIMS and wire == 0:
            dims.append(cur.varint())
        elif number == _DIMS and wire == 2:
            a, b = cur.span()
            packed = _Cursor(buf, a, b)
            while packed.pos < packed.end:
                dims.append(packed.varint())
        elif number == _DATA_TYPE and wire == 0:
            dtype = cur.varint()
        elif number == _NAME and wire == 2:
            name = cur.text()
        elif number == _RAW_DATA and wire == 2:
            raw = cur.span()
        elif number == _EXTERNAL_DATA and wire == 2:
            external.append(_pairs(buf, *cur.span()))
        else:
            cur.skip(wire)
    located = None
    if raw is not None and dtype in _ONNX_DTYPES:
        located = RawTensor(name, _ONNX_DTYPES[dtype], tuple(dims), raw[0], raw[1] - raw[0])
    digest = hashlib.sha256(buf[start:stop]).hexdigest() if digests else ""
    return InitInfo(name, dtype, tuple(dims), tuple(external), located, digest)


def _graph(buf: memoryview, start: int, stop: int, scan: ModelScan, digests: bool) -> None:
    cur = _Cursor(buf, start, stop)
    rest = hashlib.sha256()
    while cur.pos < cur.end:
        first = cur.pos
        number, wire = cur.key()
        if number == _INITIALIZER and wire == 2:
            init = _initializer(buf, *cur.span(), digests)
            if init.name in scan.initializers:
                raise ScanError(f"two initializers are named {init.name!r}")
            scan.initializers[init.name] = init
            continue
        if number == _G_NODE and wire == 2:
            scan.nodes.append(_node(buf, *cur.span()))
        else:
            if number == _G_SPARSE_INITIALIZER:
                scan.foreign.append("a sparse initializer")
            cur.skip(wire)
        if digests:
            rest.update(buf[first:cur.pos])
    scan.graph_sha256 = rest.hexdigest() if digests else ""


def scan_model(data: Union[bytes, bytearray, memoryview], digests: bool = True) -> ModelScan:
    """Walk the ModelProto in ``data`` (see the module docstring); ``digests`` False skips the hashing.
    ScanError when it is not well-formed protobuf, or names a metadata key or an initializer twice."""
    with memoryview(data) as view, view.cast("B") as buf:
        return _model(buf, digests)


def _model(buf: memoryview, digests: bool) -> ModelScan:
    cur, scan = _Cursor(buf, 0, len(buf)), ModelScan()
    while cur.pos < cur.end:
        number, wire = cur.key()
        if wire != 2 or number not in (_GRAPH, _METADATA_PROPS, _OPSET_IMPORT, _TRAINING_INFO, _FUNCTIONS):
            cur.skip(wire)
            continue
        start, stop = cur.span()
        if number == _GRAPH:
            scan.graphs += 1
            _graph(buf, start, stop, scan, digests)
        elif number == _METADATA_PROPS:
            scan.metadata.append(_pairs(buf, start, stop))
        elif number == _OPSET_IMPORT:
            domain, version = _pairs(buf, start, stop)
            scan.opsets.append((domain, int(version) if version.isdigit() else 0))
        else:
            scan.foreign.append("model-local functions" if number == _FUNCTIONS else "training info")
    keys = [k for k, _ in scan.metadata]
    if len(set(keys)) != len(keys):
        raise ScanError(f"metadata key {next(k for k in keys if keys.count(k) > 1)!r} appears twice")
    return scan
