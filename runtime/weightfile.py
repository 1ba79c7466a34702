"""A model's external ``.weights`` file: checked on open, rows read only when asked for.

The exporter's ``--external-weights`` writes ``m.onnx`` and ``m.weights``; the
metadata (``zor.weights``, see :mod:`zor.common.format`) gives the file's exact size and
each tensor's offset, length, dtype, shape and SHA-256. :class:`WeightFile`:

- refuses a missing file, or one of another size than the metadata says
  (:class:`~zor.common.errors.WeightFileError`), before anything reads it;
- :meth:`~WeightFile.tensor` reads a whole tensor and checks its SHA-256;
- :meth:`~WeightFile.rows` reads only the given rows of a 2-D tensor: one positional
  read (``os.preadv``) per run of consecutive rows, straight into the result, so the
  process never holds more than the rows asked for. Each row is checked against its
  CRC-32 (``row_crc32_{j}``, itself SHA-256 checked) the first time it is read: rows
  mode exists so as not to read the whole file, so it is not hashed at open, and a
  check on every read cost 2.65× per call (8192-wide rows at 10 % activity,
  :mod:`benchmarks.load_check`); edits after a row's first read are caught by the
  stamp below instead;
- :meth:`~WeightFile.check_graph_entries` compares the graph's own external-data
  entries (location, offset, length per initializer: what onnxruntime would read)
  with the metadata's, so a graph pointed at another file or at another tensor's
  bytes is refused;
- :meth:`~WeightFile.check_unchanged` compares the file's inode, size, mtime and
  ctime with those seen at open: a file rewritten, truncated, replaced or edited in
  place (its mtime set back or not: the ctime moves anyway) under the model is an
  error on the next call, never a wrong answer (a write racing the very read it
  changes can only be caught by the CRC of a row's first read);
- ``backend="mmap"`` maps the file read-only instead (numpy memmap; the page cache
  serves repeated rows). Mapping counts against an address-space limit
  (``RLIMIT_AS``) at the file's full size, so the default is ``"pread"``, which needs
  address space only for the rows it returns.

Example:
    >>> wf = WeightFile("m.onnx", metadata.weights)                  # doctest: +SKIP
    >>> wf.rows("weight_0", np.array([3, 4, 9])).shape              # doctest: +SKIP
    (3, 4096)
"""

from __future__ import annotations

import hashlib
import os
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from zor.common import format as fmt
from zor.common.errors import ConfigError, ModelFileError, WeightFileError

try:
    import resource  # Unix only: the address-space limit of memory_budget()
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

__all__ = ["TensorEntry", "WeightFile", "memory_budget", "choose_mode", "DTYPES", "BACKENDS"]

DTYPES = {"float32": np.float32, "int8": np.int8, "uint8": np.uint8, "int32": np.int32, "uint32": np.uint32,
          "float16": np.float16, "int64": np.int64}
BACKENDS = ("pread", "mmap")
_CHUNK = 8 << 20


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of the weights file (an entry of ``zor.weights``'s ``tensors``)."""

    name: str
    offset: int
    length: int
    dtype: Any
    shape: tuple
    sha256: str
    in_graph: bool = True

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * np.dtype(self.dtype).itemsize


def _entries(spec: dict, where: str) -> dict[str, TensorEntry]:
    out: dict[str, TensorEntry] = {}
    size = spec["bytes"]
    for t in spec.get("tensors", []):
        try:
            name, offset, length = str(t["name"]), int(t["offset"]), int(t["length"])
            dtype = DTYPES[str(t["dtype"])]
            shape = tuple(int(d) for d in t["shape"])
            digest = str(t["sha256"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{where}: {fmt.KEYS.WEIGHTS} tensor entry {t!r}: expected name, offset, length, "
                                 f"dtype ({', '.join(DTYPES)}), shape, sha256 ({exc!r})") from None
        if offset < 0 or length < 0 or offset + length > size or any(d < 0 for d in shape):
            raise ModelFileError(f"{where}: {fmt.KEYS.WEIGHTS} tensor {name}: region [{offset}, {offset + length}) "
                                 f"does not fit the file's {size} bytes")
        if int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize != length:
            raise ModelFileError(f"{where}: {fmt.KEYS.WEIGHTS} tensor {name}: shape {shape} of {np.dtype(dtype).name} "
                                 f"needs {int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize} bytes, "
                                 f"the metadata says {length}")
        out[name] = TensorEntry(name, offset, length, dtype, shape, digest, bool(t.get("in_graph", True)))
    return out


def _stamp(st: os.stat_result) -> tuple:
    """(device, inode, size, mtime, ctime): the ctime (inode change time) moves on every write and on
    every ``utime``, and no unprivileged process can set it back, so an edit in place whose mtime was
    restored still changes the stamp."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class WeightFile:
    """The ``.weights`` file of the model at ``model_path``, described by ``spec`` (``zor.weights``)."""

    def __init__(self, model_path: Union[str, os.PathLike], spec: dict, backend: str = "pread") -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"weights backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        model_path = Path(model_path)
        where = model_path.name
        location = str(spec.get("location", ""))
        if not location or Path(location).name != location or location in (".", ".."):
            raise ModelFileError(f"{where}: {fmt.KEYS.WEIGHTS} location {location!r}: expected a plain file name "
                                 "next to the model")
        self.path = model_path.parent / location
        self.size = int(spec.get("bytes", -1))
        self.entries = _entries(spec, where)
        self.backend = backend
        self._model_name = where
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise WeightFileError(f"{where}: its weights file {location} is missing: expected {self.size:,} bytes "
                                  "next to the .onnx (copy both files together)") from None
        except OSError as exc:
            raise WeightFileError(f"{where}: cannot open its weights file {location}: {exc.strerror or exc}") from None
        st = os.fstat(fd)
        if st.st_size != self.size:
            os.close(fd)
            raise WeightFileError(
                f"{where}: its weights file {location} holds {st.st_size:,} bytes, expected {self.size:,} as the "
                f"metadata says ({'shorter: truncated copy' if st.st_size < self.size else 'longer: another export'}?)")
        self._fd = fd
        self._stamp = _stamp(st)
        self._map: Optional[np.memmap] = None
        if backend == "mmap":
            try:
                self._map = np.memmap(self.path, dtype=np.uint8, mode="r", shape=(self.size,))
            except (OSError, ValueError, MemoryError) as exc:
                self.close()
                raise WeightFileError(f"{where}: cannot map {location} ({self.size:,} bytes): {exc}; the 'pread' "
                                      "backend needs address space only for the rows it reads") from None
        self._crc: dict[str, Optional[np.ndarray]] = {}
        self._checked: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self.bytes_read = 0

    # ------------------------------------------------------------------ checks
    def check_unchanged(self) -> None:
        """WeightFileError when the file was rewritten, truncated or replaced since it was opened."""
        try:
            now = [_stamp(os.stat(self.path))]
        except FileNotFoundError:
            raise WeightFileError(f"{self._model_name}: its weights file {self.path.name} was removed under the model: "
                                  "no result was computed; reload the model") from None
        if self._fd is not None:
            now.append(_stamp(os.fstat(self._fd)))
        for stamp in now:
            if stamp != self._stamp:
                what = ("size" if stamp[2] != self._stamp[2] else
                        "file (replaced)" if stamp[:2] != self._stamp[:2] else
                        "modification time" if stamp[3] != self._stamp[3] else
                        "inode change time (written in place, its mtime set back?)")
                raise WeightFileError(f"{self._model_name}: its weights file {self.path.name} changed under the model "
                                      f"({what} differs from when it was opened; {self._stamp[2]:,} → {stamp[2]:,} "
                                      "bytes): no result was computed from it; reload the model")

    def verify(self, names: Optional[list[str]] = None) -> None:
        """Check the SHA-256 of the named tensors (default: all), reading them in chunks."""
        for name in names if names is not None else list(self.entries):
            e = self._entry(name)
            h = hashlib.sha256()
            done = 0
            while done < e.length:
                n = min(_CHUNK, e.length - done)
                h.update(self._read(e.offset + done, n))
                done += n
            if h.hexdigest() != e.sha256:
                raise self._sha_mismatch(name)

    def check_graph_entries(self, initializers: dict[str, Any]) -> None:
        """WeightFileError unless the graph's external initializers (name → an
        :class:`~zor.runtime.onnxmeta.InitInfo`) are exactly the metadata's in-graph tensors, each
        naming this file at the metadata's offset and length with the metadata's dims."""
        where, want = self._model_name, {n: e for n, e in self.entries.items() if e.in_graph}
        for name, init in initializers.items():
            if not init.external and name not in want:
                continue
            entries = dict(init.external)
            e = want.get(name)
            found = (entries.get("location"), entries.get("offset", "0"), entries.get("length"))
            if e is None or not init.external:
                raise WeightFileError(f"{where}: graph tensor {name} is {'external' if init.external else 'inline'}, "
                                      f"the metadata ({fmt.KEYS.WEIGHTS}) says "
                                      f"{'it is not in the graph' if e is None else 'external'}: the graph was edited")
            if found != (self.path.name, str(e.offset), str(e.length)) or tuple(init.dims) != e.shape \
                    or set(entries) - {"location", "offset", "length"}:
                raise WeightFileError(
                    f"{where}: graph tensor {name} reads {found[0]!r} at offset {found[1]}, {found[2]} bytes, dims "
                    f"{tuple(init.dims)}: expected {self.path.name!r} at offset {e.offset}, {e.length} bytes, dims "
                    f"{e.shape} as the metadata ({fmt.KEYS.WEIGHTS}) says: the graph was edited to read other bytes")
        missing = sorted(set(want) - set(initializers))
        if missing:
            raise WeightFileError(f"{where}: the metadata lists {', '.join(missing)} in the graph, but the graph has "
                                  "no such initializer: the graph was edited")

    def _sha_mismatch(self, name: str) -> WeightFileError:
        return WeightFileError(f"{self._model_name}: tensor {name} in {self.path.name} does not match its SHA-256 "
                               "in the metadata: the file was changed or belongs to another export")

    # ------------------------------------------------------------------ reads
    def _entry(self, name: str) -> TensorEntry:
        if name not in self.entries:
            raise ModelFileError(f"{self._model_name}: no tensor {name!r} in its weights file: expected one of "
                                 f"{', '.join(sorted(self.entries))}")
        return self.entries[name]

    def _read(self, offset: int, n: int) -> np.ndarray:
        """Bytes offset..offset+n of the file, as a uint8 array."""
        return self._read_into(offset, np.empty(n, dtype=np.uint8))

    def _read_into(self, offset: int, buf: np.ndarray, what: str = "") -> np.ndarray:
        """Fill the contiguous uint8 array ``buf`` from the file at ``offset``; WeightFileError (naming
        ``what`` was read) when the file ends first."""
        if self._map is not None:
            buf[:] = self._map[offset:offset + len(buf)]
            return buf
        done = 0
        while done < len(buf):
            got = os.preadv(self._fd, [buf[done:]], offset + done)
            if got <= 0:
                raise WeightFileError(f"{self._model_name}: {self.path.name} ended early{what}: expected {len(buf)} "
                                      f"bytes at offset {offset}, got {done} (truncated under the model?)")
            done += got
        return buf

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def tensor(self, name: str, out: Optional[np.ndarray] = None) -> np.ndarray:
        """The whole tensor ``name``, SHA-256 checked; read straight into ``out`` (a uint8 buffer of
        the tensor's byte length, e.g. huge pages) when given, whose memory the result then shares."""
        e = self._entry(name)
        if out is None:
            out = np.empty(e.length, dtype=np.uint8)
        elif out.dtype != np.uint8 or out.shape != (e.length,):
            raise ValueError(f"out: expected a uint8 buffer of {e.length} bytes, got {out.dtype} {out.shape}")
        self._read_into(e.offset, out, f" reading {name}")
        if hashlib.sha256(out).hexdigest() != e.sha256:
            raise self._sha_mismatch(name)
        self.bytes_read += e.length
        return out.view(np.dtype(e.dtype).newbyteorder("<")).astype(e.dtype, copy=False).reshape(e.shape)

    def _row_crc(self, name: str) -> Optional[np.ndarray]:
        if name not in self._crc:
            j = name.split("_")[1] if name.startswith("weight_") else None
            crc_name = fmt.row_crc32(int(j)) if j is not None and j.isdigit() else None
            with self._lock:
                self._crc[name] = self.tensor(crc_name) if crc_name in self.entries else None
                self._checked[name] = np.zeros(self.entries[name].shape[0], dtype=bool)
        return self._crc[name]

    def rows(self, name: str, index: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Rows ``index`` (sorted, unique ints) of the 2-D tensor ``name``, as (k, n) of its dtype."""
        e = self._entry(name)
        if len(e.shape) != 2:
            raise ModelFileError(f"{self._model_name}: tensor {name} has shape {e.shape}: expected 2-D rows")
        index = np.asarray(index, dtype=np.int64)
        k = len(index)
        if k and (index[0] < 0 or index[-1] >= e.shape[0]):
            raise ModelFileError(f"{self._model_name}: rows {index.min()}..{index.max()} of {name}: expected "
                                 f"0..{e.shape[0] - 1}")
        if out is None:
            out = np.empty((k, e.shape[1]), dtype=e.dtype)
        if k == 0:
            return out
        rb = e.row_bytes
        if self._map is not None:
            view = np.ndarray(e.shape, dtype=e.dtype, buffer=self._map, offset=e.offset)
            np.take(view, index, axis=0, out=out)
        else:
            breaks = np.flatnonzero(np.diff(index) != 1) + 1
            starts = np.concatenate(([0], breaks))
            ends = np.concatenate((breaks, [k]))
            flat = out.reshape(-1).view(np.uint8)
            for a, b in zip(starts.tolist(), ends.tolist()):
                self._read_into(e.offset + int(index[a]) * rb, flat[a * rb:b * rb], f" reading rows of {name}")
        self.bytes_read += k * rb
        crc = self._row_crc(name)
        if crc is not None:
            checked = self._checked[name]
            todo = np.flatnonzero(~checked[index])
            for t in todo.tolist():
                if zlib.crc32(memoryview(out[t]).cast("B")) != int(crc[index[t]]):
                    raise WeightFileError(f"{self._model_name}: row {int(index[t])} of {name} in {self.path.name} "
                                          "does not match its CRC-32: the file was changed or is corrupt")
            if len(todo):
                with self._lock:
                    checked[index[todo]] = True
        return out

    def close(self) -> None:
        self._map = None
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


def memory_budget() -> Optional[int]:
    """Bytes this process may still take: the smaller of the address-space limit left and MemAvailable (None: unknown)."""
    limits = []
    try:
        if resource is None:
            raise ImportError("no resource module on this platform")
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            used = 0
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmSize:"):
                        used = int(line.split()[1]) * 1024
            limits.append(soft - used)
    except (ImportError, OSError, ValueError):
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    return min(limits) if limits else None


def choose_mode(weight_bytes: int, requested: str = "auto") -> tuple[str, str]:
    """("load" | "rows", why): ``auto`` loads the weights unless twice their size does not fit the memory budget."""
    if requested in ("load", "rows"):
        return requested, f"asked for {requested!r}"
    if requested != "auto":
        raise ConfigError(f"weights must be 'auto', 'load' or 'rows', got {requested!r}")
    budget = memory_budget()
    if budget is not None and 2 * weight_bytes > budget:
        return "rows", (f"the weights ({weight_bytes / 2**20:.0f} MiB) need more than half the memory this process "
                        f"may still take ({budget / 2**20:.0f} MiB): reading rows on demand")
    return "load", "the weights fit in memory: onnxruntime loads them"
