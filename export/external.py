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

The pair switches atomically: the weights file is written first (temp file + rename)
under a name the model being replaced does not use (``NAME.weights`` while that name is
free, else ``NAME.<sha12>.weights``, content-addressed: :func:`weights_location`); then
the one rename of the .onnx, which names it, switches the pair; only then are the
weights files of earlier exports to the same name removed (:func:`remove_stale_weights`,
never the one the new .onnx names). Killed at any point, the destination loads as the
old model or as the new one. A reader that finds a weights file of another size or
content than the metadata says refuses it. The metadata gets ``zor.integrity`` last
(:func:`zor.export.metadata.set_integrity`).

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
import json
import os
import re
import zlib
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from zor.common import format as fmt
from zor.common.errors import ExportError
from zor.common.fileio import atomic_path, write_bytes_atomic

from .metadata import dumps, set_integrity, set_metadata
from .registry import kind_of
from .sparse import rest_bias

__all__ = ["write_external", "external_tensors", "row_crc32", "weights_location", "remove_stale_weights", "ALIGNMENT",
           "EXTERNAL_PREFIXES"]

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


def _little_endian(arr: np.ndarray) -> np.ndarray:
    data = np.ascontiguousarray(arr)
    return data.astype(data.dtype.newbyteorder("<"), copy=False)


def _layout(tensors: list[tuple[str, np.ndarray, bool]], alignment: int) -> tuple[list[dict[str, Any]], int]:
    """(one ``zor.weights`` entry per tensor, the file's size): each tensor at the next multiple of ``alignment``."""
    entries, offset = [], 0
    for name, arr, used in tensors:
        data = _little_endian(arr)
        length = int(data.nbytes)
        entries.append({"name": name, "offset": offset, "length": length, "dtype": str(data.dtype.name),
                        "shape": [int(d) for d in data.shape],
                        "sha256": hashlib.sha256(memoryview(data).cast("B")).hexdigest(), "in_graph": used})
        offset += length + _pad(length, alignment)
    return entries, offset


def weights_location(output: Path, entries: list[dict[str, Any]]) -> str:
    """The weights file's name: ``NAME.weights`` while no file has that name, else the content-addressed
    ``NAME.<sha12>.weights`` (SHA-256 of the entries: names, places, shapes and each tensor's SHA-256),
    so a model being replaced keeps its own weights file until the .onnx rename switches the pair."""
    plain = fmt.weights_file(output.name)
    if not (output.parent / plain).exists():
        return plain
    digest = hashlib.sha256(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest()
    return fmt.weights_file(output.name, digest)


def remove_stale_weights(output: Path, keep: Optional[str]) -> list[str]:
    """Remove the weights files an earlier export to ``output`` left (``NAME.weights``,
    ``NAME.<sha12>.weights``), never ``keep`` (the one the new .onnx names); called only after the
    .onnx rename. Returns the names removed; a file that cannot be removed is left."""
    stem = output.name[:-5] if output.name.endswith(".onnx") else output.name
    pattern = re.compile(re.escape(stem) + r"(\.[0-9a-f]{12})?\.weights")
    removed = []
    for entry in os.scandir(output.parent):
        if entry.name != keep and pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed.append(entry.name)
            except OSError:
                pass
    return removed


def _point_graph(proto: onnx.ModelProto, entries: list[dict[str, Any]], location: str) -> None:
    """Make each in-graph initializer of ``entries`` an external reference into ``location``."""
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


def write_external(proto: onnx.ModelProto, output: Union[str, os.PathLike], model=None,
                   alignment: int = ALIGNMENT, metadata: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """Write ``output`` (.onnx) and its weights file; returns the ``zor.weights`` description.

    ``proto`` is changed in place: its weight initializers become external references, and its
    metadata ``metadata`` (the other ``zor.*`` keys) with ``zor.weights`` and ``zor.integrity`` added.
    The pair switches at one rename (module docstring).
    """
    output = Path(output)
    if fmt.weights_file(output.name) == output.name:
        raise ExportError(f"{output.name}: expected a model file name ending in .onnx next to its weights file")
    tensors = external_tensors(proto, model)
    entries, size = _layout(tensors, alignment)
    location = weights_location(output, entries)
    spec = {"location": location, "bytes": size, "alignment": alignment, "tensors": entries}
    _point_graph(proto, entries, location)
    set_metadata(proto, {**(metadata or {}), fmt.KEYS.WEIGHTS: dumps(spec)})
    set_integrity(proto)
    graph_bytes = proto.SerializeToString()
    with atomic_path(output.parent / location) as tmp_w:        # rename 1: a name the current model does not use
        with open(tmp_w, "wb") as f:
            for (_, arr, _), entry in zip(tensors, entries):
                f.write(memoryview(_little_endian(arr)).cast("B"))
                f.write(b"\0" * _pad(entry["length"], alignment))
        if tmp_w.stat().st_size != size:
            raise ExportError(f"writing {location}: expected {size} bytes, wrote {tmp_w.stat().st_size}")
    write_bytes_atomic(output, graph_bytes)                     # rename 2: the model switches to the new pair
    remove_stale_weights(output, keep=location)
    return spec
