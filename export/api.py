"""Export a Zor model to one verified, self-describing ONNX file; verify a file later.

:func:`export` does, in order, and writes nothing until every step passed:

1. load the checkpoint (or take a model), resolve the device profile, check the
   output folder and the calibration data;
2. build the float32 per-step graph (:func:`zor.export.graph.to_onnx`);
3. verify it against the torch engine (unless ``verify=False``);
4. ``quantize="int8"``: threshold-aware static quantization with per-layer fallback,
   refused past ``max_drop`` (:mod:`zor.export.quantize`); ``"fp16"``: float16 weights,
   verified against the engine with the same rounded weights and measured against the
   float engine (:mod:`zor.export.fp16`);
5. store metadata (task, layers, state, recipe, calibration figures, the reports,
   the weights hash), check the graph, and write the file atomically.

``path`` (``dense`` | ``sparse`` | ``auto``) picks each connection's form
(:mod:`zor.export.sparse`): the spike rate of every layer is measured on the
calibration data (random rows in the task's input range when there is none), ``auto``
compares it with the device profile's break-even, and a sparse graph is verified
against the engine too (``zor.verification``: ``float32`` the dense graph, ``sparse``
the event-driven one). ``max_batch`` is the largest batch the sparse form accepts
(1: the batch-1 streaming form). ``external_weights`` writes the tensors to a
``.weights`` file next to the ``.onnx`` (:mod:`zor.export.external`).

Example:
    >>> import tempfile, os
    >>> from zor import Zor, Layer
    >>> out = os.path.join(tempfile.mkdtemp(), "m.onnx")
    >>> res = export(Zor([Layer(4), Layer(3), Layer(4)], seed=0), out)
    >>> res.mode, res.verification["passed"]
    ('none', True)
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import onnx

from zor.common import format as fmt
from zor.common.errors import (
    ConfigError,
    ModelFileError,
    OutputPathError,
    QuantizationError,
    VerificationError,
    WeightFileError,
)
from zor.common.fileio import write_bytes_atomic

from .calibration import CalibrationSet, load_calibration
from .fp16 import rounded_model, to_fp16
from .graph import check_proto, to_onnx
from .metadata import (
    build_metadata,
    jsonable,
    read_metadata,
    set_metadata,
    weights_sha256,
)
from .quality import measure
from .quantize import quantize_int8
from .sparse import DEFAULT_MAX_BATCH, PathPlan, dense_plan, measure_rates, plan_paths
from .verify import make_inputs, verify

__all__ = ["ExportResult", "export", "verify_file", "load_source", "load_model_file", "resolve_profile", "MODES"]

MODES = ("none", "int8", "fp16")
PathLike = Union[str, os.PathLike]


@dataclass
class ExportResult:
    path: Path
    mode: str
    bytes: int
    verification: dict
    quantization: dict
    calibration: dict
    timings: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)


def resolve_profile(device: Any):
    """A :class:`zor.devices.Profile` from a name (``auto``: the profile detected for this machine)."""
    from zor import devices

    if device == "auto":
        return devices.detect().profile
    return devices.get(device)


def load_source(source: Any):
    """(model on the CPU, engine version) from a Zor model or a checkpoint path."""
    from zor.engine.network import Zor

    if isinstance(source, Zor):
        import zor

        return source, zor.__version__
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(f"expected a Zor model or a checkpoint path, got {type(source).__name__}")
    from zor.engine.checkpoint import read_config

    meta = read_config(source)             # CheckpointError for missing / truncated / foreign / newer files
    return Zor.load(source, device="cpu"), str(meta.get("engine_version", "unknown"))


def _check_output(path: Path) -> None:
    if not path.parent.is_dir():
        raise OutputPathError(f"cannot write {path}: folder {path.parent} does not exist (create it first)")
    if path.is_dir():
        raise OutputPathError(f"cannot write {path}: it is a folder, expected a file path like model.onnx")


def export(
    source: Any,
    output: PathLike,
    device: Any = "generic",
    quantize: str = "none",
    calibration: Union[PathLike, np.ndarray, None] = None,
    max_drop: float = 0.5,
    spike_budget: float = 0.99,
    verify_model: bool = True,
    steps: Optional[int] = None,
    batch: int = 32,
    threads: int = 1,
    path: str = "dense",
    max_batch: int = DEFAULT_MAX_BATCH,
    external_weights: bool = False,
) -> ExportResult:
    """Export ``source`` (a Zor model or checkpoint path) to ``output``; see the module docstring."""
    t0 = time.perf_counter()
    if quantize not in MODES:
        raise ConfigError(f"quantize must be one of {', '.join(MODES)}, got {quantize!r}")
    if path not in fmt.PATHS:
        raise ConfigError(f"path must be one of {', '.join(fmt.PATHS)}, got {path!r}")
    if isinstance(max_batch, bool) or not isinstance(max_batch, (int, np.integer)) or max_batch < 1:
        raise ConfigError(f"max_batch must be an int ≥ 1 (rows per call the sparse form accepts), got {max_batch!r}")
    if quantize == "fp16" and path != "dense":
        raise ConfigError(f"fp16 export has no sparse form (its Cast would convert every weight row on each call): "
                          f"expected --path dense with --quantize fp16, got --path {path}")
    if external_weights and not str(output).endswith(".onnx"):
        raise ConfigError(f"external weights need an output name ending in .onnx (the weights go to NAME.weights), "
                          f"got {Path(output).name!r}")
    if not (isinstance(max_drop, (int, float)) and np.isfinite(max_drop) and max_drop >= 0):
        raise ConfigError(f"max_drop must be a finite number ≥ 0 (points of the task metric), got {max_drop!r}")
    if not (isinstance(spike_budget, (int, float)) and 0.0 <= spike_budget <= 1.0):
        raise ConfigError(f"spike_budget must lie in [0, 1] (share of agreeing spikes), got {spike_budget!r}")
    profile = resolve_profile(device)
    output = Path(output)
    _check_output(output)
    model, engine_version = load_source(source)
    n0 = model.layers[0].size
    calib: Optional[CalibrationSet] = None     # also feeds half of each verification batch when there is data
    if calibration is not None or quantize == "int8" or n0 == 784:
        calib = load_calibration(calibration, n0)

    timings: dict[str, float] = {}
    t = time.perf_counter()
    float_proto = to_onnx(model, metadata={}, engine_version=engine_version)
    timings["build_s"] = time.perf_counter() - t

    verification: dict[str, Any] = {"passed": None, "skipped": True}
    t = time.perf_counter()
    if verify_model:
        report = verify(model, float_proto, data=None if calib is None else calib.validate,
                        steps=steps, batch=batch, threads=threads)
        verification = {"passed": True, "float32": report}
    timings["verify_s"] = time.perf_counter() - t

    quant: dict[str, Any] = {"mode": "none"}
    figures: dict[str, Any] = calib.describe() if calib is not None and quantize != "none" else {}
    t = time.perf_counter()
    plan, rate_figures = _plan(model, float_proto, path, profile, calib, max_batch, threads,
                               "int8" if quantize == "int8" else "float32")
    base = float_proto
    if plan.sparse():
        base = to_onnx(model, metadata={}, engine_version=engine_version, paths=plan.with_precision(
            {j: "float32" for j in plan.sparse()}))
        if verify_model:
            verification["sparse"] = verify(model, base, data=None if calib is None else calib.validate,
                                            steps=steps, batch=batch, threads=threads, max_batch=plan.max_batch)
    timings["paths_s"] = time.perf_counter() - t
    if quantize == "none" and path != "dense":
        figures = rate_figures
    final = base
    t = time.perf_counter()
    if quantize == "int8":
        final, quant, figures, plan = _int8(model, float_proto, plan, calib, profile, spike_budget, max_drop,
                                            engine_version)
        verification["int8"] = {"spike_agreement": [row["spike_agreement"] for row in quant["layers"]],
                                "metric_drop": quant["metric"]["drop"], "fallback": quant["fallback"]}
    elif quantize == "fp16":
        final = to_fp16(float_proto)
        if verify_model:
            verification["fp16"] = verify(rounded_model(model), final, data=None if calib is None else calib.validate,
                                          steps=steps, batch=batch, mode="fp16", threads=threads)
        cal = calib or load_calibration(make_inputs(model, 64, 1, seed=3)[0], n0)
        quality = measure(model, final, cal)
        quant = jsonable({"mode": "fp16", "weights": "float16 (Cast to float32)", "thresholds": "float32",
                          "max_drop": max_drop, "layers": quality["layers"], "output": quality["output"],
                          "metric": quality["metric"],
                          "validation": {"rows": quality["rows"], "steps": quality["steps"], "source": cal.source},
                          "size": {"float32_graph_bytes": len(float_proto.SerializeToString()),
                                   "fp16_graph_bytes": len(final.SerializeToString())}})
        if quant["metric"]["drop"] > max_drop:
            raise QuantizationError(f"fp16 export refused: the task metric drops by {quant['metric']['drop']:.3f} "
                                    f"points, more than --max-drop {max_drop:g}; nothing was written", report=quant)
    timings["quantize_s"] = time.perf_counter() - t

    meta = build_metadata(model, engine_version, quantization=quant, calibration=figures, verification=verification,
                          paths=plan)
    set_metadata(final, meta)
    check_proto(final)
    t = time.perf_counter()
    weights: dict[str, Any] = {}
    if external_weights:
        from .external import write_external

        weights = write_external(final, output, model=model, metadata=meta)
        meta = {**meta, fmt.KEYS.WEIGHTS: _dumps(weights)}
        size = output.stat().st_size
    else:
        data = final.SerializeToString()
        write_bytes_atomic(output, data)
        size = len(data)
    timings["write_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    return ExportResult(path=output, mode=quantize, bytes=size, verification=verification,
                        quantization=quant, calibration=figures, timings=jsonable(timings), metadata=meta,
                        paths=plan.to_dict(), weights=weights)


def _dumps(value: Any) -> str:
    from .metadata import dumps

    return dumps(value)


def _plan(model, float_proto, path: str, profile, calib: Optional[CalibrationSet], max_batch: int, threads: int,
          precision: str) -> tuple[PathPlan, dict[str, Any]]:
    """The per-connection path plan and the spike-rate figures it was made from (none for ``dense``)."""
    if path == "dense":
        return dense_plan(model), {}
    if calib is not None:
        x, source = calib.calibrate, calib.source
    else:
        x = make_inputs(model, 256, 1, seed=5)[0]
        source = "256 uniform random rows in the task's input range (pass --calibration for real spike rates)"
    steps = 10 if model.stateful else 1
    rates, union = measure_rates(model, float_proto, x, steps=steps, max_batch=max_batch, threads=threads)
    plan = plan_paths(model, path, profile, rates, union, max_batch=max_batch, rates_source=source,
                      rates_rows=len(x), precision=precision)
    figures = jsonable({"source": source, "calibration_rows": int(len(x)), "steps": steps, "max_batch": max_batch,
                        "layers": [{"layer": i, "spike_rate": r, "union_rate": u}
                                   for i, (r, u) in enumerate(zip(rates, union))]})
    return plan, figures


def _int8(model, float_proto, plan: PathPlan, calib: CalibrationSet, profile, spike_budget: float, max_drop: float,
          engine_version: str):
    """int8 with sparse connections: their rows int8 (weight-only) unless that costs the spike budget or the
    metric budget, then float rows, one connection at a time (the dense ones fall back inside quantize_int8)."""
    precisions = {j: "int8" for j in plan.sparse()}
    while True:
        cand_plan = plan.with_precision(precisions)
        cand = to_onnx(model, metadata={}, engine_version=engine_version, paths=cand_plan) if precisions else float_proto
        try:
            q, quant, figures = quantize_int8(model, cand, calib, profile.int8, profile=profile.name,
                                              spike_budget=spike_budget, max_drop=max_drop, sparse=precisions,
                                              max_batch=cand_plan.max_batch)
        except QuantizationError as exc:
            worst = _worst_int8_rows(getattr(exc, "report", None) or {}, precisions)
            if worst is None:
                raise
            precisions[worst] = "float32"
            continue
        agree = {row.get("connection"): row["spike_agreement"] for row in quant["layers"] if "connection" in row}
        bad = sorted(j for j, p in precisions.items() if p == "int8" and agree.get(j, 1.0) < spike_budget)
        if not bad:
            return q, quant, figures, cand_plan
        precisions[bad[0]] = "float32"


def _worst_int8_rows(report: dict, precisions: dict[int, str]) -> Optional[int]:
    """The int8-rows connection whose next layer agrees least with the engine (None: no int8 rows left)."""
    rows = [j for j, p in precisions.items() if p == "int8"]
    if not rows:
        return None
    agree = {row.get("connection"): row.get("spike_agreement", 1.0) for row in report.get("layers", [])}
    return min(rows, key=lambda j: (agree.get(j, 1.0), j))


def load_model_file(path: PathLike, load_external: bool = True) -> onnx.ModelProto:
    """Read a Zor ONNX file; ModelFileError when it is missing, not ONNX, or not a Zor export.

    A file with external weights (``zor.weights``) gets them loaded from its ``.weights``
    file (``load_external=False``: left as references); WeightFileError when that file is
    missing or of another size than the metadata says.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist (expected an .onnx file written by zor-export)")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends are not one family
        raise ModelFileError(f"{path}: not a readable ONNX file (truncated or foreign?): {exc}") from exc
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get(fmt.KEYS.FORMAT) != fmt.FORMAT:
        raise ModelFileError(f"{path}: expected a Zor export (metadata {fmt.KEYS.FORMAT}={fmt.FORMAT!r}), got "
                             f"{meta.get(fmt.KEYS.FORMAT)!r}: was it written by zor-export?")
    try:
        version = int(meta.get(fmt.KEYS.FORMAT_VERSION, ""))
    except ValueError as exc:
        raise ModelFileError(f"{path}: bad {fmt.KEYS.FORMAT_VERSION} {meta.get(fmt.KEYS.FORMAT_VERSION)!r}") from exc
    if version > fmt.FORMAT_VERSION:
        raise ModelFileError(f"{path}: format version {version} is newer than this exporter reads "
                             f"(≤ {fmt.FORMAT_VERSION}); upgrade zor-edge")
    if load_external and any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer):
        _check_weights_file(path, meta.get(fmt.KEYS.WEIGHTS, ""))
        try:
            onnx.load_external_data_for_model(proto, str(path.parent))
        except Exception as exc:
            raise WeightFileError(f"{path.name}: cannot read its external weights: {exc}") from exc
    return proto


def _check_weights_file(path: Path, spec_text: str) -> None:
    import json

    try:
        spec = json.loads(spec_text) if spec_text else {}
        location, size = str(spec["location"]), int(spec["bytes"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{path.name}: has external weights but no valid {fmt.KEYS.WEIGHTS} metadata "
                             f"({exc}): expected {{location, bytes, tensors}}") from None
    wpath = path.parent / location
    if not wpath.is_file():
        raise WeightFileError(f"{path.name}: its weights file {location} is missing: expected {size:,} bytes next to "
                              "the .onnx (copy both files together)")
    have = wpath.stat().st_size
    if have != size:
        raise WeightFileError(f"{path.name}: its weights file {location} holds {have:,} bytes, expected {size:,} as "
                              f"the metadata says ({'truncated' if have < size else 'another export'}?)")


def verify_file(
    model_path: PathLike,
    checkpoint: PathLike,
    data: Union[PathLike, np.ndarray, None] = None,
    steps: Optional[int] = None,
    batch: int = 32,
    threads: int = 1,
) -> dict[str, Any]:
    """Re-verify an exported file against its checkpoint; raise VerificationError on failure.

    The weights hash must match first. float32 and fp16 files get the parity check
    (fp16 against the engine with fp16-rounded weights); int8 files are measured
    against the float engine and must meet the spike budget and metric drop stored
    at export.
    """
    proto = load_model_file(model_path)
    meta = read_metadata(proto)
    model, _ = load_source(checkpoint)
    want, have = meta.get(fmt.KEYS.WEIGHTS_SHA256), weights_sha256(model)
    if want != have:
        raise VerificationError(f"{Path(model_path).name} was exported from other weights than "
                                f"{Path(checkpoint).name}: weights hash {str(want)[:12]}… in the file, "
                                f"{have[:12]}… in the checkpoint",
                                report={"passed": False, "failures": ["weights hash mismatch"]})
    quant = meta.get(fmt.KEYS.QUANTIZATION) or {}
    mode = quant.get("mode", "none") if isinstance(quant, dict) else "none"
    paths = meta.get(fmt.KEYS.PATHS) or {}
    mb = paths.get("max_batch") if isinstance(paths, dict) else None
    if mb is not None and (isinstance(mb, bool) or not isinstance(mb, int) or mb < 1):
        raise ModelFileError(f"{Path(model_path).name}: {fmt.KEYS.PATHS} max_batch expected an int ≥ 1 or null, got {mb!r}")
    n0 = model.layers[0].size
    calib = load_calibration(data, n0) if (data is not None or n0 == 784) else None
    validate = None if calib is None else calib.validate
    if mode == "none":
        return verify(model, proto, data=validate, steps=steps, batch=batch, threads=threads, max_batch=mb)
    if mode == "fp16":
        return verify(rounded_model(model), proto, data=validate, steps=steps, batch=batch, mode="fp16", threads=threads)
    if mode != "int8":
        raise ModelFileError(f"{Path(model_path).name}: unknown quantization mode {mode!r} (expected none, int8, fp16)")
    cal = calib or load_calibration(make_inputs(model, 64, 1, seed=3)[0], n0)
    quality = measure(model, proto, cal, max_batch=mb)
    budget = float(quant.get("spike_budget", 0.99))
    max_drop = float(quant.get("max_drop", 0.5))
    failures = [f"layer {row['layer']}: spike agreement {100 * row['spike_agreement']:.3f} % < budget {100 * budget:g} %"
                for row in quality["layers"] if row["layer"] >= 1 and row["spike_agreement"] < budget]
    if quality["metric"]["drop"] > max_drop:
        failures.append(f"task metric drop {quality['metric']['drop']:.3f} > max drop {max_drop:g}")
    report = jsonable({"mode": "int8", "passed": not failures, "failures": failures, **quality,
                       "spike_budget": budget, "max_drop": max_drop, "source": cal.source})
    if failures:
        raise VerificationError("int8 verification failed: " + "; ".join(failures), report=report)
    return report
