"""How a :class:`~zor.runtime.Model` file is loaded: checked, then one function per way its weights are held.

A Zor export keeps its weights in one of two places, and a file with external weights
can be run in two ways, so there are three load paths, each a function giving a
:class:`Loaded` (the metadata, what runs the graph, the graph's inputs and outputs):

    load_inline(path, ...)          weights inside the .onnx file: onnxruntime loads it
    load_external(path, ...)        weights in a side file (``zor-export --external-weights``):
                                    read and SHA-256 checked, then handed to onnxruntime
    load_rows(path, ...)            weights in a side file, never loaded: each call reads
                                    only the rows of the units that spiked (:mod:`.rows`)

:func:`load` reads the .onnx file once and walks it without onnxruntime
(:func:`~zor.runtime.onnxmeta.scan_model`), then, before onnxruntime sees anything:

- refuses a graph our exporter does not write (:func:`~zor.runtime.session.check_graph`:
  an operator, domain, subgraph or function it never emits, named);
- compares the graph's external-data entries with the metadata's (another file, another
  tensor's offsets: refused, :meth:`~zor.runtime.weightfile.WeightFile.check_graph_entries`);
- (``check_weights``, the default) checks ``zor.integrity`` (:func:`check_integrity`): each
  initializer's bytes as the file holds them, the rest of the graph, and the metadata,
  against the SHA-256 recorded at export; the mismatching tensor is named. The session is
  then built from those very bytes (the .onnx is not read again), and external weights are
  read and SHA-256 checked by this process and handed to onnxruntime in memory, so
  onnxruntime never reads bytes that were not checked, even if a file changes meanwhile.
  Rows mode checks each row against its CRC-32 the first time it is read, and on every
  call that the weights file's stamp (inode, size, mtime, ctime) is the one seen at open
  (:mod:`~zor.runtime.weightfile`), so an edit in place, mtime restored or not, is caught. A file written before ``zor.integrity`` loads with a
  note: its external tensors are still checked against ``zor.weights``.

``check_weights=False`` skips the hashing only (onnxruntime then reads the files itself).
The path is: inline when the metadata names no weights file, else ``weights``
("load", "rows", or "auto": rows when twice the weights do not fit the memory left to
this process, :func:`~zor.runtime.weightfile.choose_mode`). The sparse connections'
row tensors go into huge pages where the profile asks for it (:func:`huge_page_rows`).
"""

from __future__ import annotations

import errno
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import onnxruntime as ort
from zor.devices import Profile

from zor.common import format as fmt
from zor.common.errors import ConfigError, ModelFileError, WeightFileError

from . import hugepages
from .metadata import Metadata, parse
from .onnxmeta import ModelScan, ScanError, scan_model
from .rows import RowRunner, integer_rows
from .session import check_file, check_graph, open_session
from .weightfile import WeightFile, choose_mode

__all__ = ["TensorInfo", "Loaded", "load", "load_inline", "load_external", "load_rows", "scan_file",
           "check_integrity", "huge_page_rows", "contract_io", "Scanned"]

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


@dataclass
class Scanned:
    """The .onnx file as read once: its bytes, what :func:`~zor.runtime.onnxmeta.scan_model` found (None
    when it does not scan: ``error`` says why), and its Zor metadata (None: not a Zor file)."""

    path: Path
    data: bytes
    scan: Optional[ModelScan]
    meta: Optional[Metadata]
    error: str = ""


def load(path: Path, profile: Profile, threads: Optional[int], weights: str = "auto", check_weights: bool = True,
         weights_backend: str = "pread") -> Loaded:
    """Load ``path`` after the checks of the module docstring, by the path its weights call for."""
    scanned = scan_file(path, check_weights)
    meta = scanned.meta
    if meta is None or not meta.weights:
        if weights == "rows":
            raise ConfigError(f"{path.name} keeps its weights inside the .onnx file: weights='rows' needs a "
                              "model exported with --external-weights")
        return load_inline(path, profile, threads, scanned, check_weights)
    mode, why = choose_mode(int(meta.weights["bytes"]), weights)
    note = f"external weights {meta.weights['location']}: {why}"
    if mode == "rows":           # the backend asked for applies when rows were asked for; "auto" reads by pread
        loaded = load_rows(path, scanned, weights_backend if weights == "rows" else "pread", check_weights)
    else:
        loaded = load_external(path, profile, threads, scanned, check_weights)
    loaded.notes.insert(0, note)
    return loaded


def scan_file(path: Path, digests: bool = True) -> Scanned:
    """Read the .onnx file once, walk it (hashing its parts when ``digests``), refuse a foreign graph
    (:func:`~zor.runtime.session.check_graph`) and parse its Zor metadata (errors raised; None when it
    is not a Zor file, which onnxruntime and the parse after loading then name)."""
    check_file(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    try:
        scan = scan_model(data, digests)
    except ScanError as exc:
        return Scanned(path, data, None, None, str(exc))
    check_graph(scan, str(path))
    props = dict(scan.metadata)
    if props.get(fmt.KEYS.FORMAT) != fmt.FORMAT:
        return Scanned(path, data, scan, None)
    return Scanned(path, data, scan, parse(props, str(path)))


def check_integrity(scan: ModelScan, where: str) -> Optional[str]:
    """Compare the file with its ``zor.integrity`` record (:mod:`zor.common.format`): each initializer,
    the rest of the graph, the metadata. WeightFileError naming the first tensor that differs,
    ModelFileError for the graph, the metadata or a malformed record; a note (str) when the file
    has no record (written before it), None when everything matches."""
    text = dict(scan.metadata).get(fmt.KEYS.INTEGRITY)
    if text is None:
        return (f"{fmt.KEYS.INTEGRITY} missing (a file written before it): the tensors inside the .onnx are not "
                "checked; re-export it to have every load check them")
    try:
        record = json.loads(text)
        version, graph, metadata = record["version"], str(record["graph"]), str(record["metadata"])
        tensors = {str(k): str(v) for k, v in dict(record["initializers"]).items()}
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise ModelFileError(f"{where}: metadata {fmt.KEYS.INTEGRITY} is not a record of the form "
                             f"{{version, graph, initializers, metadata}} ({exc!r:.100}): an edited or foreign "
                             "file") from None
    if version != fmt.INTEGRITY_VERSION:
        raise ModelFileError(f"{where}: {fmt.KEYS.INTEGRITY} version {version!r}: expected {fmt.INTEGRITY_VERSION}")
    for name, init in scan.initializers.items():
        if name not in tensors:
            raise WeightFileError(f"{where}: tensor {name} is not in the {fmt.KEYS.INTEGRITY} record written at "
                                  "export: a tensor was added to the graph after export; refused")
        if init.sha256 != tensors[name]:
            raise WeightFileError(f"{where}: tensor {name} does not match its SHA-256 in {fmt.KEYS.INTEGRITY}: its "
                                  "bytes (or its external-data entries) changed after export; refused, it would "
                                  "give wrong answers")
    missing = sorted(set(tensors) - set(scan.initializers))
    if missing:
        raise WeightFileError(f"{where}: tensor {missing[0]} of the {fmt.KEYS.INTEGRITY} record is not in the graph: "
                              "the graph was edited after export; refused")
    if scan.graph_sha256 != graph:
        raise ModelFileError(f"{where}: the graph's nodes, inputs or outputs do not match their SHA-256 in "
                             f"{fmt.KEYS.INTEGRITY}: the graph was edited after export; refused")
    if fmt.metadata_digest(scan.metadata) != metadata:
        raise ModelFileError(f"{where}: the metadata does not match its SHA-256 in {fmt.KEYS.INTEGRITY}: a value "
                             "(e.g. zor.weights_sha256 or zor.layers) was edited after export; refused")
    return None


def load_inline(path: Path, profile: Profile, threads: Optional[int], scanned: Scanned,
                check_weights: bool = True) -> Loaded:
    """Weights inside the .onnx file: checked (``check_weights``), then onnxruntime loads the very bytes
    that were checked (sparse rows pinned in huge pages first)."""
    notes: list[str] = []
    if scanned.scan is None:
        _refuse_unscanned(path, profile, threads, scanned.error)
    if check_weights:
        _note(notes, check_integrity(scanned.scan, str(path)))
    pinned = huge_page_rows(scanned.meta, profile, notes, source=scanned)
    return _session_loaded(path, profile, threads, pinned, notes, scanned.data if check_weights else None,
                           scanned.meta if check_weights else None)


def _refuse_unscanned(path: Path, profile: Profile, threads: Optional[int], error: str) -> None:
    """A file that does not scan: onnxruntime names the problem (a truncated or foreign file); should it
    load all the same, it is refused, since its graph could not be checked."""
    open_session(path, profile, threads)
    raise ModelFileError(f"{path}: not a well-formed ONNX protobuf ({error}): its graph cannot be checked, so it "
                         "is refused")


def _note(notes: list[str], note: Optional[str]) -> None:
    if note:
        notes.append(note)


def load_external(path: Path, profile: Profile, threads: Optional[int], scanned: Scanned,
                  check_weights: bool = True) -> Loaded:
    """Weights in a side file: the graph's external-data entries checked against the metadata; with
    ``check_weights`` the file checked (:func:`check_integrity`) and every tensor read and SHA-256
    checked by this process and handed to onnxruntime, which then reads nothing but checked bytes;
    without, onnxruntime reads the weights file itself (tensors pinned in huge pages are checked as
    they are read in either case)."""
    meta = scanned.meta
    weightfile = WeightFile(path, meta.weights, backend="pread")
    weightfile.check_graph_entries(scanned.scan.initializers)
    notes: list[str] = []
    if check_weights:
        _note(notes, check_integrity(scanned.scan, str(path)))
    pinned = huge_page_rows(meta, profile, notes, weightfile)
    if check_weights:
        pinned.update({n: weightfile.tensor(n) for n, e in weightfile.entries.items() if e.in_graph and n not in pinned})
    loaded = _session_loaded(path, profile, threads, pinned, notes, scanned.data if check_weights else None,
                             meta if check_weights else None)
    loaded.weightfile, loaded.weights_mode = weightfile, "load"
    return loaded


def load_rows(path: Path, scanned: Scanned, weights_backend: str = "pread", check_weights: bool = True) -> Loaded:
    """Weights in a side file, never loaded: each call reads the rows of the units that spiked
    (``weights_backend`` "pread" or "mmap"), each row checked against its CRC-32 when first read; the
    small tensors (thresholds, scales, CRC tables) are read whole and SHA-256 checked. The .onnx file
    is checked too (its metadata says how to compute); the graph's inputs and outputs are the file
    contract's."""
    meta = scanned.meta
    weightfile = WeightFile(path, meta.weights, backend=weights_backend)
    weightfile.check_graph_entries(scanned.scan.initializers)
    notes: list[str] = []
    if check_weights:
        _note(notes, check_integrity(scanned.scan, str(path)))
    inputs, outputs = contract_io(meta)
    rows = RowRunner(meta, weightfile, integer=integer_rows(scanned.scan.nodes))   # as the graph multiplies
    return Loaded(meta, inputs, outputs, rows=rows, weightfile=weightfile,
                  weights_mode="rows", notes=notes)


def _session_loaded(path: Path, profile: Profile, threads: Optional[int], pinned: dict[str, np.ndarray],
                    notes: list[str], data: Optional[bytes] = None, meta: Optional[Metadata] = None) -> Loaded:
    """An onnxruntime session on ``path`` (on the checked bytes ``data`` when given); the metadata as
    checked (``meta``), else as onnxruntime reads it."""
    session, missing = open_session(path, profile, threads, pinned, data=data)
    if missing:
        notes.append(f"profile {profile.name} prefers {', '.join(missing)}, which this onnxruntime "
                     f"build lacks: running on {', '.join(session.get_providers())}")
    if meta is None:
        meta = parse(session.get_modelmeta().custom_metadata_map, str(path))
    return Loaded(meta, [_info(a) for a in session.get_inputs()], [_info(a) for a in session.get_outputs()],
                  session=session, notes=notes)


def huge_page_rows(meta: Optional[Metadata], profile: Profile, notes: list[str],
                   weightfile: Optional[WeightFile] = None, source: Optional[Scanned] = None) -> dict[str, np.ndarray]:
    """The row tensors of the sparse connections (≥ 2 MiB each) read into huge pages
    (:mod:`zor.runtime.hugepages`): from the external ``weightfile`` (SHA-256 checked as they
    are read), else from the .onnx file's bytes as read and checked (``source``). {} when the
    profile turns it off, the platform has none, there is no sparse connection, or there is no
    memory for the copy."""
    if meta is None or not profile.huge_pages or not hugepages.SUPPORTED:
        return {}
    names = {name for j in meta.sparse_connections for name in (fmt.weight(j), fmt.weight_int8(j))}
    try:
        if weightfile is not None:
            rows = {n: weightfile.tensor(n, out=hugepages.advised_buffer(e.length))
                    for n, e in weightfile.entries.items() if n in names and e.in_graph
                    and e.length >= hugepages.MIN_BYTES}
        else:
            found = {n: t.raw for n, t in source.scan.initializers.items() if n in names and t.raw is not None
                     and not t.external} if source is not None and source.scan is not None else {}
            rows = {n: hugepages.read_tensor(source.data, raw) for n, raw in found.items()
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
