"""``export_nir``: a NIR graph → one verified, stateful, self-describing ONNX step graph.

    from zor.export import export_nir
    export_nir("net.nir", "net.onnx", dt=1e-4)            # checked, built, verified, then written
    export_nir("net.nir", "q.onnx", dt=1e-4, quantize="int8", calibration="events.npy", device="auto")

Pipeline, nothing written until the last step: the output path is checked (not the input, a writable
folder); the graph is read and checked (:mod:`.graph`; a bad file is a NirGraphError, exit 2); the
path plan is made (:mod:`.paths`: dense, sparse, or auto from the input rates measured on the events
and the device profile's break-even); the step graph is built (:mod:`.onnxgraph`); it is verified
against the reference simulation over ``steps`` steps from the fresh and from a random state
(:mod:`.verify`); with ``quantize="int8"`` its connections are quantized with the profile's recipe,
spike budget and per-node fallback (:mod:`.int8`); metadata (the zor.* keys, the NIR graph's own
``zor.nir`` record: source file, dt, discretisation per node, nodes, edges) and ``zor.integrity`` go
in; the file is written atomically.

Events: ``calibration`` (T, B, *input_shape) or (T, *input_shape), a .npy path or an array, else the
graph's own verification inputs (random binary events, rate 0.3, seed 0). They verify (the first T =
``steps`` steps), measure the input rates of ``auto`` and calibrate int8; int8 validates on other events
(the odd rows of the given ones, or the same kind of random events with seed 1).
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
from zor import devices
from zor.common import format as fmt
from zor.common.errors import ConfigError, NirGraphError
from zor.common.fileio import check_output_file, write_bytes_atomic

from ..api import ExportResult
from ..jsonsafe import dumps
from ..metadata import set_integrity, set_metadata
from .graph import NirGraph, load_graph, with_discretisation
from .int8 import quantize_nir, split_events
from .kinds import converter_for
from .neurons import DISCRETISATION
from .onnxgraph import build_onnx
from .paths import plan_nir_paths
from .reference import state_layout
from .verify import default_inputs, verify_step_graph

__all__ = ["export_nir", "nir_metadata", "NIR_KEY"]

NIR_KEY = "zor.nir"       # the NIR record, NIR imports only (documented in zor.common.format, not in its KEYS:
                          # those are the keys every export carries)


def _check_budgets(spike_budget: Any, max_drop: Any) -> None:
    for name, value, hi in (("spike_budget", spike_budget, 1.0), ("max_drop", max_drop, math.inf)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= hi \
                or math.isnan(value):
            raise ConfigError(f"{name} = {value!r}: expected a number in [0, {hi:g}]"
                              + (" (the share of spikes that must agree)" if hi == 1.0 else " (points of class agreement)"))


def _check_options(dt: Any, steps: Any, quantize: str, path: str) -> float:
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not math.isfinite(dt) or dt <= 0:
        raise NirGraphError(f"dt = {dt!r}: expected a positive finite time step (seconds, as the NIR file's τ)")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps = {steps!r}: expected a positive integer (time steps verified)")
    if quantize not in ("none", "float32", "int8"):
        raise ConfigError(f"quantize = {quantize!r}: expected 'none' (float32) or 'int8' for a NIR import "
                          "(fp16 is not available for NIR imports)")
    if path not in ("dense", "sparse", "auto"):
        raise ConfigError(f"path = {path!r}: expected 'dense', 'sparse' (every Affine/Linear node on a 1-D input in "
                          "the event-driven batch-1 form) or 'auto' (sparse where the measured input rate is below "
                          "the device profile's break-even)")
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


def _metadata(graph: NirGraph, model: onnx.ModelProto, dt: float, source_name: str, verification: dict,
              paths: dict, discretisation: str = DISCRETISATION, quantization: Optional[dict] = None,
              calibration: Optional[dict] = None) -> dict[str, str]:
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
        K.STATE: dumps(state), K.QUANTIZATION: dumps(quantization or {"mode": "none"}),
        K.CALIBRATION: dumps(calibration or {}), K.VERIFICATION: dumps(verification),
        K.WEIGHTS_SHA256: _weights_sha256(model), K.PATHS: dumps(paths), K.WEIGHTS: dumps({}), NIR_KEY: dumps(nir_metadata(graph, dt, source_name, discretisation)),
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


def _profile(device: Any) -> Any:
    return devices.detect().profile if device == "auto" else devices.get(device)


def _int8(graph: NirGraph, model: onnx.ModelProto, xs: Optional[np.ndarray], steps: int, profile: Any,
          spike_budget: float, max_drop: float, sparse: tuple[str, ...]) -> tuple[onnx.ModelProto, dict, dict]:
    """The int8 graph of the verified float ``model``: calibrated and validated on the given events (even / odd
    rows), else on the graph's own random events (seeds 0 / 1)."""
    if xs is None:
        calib, valid, source = (default_inputs(graph, steps), default_inputs(graph, steps, seed=1),
                                "random binary events, rate 0.3 (calibration seed 0, validation seed 1)")
    else:
        (calib, valid), source = split_events(xs[:steps]), "given events (even rows calibrate, odd rows validate)"
    return quantize_nir(graph, model, calib, valid, profile.int8, profile.name, spike_budget, max_drop, sparse,
                        max_batch=1 if sparse else None, source=source)


def _int8_form(graph: NirGraph, dt: float, sparse: tuple[str, ...], verified: onnx.ModelProto) -> onnx.ModelProto:
    """The verified graph with its biases as y − (−b): equal values (IEEE), the form onnxruntime's int8 kernels
    fuse (:func:`.layers._add_bias`); its float initializers are the verified graph's."""
    proto = build_onnx(graph, dt, sparse, bias_sub=True)
    mine = {i.name: onnx.numpy_helper.to_array(i) for i in verified.graph.initializer}
    for init in proto.graph.initializer:
        if init.name in mine and not np.array_equal(onnx.numpy_helper.to_array(init), mine[init.name]):
            raise AssertionError(f"int8 form: initializer {init.name} differs from the verified graph's")
    return proto


def export_nir(source: Union[str, Path, Any], output: Union[str, Path], *, dt: float, steps: int = 100,
               quantize: str = "none", path: str = "dense", calibration: Any = None, device: str = "generic",
               verify_model: bool = True, discretisation: str = DISCRETISATION, spike_budget: float = 0.99,
               max_drop: float = 0.5) -> ExportResult:
    """Export the NIR graph ``source`` (path or nir.NIRGraph) to ``output``; see the module docstring.
    ``device``: the profile (name, or "auto" for this machine) whose int8 recipe and sparse break-even apply."""
    start = time.perf_counter()
    dt = _check_options(dt, steps, quantize, path)
    _check_budgets(spike_budget, max_drop)
    src_path = Path(source) if isinstance(source, (str, Path)) else None
    out = check_output_file(output, inputs=[src_path] if src_path else [])
    profile = _profile(device)
    timings: dict[str, float] = {}
    graph = with_discretisation(load_graph(source), discretisation)
    xs = _calibration(graph, calibration)
    t = time.perf_counter()
    sparse, paths = plan_nir_paths(graph, dt, path, profile, default_inputs(graph, steps) if xs is None else xs[:steps],
                                   "given events" if xs is not None else "random binary events, rate 0.3, seed 0")
    timings["paths_s"] = time.perf_counter() - t
    t = time.perf_counter()
    model = build_onnx(graph, dt, sparse)
    timings["build_s"] = time.perf_counter() - t
    vxs = (default_inputs(graph, steps, batch=1) if xs is None else xs[:, :1]) if sparse else xs   # batch-1 form
    t = time.perf_counter()
    verification = ({"passed": True, "nir": verify_step_graph(graph, model, dt, steps, vxs)} if verify_model
                    else {"passed": None, "skipped": True})
    timings["verify_s"] = time.perf_counter() - t
    quant, figures, final_proto = {"mode": "none"}, {}, model
    if quantize == "int8":
        t = time.perf_counter()
        final_proto, quant, figures = _int8(graph, _int8_form(graph, dt, sparse, model), xs, steps, profile,
                                            spike_budget, max_drop, sparse)
        verification["int8"] = {"spike_agreement": {r["node"]: r["spike_agreement"] for r in quant["spikes"]},
                                "metric_drop": quant["metric"]["drop"], "fallback": quant["fallback"]}
        timings["quantize_s"] = time.perf_counter() - t
    meta = _metadata(graph, model, dt, src_path.name if src_path else "<in memory>", verification, paths,
                     discretisation, quant, figures)
    set_metadata(final_proto, meta)
    set_integrity(final_proto)
    data = final_proto.SerializeToString()
    write_bytes_atomic(out, data)
    timings["total_s"] = time.perf_counter() - start
    final = {p.key: p.value for p in final_proto.metadata_props if p.key.startswith("zor.")}
    return ExportResult(path=out, mode="int8" if quantize == "int8" else "float32", bytes=len(data),
                        verification=verification, quantization=quant, calibration=figures, timings=timings,
                        metadata=final, paths=paths)
