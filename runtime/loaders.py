"""How a :class:`~zor.runtime.Model` file is loaded: one function per way its weights are held.

A Zor export keeps its weights in one of two places, and a file with external weights
can be run in two ways, so there are three load paths, each a function giving a
:class:`Loaded` (the metadata, what runs the graph, the graph's inputs and outputs):

    load_inline(path, ...)          weights inside the .onnx file: onnxruntime loads it
    load_external(path, ...)        weights in a side file (``zor-export --external-weights``):
                                    their SHA-256 checked, then onnxruntime loads them
    load_rows(path, ...)            weights in a side file, never loaded: each call reads
                                    only the rows of the units that spiked (:mod:`.rows`)

:func:`load` reads the metadata without onnxruntime first (:func:`early_metadata`) and
picks the path: inline when the metadata names no weights file, else ``weights``
("load", "rows", or "auto": rows when twice the weights do not fit the memory left to
this process, :func:`~zor.runtime.weightfile.choose_mode`). The sparse connections'
row tensors go into huge pages where the profile asks for it (:func:`huge_page_rows`).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import onnxruntime as ort
from zor.devices import Profile

from zor.common import format as fmt
from zor.common.errors import ConfigError, ZorError

from . import hugepages
from .metadata import Metadata, parse
from .onnxmeta import ScanError, find_initializers, read_metadata_props
from .rows import RowRunner
from .session import check_file, open_session
from .weightfile import WeightFile, choose_mode

__all__ = ["TensorInfo", "Loaded", "load", "load_inline", "load_external", "load_rows", "early_metadata",
           "huge_page_rows", "contract_io"]

_NP_DTYPES = {"tensor(float)": np.float32, "tensor(bool)": np.bool_, "tensor(float16)": np.float16,
              "tensor(double)": np.float64, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
              "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: name, shape (None for the dynamic batch axis), numpy dtype."""

    name: str
    shape: tuple
    dtype: Any

    def __str__(self) -> str:
        dims = ", ".join("B" if d is None else str(d) for d in self.shape)
        return f"{self.name} ({dims}) {np.dtype(self.dtype).name}"


def _info(arg: Any) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) else None for d in (arg.shape or []))
    return TensorInfo(arg.name, shape, _NP_DTYPES.get(arg.type, np.float32))


@dataclass
class Loaded:
    """A loaded model file: its metadata, what runs it (an onnxruntime session, or a row
    runner), its inputs and outputs, the external weights file, and notes on the choices made."""

    metadata: Metadata
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    session: Optional[ort.InferenceSession] = None
    rows: Optional[RowRunner] = None
    weightfile: Optional[WeightFile] = None
    weights_mode: str = "inline"                # "inline", "load" or "rows"
    notes: list[str] = field(default_factory=list)


def load(path: Path, profile: Profile, threads: Optional[int], weights: str = "auto", verify_weights: bool = True,
         weights_backend: str = "pread") -> Loaded:
    """Load ``path`` by the path its weights call for (see the module docstring)."""
    scanned = early_metadata(path)
    if scanned is None or not scanned.weights:
        if weights == "rows":
            raise ConfigError(f"{path.name} keeps its weights inside the .onnx file: weights='rows' needs a "
                              "model exported with --external-weights")
        return load_inline(path, profile, threads, scanned)
    mode, why = choose_mode(int(scanned.weights["bytes"]), weights)
    note = f"external weights {scanned.weights['location']}: {why}"
    if mode == "rows":           # the backend asked for applies when rows were asked for; "auto" reads by pread
        loaded = load_rows(path, scanned, weights_backend if weights == "rows" else "pread")
    else:
        loaded = load_external(path, profile, threads, scanned, verify_weights)
    loaded.notes.insert(0, note)
    return loaded


def load_inline(path: Path, profile: Profile, threads: Optional[int], scanned: Optional[Metadata]) -> Loaded:
    """Weights inside the .onnx file: onnxruntime loads it (sparse rows pinned in huge pages first)."""
    notes: list[str] = []
    pinned = huge_page_rows(scanned, profile, notes, path=path)
    return _session_loaded(path, profile, threads, pinned, notes)


def load_external(path: Path, profile: Profile, threads: Optional[int], meta: Metadata,
                  verify_weights: bool = True) -> Loaded:
    """Weights in a side file, loaded by onnxruntime after their SHA-256 is checked (unless
    ``verify_weights`` is False; tensors pinned in huge pages are checked as they are read)."""
    weightfile = WeightFile(path, meta.weights, backend="pread")
    notes: list[str] = []
    pinned = huge_page_rows(meta, profile, notes, weightfile)
    if verify_weights:
        weightfile.verify([n for n, e in weightfile.entries.items() if e.in_graph and n not in pinned])
    loaded = _session_loaded(path, profile, threads, pinned, notes)
    loaded.weightfile, loaded.weights_mode = weightfile, "load"
    return loaded


def load_rows(path: Path, meta: Metadata, weights_backend: str = "pread") -> Loaded:
    """Weights in a side file, never loaded: each call reads the rows of the units that spiked
    (``weights_backend`` "pread" or "mmap"); the graph's inputs and outputs are the file contract's."""
    weightfile = WeightFile(path, meta.weights, backend=weights_backend)
    inputs, outputs = contract_io(meta)
    return Loaded(meta, inputs, outputs, rows=RowRunner(meta, weightfile), weightfile=weightfile,
                  weights_mode="rows")


def _session_loaded(path: Path, profile: Profile, threads: Optional[int], pinned: dict[str, np.ndarray],
                    notes: list[str]) -> Loaded:
    """An onnxruntime session on ``path``; the metadata as onnxruntime reads it."""
    session, missing = open_session(path, profile, threads, pinned)
    if missing:
        notes.append(f"profile {profile.name} prefers {', '.join(missing)}, which this onnxruntime "
                     f"build lacks: running on {', '.join(session.get_providers())}")
    meta = parse(session.get_modelmeta().custom_metadata_map, str(path))
    return Loaded(meta, [_info(a) for a in session.get_inputs()], [_info(a) for a in session.get_outputs()],
                  session=session, notes=notes)


def early_metadata(path: Path) -> Optional[Metadata]:
    """The file's parsed metadata, read without onnxruntime; None when it does not scan as
    protobuf, is not a Zor file, or (weights inline) its metadata does not parse: onnxruntime
    and the parse after loading then name the problem. Metadata that names external weights
    must parse here (its errors are raised)."""
    check_file(path)
    try:
        props = read_metadata_props(path)
    except (ScanError, OSError):
        return None
    if props.get(fmt.KEYS.FORMAT) != fmt.FORMAT:
        return None
    try:
        return parse(props, str(path))
    except ZorError:
        if props.get(fmt.KEYS.WEIGHTS, "") not in ("", "{}"):
            raise
        return None


def huge_page_rows(meta: Optional[Metadata], profile: Profile, notes: list[str],
                   weightfile: Optional[WeightFile] = None, path: Optional[Path] = None) -> dict[str, np.ndarray]:
    """The row tensors of the sparse connections (≥ 2 MiB each) read into huge pages
    (:mod:`zor.runtime.hugepages`): from the external ``weightfile`` (SHA-256 checked as they
    are read), else from the .onnx file at ``path``. {} when the profile turns it off, the
    platform has none, there is no sparse connection, there is no memory for the copy, or the
    .onnx file does not scan (onnxruntime then loads, or names the problem, as before)."""
    if meta is None or not profile.huge_pages or not hugepages.SUPPORTED:
        return {}
    names = {name for j in meta.sparse_connections for name in (fmt.weight(j), fmt.weight_int8(j))}
    try:
        if weightfile is not None:
            rows = {n: weightfile.tensor(n, out=hugepages.advised_buffer(e.length))
                    for n, e in weightfile.entries.items() if n in names and e.in_graph
                    and e.length >= hugepages.MIN_BYTES}
        else:
            rows = {n: hugepages.read_tensor(path, raw) for n, raw in find_initializers(path, names).items()
                    if raw.nbytes >= hugepages.MIN_BYTES}
    except MemoryError:
        return {}
    except (ScanError, OSError) as exc:     # a file that does not scan, or no address space for the copy
        if weightfile is not None and not (isinstance(exc, OSError) and exc.errno == errno.ENOMEM):
            raise
        return {}
    if rows:
        notes.append(f"sparse rows in huge pages: {', '.join(sorted(rows))} "
                     f"({sum(a.nbytes for a in rows.values()) / 2 ** 20:.1f} MiB)")
    return rows


def contract_io(meta: Metadata) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Graph inputs and outputs as the file contract (zor.common.format) names them, from the metadata."""
    sizes = meta.sizes
    inputs = [TensorInfo(fmt.INPUT, (None, sizes[0]), np.float32)]
    inputs += [TensorInfo(s.input, (None, s.size), np.float32) for s in meta.state]
    outputs = [TensorInfo(fmt.OUTPUT, (None, sizes[-1]), np.float32)]
    outputs += [TensorInfo(s.output, (None, s.size), np.float32) for s in meta.state]
    outputs += [TensorInfo(fmt.spikes(i), (None, n), np.bool_) for i, n in enumerate(sizes)]
    outputs += [TensorInfo(fmt.charge(i), (None, n), np.float32) for i, n in enumerate(sizes)]
    return inputs, outputs
