"""``export_nir``: a NIR graph → one verified, stateful, self-describing ONNX step graph.

    from zor.export import export_nir
    export_nir("net.nir", "net.onnx", dt=1e-4)            # checked, built, verified, then written

Pipeline, nothing written until the last step: the output path is checked (not the input, a writable
folder); the graph is read and checked (:mod:`.graph`; a bad file is a NirGraphError, exit 2); the step
graph is built (:mod:`.onnxgraph`); it is verified against the reference simulation over ``steps``
steps from the fresh and from a random state (:mod:`.verify`); metadata (the zor.* keys, the NIR
graph's own ``zor.nir`` record: source file, dt, discretisation per node, nodes, edges) and
``zor.integrity`` go in; the file is written atomically.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import onnx

import zor
from zor.common import format as fmt
from zor.common.errors import ConfigError, NirGraphError
from zor.common.fileio import check_output_file, write_bytes_atomic

from ..api import ExportResult
from ..jsonsafe import dumps
from ..metadata import set_integrity, set_metadata
from .graph import NirGraph, load_graph, with_discretisation
from .kinds import converter_for
from .neurons import DISCRETISATION
from .onnxgraph import build_onnx, sparse_nodes
from .reference import state_layout
from .verify import default_inputs, verify_step_graph

__all__ = ["export_nir", "nir_metadata", "NIR_KEY"]

NIR_KEY = "zor.nir"       # the NIR record, NIR imports only (documented in zor.common.format, not in its KEYS:
                          # those are the keys every export carries)


def _check_options(dt: Any, steps: Any, quantize: str, path: str) -> float:
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not math.isfinite(dt) or dt <= 0:
        raise NirGraphError(f"dt = {dt!r}: expected a positive finite time step (seconds, as the NIR file's τ)")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps = {steps!r}: expected a positive integer (time steps verified)")
    if quantize not in ("none", "float32"):
        raise ConfigError(f"quantize = {quantize!r}: a NIR import is exported in float32 only in this version "
                          "(expected 'none'); int8 for NIR graphs is not available yet")
    if path not in ("dense", "sparse"):
        raise ConfigError(f"path = {path!r}: expected 'dense' or 'sparse' for a NIR import (sparse: every Affine/Linear "
                          "node in the event-driven batch-1 form); 'auto' is not available for NIR imports yet")
    return float(dt)


def _layers(graph: NirGraph) -> list[dict[str, Any]]:
    out = []
    for k, name in enumerate(graph.order):
        node, conv = graph.nodes[name], converter_for(graph.nodes[name].kind)
        out.append({"index": k, "kind": "nir", "nir_type": node.kind, "name": name,
                    "size": int(math.prod(node.out_shape)), "shape": list(node.out_shape),
                    "stateful": bool(conv.state), "spiking": conv.spiking})
    return out


def _weights_sha256(model: onnx.ModelProto) -> str:
    """SHA-256 of the float32 initializers in graph order (name, then little-endian C-order bytes)."""
    h = hashlib.sha256()
    for init in model.graph.initializer:
        arr = onnx.numpy_helper.to_array(init)
        h.update(init.name.encode("utf-8"))
        h.update(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes())
    return h.hexdigest()


def nir_metadata(graph: NirGraph, dt: float, source_name: str, discretisation: str = DISCRETISATION) -> dict[str, Any]:
    """The ``zor.nir`` record: what was imported and how it was discretised."""
    return {"source": source_name, "dt": dt, "discretisation": discretisation,
            "nodes": [dict(d, discretisation=discretisation if d["state"] else "exact") for d in graph.summary()],
            "edges": [list(e) for e in graph.edges], "recurrent_edges": [list(e) for e in graph.recurrent],
            "nir_version": _nir_version()}


def _nir_version() -> str:
    try:
        import nir
        return str(getattr(nir, "__version__", ""))
    except ImportError:
        return ""


def _paths(graph: NirGraph, sparse: tuple[str, ...]) -> dict[str, Any]:
    """``zor.paths`` of a NIR import: {} when dense; else the sparse nodes (by position k) and the batch limit 1."""
    if not sparse:
        return {}
    conns = [{"connection": graph.order.index(n), "node": n, "kind": graph.nodes[n].kind, "path": "sparse",
              "synapses": int(graph.nodes[n].params["weight"].size), "precision": "float32",
              "reason": "requested (--path sparse): only the weight rows of non-zero inputs are read"} for n in sparse]
    return {"requested": "sparse", "form": "batch1", "max_batch": 1, "connections": conns}


def _metadata(graph: NirGraph, model: onnx.ModelProto, dt: float, source_name: str,
              verification: dict, sparse: tuple[str, ...] = (), discretisation: str = DISCRETISATION) -> dict[str, str]:
    K = fmt.KEYS
    state = [{"layer": e.index, "size": e.size, "input": e.input, "output": e.output, "initial": e.initial,
              "meaning": (f"node {e.node!r} variable {e.var}" if e.var != "edge" else
                          f"recurrent edge {e.edge[0]!r} → {e.edge[1]!r}: the source's value one step before")}
             for e in state_layout(graph)]
    task = {"name": "generic", "input": {"shape": list(graph.input_shape), "meaning": "one time step of events"},
            "output": {"shape": list(graph.output_shape), "meaning": f"node {graph.output!r} at this step"},
            "source": "nir"}
    return {
        K.FORMAT: fmt.FORMAT, K.FORMAT_VERSION: str(fmt.FORMAT_VERSION), K.ENGINE_VERSION: str(zor.__version__),
        K.LAYERS: dumps(_layers(graph)), K.TASK: dumps(task), K.STATEFUL: "true" if state else "false",
        K.STATE: dumps(state), K.QUANTIZATION: dumps({"mode": "none"}), K.CALIBRATION: dumps({}),
        K.VERIFICATION: dumps(verification), K.WEIGHTS_SHA256: _weights_sha256(model),
        K.PATHS: dumps(_paths(graph, sparse)), K.WEIGHTS: dumps({}), NIR_KEY: dumps(nir_metadata(graph, dt, source_name, discretisation)),
    }


def _calibration(graph: NirGraph, calibration: Any) -> Optional[np.ndarray]:
    """Verification inputs (T, B, *input_shape) from a .npy path or array (a (T, *shape) array gets B = 1)."""
    if calibration is None:
        return None
    if isinstance(calibration, (str, Path)):
        try:
            calibration = np.load(calibration, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise NirGraphError(f"calibration {calibration}: not a readable .npy of numbers ({exc}): expected "
                                "events (T, B, *input_shape) saved by numpy.save") from None
    xs = np.asarray(calibration, np.float32)
    if xs.ndim == 1 + len(graph.input_shape):
        xs = xs[:, None]
    if xs.ndim != 2 + len(graph.input_shape) or tuple(xs.shape[2:]) != graph.input_shape or not np.isfinite(xs).all():
        raise NirGraphError(f"calibration events have shape {list(xs.shape)}: expected finite (T, B, "
                            f"{', '.join(map(str, graph.input_shape))}) or (T, {', '.join(map(str, graph.input_shape))})")
    return xs


def export_nir(source: Union[str, Path, Any], output: Union[str, Path], *, dt: float, steps: int = 100,
               quantize: str = "none", path: str = "dense", calibration: Any = None, device: str = "generic",
               verify_model: bool = True, discretisation: str = DISCRETISATION) -> ExportResult:
    """Export the NIR graph ``source`` (path or nir.NIRGraph) to ``output``; see the module docstring."""
    start = time.perf_counter()
    dt = _check_options(dt, steps, quantize, path)
    src_path = Path(source) if isinstance(source, (str, Path)) else None
    out = check_output_file(output, inputs=[src_path] if src_path else [])
    timings: dict[str, float] = {}
    graph = with_discretisation(load_graph(source), discretisation)
    xs = _calibration(graph, calibration)
    t = time.perf_counter()
    sparse = tuple(sparse_nodes(graph)) if path == "sparse" else ()
    model = build_onnx(graph, dt, sparse)
    if sparse:                                            # the batch-1 form takes one row per call
        xs = default_inputs(graph, steps, batch=1) if xs is None else xs[:, :1]
    timings["build_s"] = time.perf_counter() - t
    t = time.perf_counter()
    verification = ({"passed": True, "nir": verify_step_graph(graph, model, dt, steps, xs)} if verify_model
                    else {"passed": None, "skipped": True})
    timings["verify_s"] = time.perf_counter() - t
    meta = _metadata(graph, model, dt, src_path.name if src_path else "<in memory>", verification, sparse,
                     discretisation)
    set_metadata(model, meta)
    set_integrity(model)
    data = model.SerializeToString()
    write_bytes_atomic(out, data)
    timings["total_s"] = time.perf_counter() - start
    final = {p.key: p.value for p in model.metadata_props if p.key.startswith("zor.")}
    return ExportResult(path=out, mode="float32", bytes=len(data), verification=verification,
                        quantization={"mode": "none"}, calibration={}, timings=timings, metadata=final,
                        paths=_paths(graph, sparse))
