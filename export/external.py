"""External weights: the big tensors in a ``.weights`` file next to the ``.onnx``.

``m.onnx`` keeps the graph and metadata; ``m.weights`` holds every threshold, weight,
scale and rest-bias tensor as ONNX external data (each initializer says ``location``,
``offset``, ``length``), so any onnxruntime loads the pair as one model. Each tensor
starts at a multiple of ``alignment`` (4096: a page, so a reader may map it).

For readers that gather rows (``zor.runtime`` with ``weights="rows"``) the file also
holds, outside the graph:

    row_crc32_{j}    uint32 (n_j,)   CRC-32 of each stored row of W_j (float32 or int8)
    sparse_bias_{j}  float32         f_j(0) · Σ rows of W_j, when f_j(0) ≠ 0 and the graph
                                     has none (a dense connection of a sigmoid layer)

``zor.weights`` (:mod:`zor.common.format`) lists every tensor with its offset, length, dtype,
shape, SHA-256 and whether the graph uses it; ``bytes`` is the file's exact size.

Both files are written atomically (the weights first, then the graph): a failed
export leaves neither; a reader that finds a ``.weights`` file of another size or
content than the metadata says refuses it.

Example:
    >>> import tempfile, pathlib
    >>> from zor import Zor, Layer
    >>> from zor.export.graph import to_onnx
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "m.onnx"
    >>> spec = write_external(to_onnx(Zor([Layer(4), Layer(2)], seed=0)), out, model=None)
    >>> spec["location"], (out.parent / "m.weights").stat().st_size == spec["bytes"]
    ('m.weights', True)
"""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from zor.common import format as fmt
from zor.common.errors import ExportError
from zor.common.fileio import atomic_path

from .metadata import dumps, set_metadata
from .registry import kind_of
from .sparse import rest_bias

__all__ = ["write_external", "external_tensors", "row_crc32", "ALIGNMENT", "EXTERNAL_PREFIXES"]

ALIGNMENT = 4096
EXTERNAL_PREFIXES = ("threshold_", "weight_", "sparse_bias_")   # initializers moved to the .weights file

_DTYPES = {TensorProto.FLOAT: "float32", TensorProto.INT8: "int8", TensorProto.UINT8: "uint8",
           TensorProto.INT32: "int32", TensorProto.FLOAT16: "float16", TensorProto.UINT32: "uint32",
           TensorProto.INT64: "int64"}


def row_crc32(array: np.ndarray) -> np.ndarray:
    """CRC-32 of each row of a 2-D array's little-endian C-order bytes, as uint32 (n,)."""
    a = np.ascontiguousarray(array)
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return np.array([zlib.crc32(memoryview(a[r]).cast("B")) for r in range(a.shape[0])], dtype=np.uint32)


def external_tensors(proto: onnx.ModelProto, model=None) -> list[tuple[str, np.ndarray, bool]]:
    """(name, array, used by the graph) for every tensor the .weights file will hold, in file order."""
    out: list[tuple[str, np.ndarray, bool]] = []
    for init in proto.graph.initializer:
        if init.name.startswith(EXTERNAL_PREFIXES):
            if init.data_location == TensorProto.EXTERNAL:
                raise ExportError(f"initializer {init.name} is already external: expected an in-memory graph")
            out.append((init.name, numpy_helper.to_array(init), True))
    names = {name for name, _, _ in out}
    extra: list[tuple[str, np.ndarray, bool]] = []
    for name, arr, _ in out:
        if arr.ndim == 2 and (name.startswith("weight_") and (name.count("_") == 1 or name.endswith("_int8"))):
            j = int(name.split("_")[1])
            extra.append((fmt.row_crc32(j), row_crc32(arr), False))
    if model is not None:
        arrays = {name: arr for name, arr, _ in out}
        for j in range(len(model.layers) - 1):
            if fmt.sparse_bias(j) in names or fmt.weight(j) not in names or kind_of(model.layers[j + 1]) != "dense":
                continue
            bias = rest_bias(arrays[fmt.weight(j)], model.layers[j].activation)
            if bias is not None:
                extra.append((fmt.sparse_bias(j), bias, False))
    return out + extra


def _pad(n: int, alignment: int) -> int:
    return (-n) % alignment


def write_external(proto: onnx.ModelProto, output: Union[str, os.PathLike], model=None,
                   alignment: int = ALIGNMENT, metadata: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """Write ``output`` (.onnx) and its ``.weights`` file; returns the ``zor.weights`` description.

    ``proto`` is changed in place: its weight initializers become external references.
    ``metadata`` (the other ``zor.*`` keys) is stored with ``zor.weights`` added.
    """
    output = Path(output)
    location = fmt.weights_file(output.name)
    if location == output.name:
        raise ExportError(f"{output.name}: expected a model file name ending in .onnx next to its weights file")
    tensors = external_tensors(proto, model)
    entries = []
    offset = 0
    for name, arr, used in tensors:
        data = np.ascontiguousarray(arr)
        data = data.astype(data.dtype.newbyteorder("<"), copy=False)
        length = int(data.nbytes)
        entries.append({"name": name, "offset": offset, "length": length, "dtype": str(data.dtype.name),
                        "shape": [int(d) for d in data.shape],
                        "sha256": hashlib.sha256(memoryview(data).cast("B")).hexdigest(), "in_graph": used})
        offset += length + _pad(length, alignment)
    spec = {"location": location, "bytes": offset, "alignment": alignment, "tensors": entries}
    by_name = {e["name"]: e for e in entries}
    for init in proto.graph.initializer:
        entry = by_name.get(init.name)
        if entry is None or not entry["in_graph"]:
            continue
        init.ClearField("raw_data")
        for fld in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"):
            init.ClearField(fld)
        init.data_location = TensorProto.EXTERNAL
        del init.external_data[:]
        for key, value in (("location", location), ("offset", str(entry["offset"])), ("length", str(entry["length"]))):
            kv = init.external_data.add()
            kv.key, kv.value = key, value
    meta = dict(metadata or {})
    meta[fmt.KEYS.WEIGHTS] = dumps(spec)
    set_metadata(proto, meta)
    graph_bytes = proto.SerializeToString()
    weights_path = output.parent / location
    with atomic_path(output) as tmp_onnx:
        with atomic_path(weights_path) as tmp_w:
            with open(tmp_w, "wb") as f:
                for (name, arr, _), entry in zip(tensors, entries):
                    data = np.ascontiguousarray(arr)
                    data = data.astype(data.dtype.newbyteorder("<"), copy=False)
                    f.write(memoryview(data).cast("B"))
                    f.write(b"\0" * _pad(entry["length"], alignment))
            if tmp_w.stat().st_size != spec["bytes"]:
                raise ExportError(f"writing {location}: expected {spec['bytes']} bytes, wrote {tmp_w.stat().st_size}")
            tmp_onnx.write_bytes(graph_bytes)
    return spec
