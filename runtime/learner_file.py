"""A learnable file as the Learner reads it: the load checks, the start state, and the layout it declares.

Everything here runs before a session exists, so a file changed after export, a truncated one, one
holding foreign operators or declaring a layout its tensors do not have is refused with a
ModelFileError naming what was expected (zor.runtime.learner). numpy and the runtime's own ONNX
reader only.

Example:
    >>> import numpy as np
    >>> check_scaling(None, {"betas": [0.9, 0.999]}, ["step"], "m.onnx") is None
    True
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from zor.common import format as fmt
from zor.common import moments
from zor.common.errors import ModelFileError

from . import onnxmeta
from .loaders import check_integrity

__all__ = ["LEARNABLE_FORMAT", "read", "check_file", "start_state", "check_finite", "check_blocks", "check_turned",
           "check_scaling"]

LEARNABLE_FORMAT = "zor-learnable"
PathLike = Union[str, os.PathLike]


def check_file(data: bytes, meta: dict, path: PathLike) -> None:
    """The load checks of a learnable file: zor.integrity (every initializer, the graph, the metadata) and
    every operator one the step graph emits (fmt.LEARNABLE_OPERATORS), nothing foreign."""
    if meta.get("zor.format") != LEARNABLE_FORMAT:
        return                                   # named by the caller
    try:
        scan = onnxmeta.scan_model(data, digests=True)
    except onnxmeta.ScanError as exc:
        raise ModelFileError(f"{path}: not a well-formed ONNX file ({exc})") from exc
    if fmt.KEYS.INTEGRITY not in dict(scan.metadata):
        raise ModelFileError(f"{path}: {fmt.KEYS.INTEGRITY} missing: expected a file from zor-export --learnable")
    check_integrity(scan, str(path))
    odd = sorted({n.op_type for n in scan.nodes if n.domain not in ("", "ai.onnx")
                  or n.op_type not in fmt.LEARNABLE_OPERATORS or n.subgraphs})
    if odd or scan.foreign:
        raise ModelFileError(f"{path}: operators {odd or scan.foreign} are not ones a learnable export emits; refused")


def start_state(path: str, data: bytes, names: list[str]) -> dict[str, np.ndarray]:
    """The start state: the initializers named like the state inputs (checked to lie inside the file)."""
    raw = onnxmeta.find_initializers(path, names)
    missing = [n for n in names if n not in raw]
    if missing:
        raise ModelFileError(f"{path}: start state {missing} missing from the file (truncated or tampered?)")
    state = {}
    for n in names:
        t = raw[n]
        if t.offset + t.nbytes > len(data):
            raise ModelFileError(f"{path}: tensor {n} declares bytes past the file's end (truncated?)")
        state[n] = np.frombuffer(data, t.dtype, int(np.prod(t.shape)), t.offset).reshape(t.shape).copy()
    return state


def read(path: PathLike) -> tuple[bytes, dict, dict]:
    try:
        data = Path(path).read_bytes()
        meta = onnxmeta.read_metadata_props(path)
    except FileNotFoundError as exc:
        raise ModelFileError(f"{path}: no such file (expected a learnable .onnx from zor-export --learnable)") from exc
    except (onnxmeta.ScanError, OSError) as exc:
        raise ModelFileError(f"{path}: expected a learnable ONNX file, could not read it ({exc})") from exc
    check_file(data, meta, path)
    if meta.get("zor.format") != LEARNABLE_FORMAT:
        raise ModelFileError(f"{path}: expected zor.format {LEARNABLE_FORMAT!r} (zor-export --learnable), "
                             f"got {meta.get('zor.format')!r}")
    try:
        spec = json.loads(meta["zor.learnable"])
    except (KeyError, ValueError) as exc:
        raise ModelFileError(f"{path}: zor.learnable metadata missing or not JSON") from exc
    return data, meta, spec


def check_finite(state: dict[str, np.ndarray], where: str, error: type) -> None:
    """Every state tensor finite (θ may be −inf: a layer that always spikes), else ``error``."""
    bad = [n for n, v in state.items() if not (np.isfinite(v) | (n.startswith("threshold_") & np.isneginf(v))).all()]
    if bad:
        raise error(f"{where}: expected finite values, got NaN or inf in {bad}")


def check_blocks(blocks: Any, start: dict[str, np.ndarray], path: PathLike) -> None:
    """The row blocks a file lists (spec["blocks"]) split each named state tensor into consecutive row
    ranges lo < hi covering all of its rows, else ModelFileError (the Learner binds views of them)."""
    ranges: dict[str, list] = {}
    try:
        for b in blocks:
            lo, hi = (int(r) for r in b["rows"])
            ranges.setdefault(b["state"], []).append((lo, hi))
            if not (isinstance(b["input"], str) and isinstance(b["output"], str)):
                raise TypeError("input and output must be names")
        for name, rows in ranges.items():
            n = start[name].shape[0] if start[name].ndim == 2 else -1
            ends = [0] + [hi for _, hi in rows]
            if n < 1 or any(lo != prev or hi <= lo for (lo, hi), prev in zip(rows, ends)) or ends[-1] != n:
                raise ValueError(f"rows {rows} of {name} do not split its {n} rows in order")
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: zor.learnable blocks: expected consecutive row ranges of the state's "
                             f"weight-shaped tensors, got {str(exc) or type(exc).__name__}") from exc


def check_turned(names: Any, start: dict[str, np.ndarray], sizes: list[int], path: PathLike) -> frozenset:
    """The state tensors the graph holds transposed (spec["transposed"]): each must be a weight-shaped state
    W_i, its moments, held as (n_{i+1}, n_i) in the file, else ModelFileError."""
    try:
        for n in names:
            i = int(n.rsplit("_", 1)[1])
            if not n.startswith(("weight_", "adam_m_", "adam_v_", "momentum_")) or n not in start \
                    or start[n].shape != (sizes[i + 1], sizes[i]):
                raise ValueError(n)
        return frozenset(names)
    except (TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ModelFileError(f"{path}: zor.learnable transposed: expected weight-shaped state tensors held as "
                             f"(n_(i+1), n_i), got {exc}") from exc


def check_scaling(scaling: Any, spec: dict, names: list[str], path: PathLike) -> Optional[dict]:
    """The file's scaled-state record (spec["moment_scaling"], zor.common.moments): None, or the record its own
    optimiser settings give (moments.scaling_of) with the scalar state moment_steps listed; else ModelFileError."""
    has_state = moments.STATE in names
    if scaling is None and not has_state:
        return None
    try:
        expected = moments.scaling_of(spec)
    except (TypeError, KeyError, ValueError):
        expected = None
    if not has_state or expected is None or scaling != expected:
        raise ModelFileError(f"{path}: zor.learnable moment_scaling: expected {expected!r} (from the optimiser's "
                             f"settings) with the state {moments.STATE!r}, got {scaling!r}")
    return expected
