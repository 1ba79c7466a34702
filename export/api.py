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

from zor import format as fmt
from zor.errors import (ConfigError, ModelFileError, OutputPathError, QuantizationError,
                        VerificationError)
from zor.fileio import write_bytes_atomic

from .calibration import CalibrationSet, load_calibration
from .fp16 import rounded_model, to_fp16
from .graph import check_proto, to_onnx
from .metadata import build_metadata, jsonable, read_metadata, set_metadata, weights_sha256
from .quality import measure
from .quantize import quantize_int8
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


def resolve_profile(device: Any):
    """A :class:`zor.devices.Profile` from a name (``auto``: the profile detected for this machine)."""
    from zor import devices

    if device == "auto":
        return devices.detect().profile
    return devices.get(device)


def load_source(source: Any):
    """(model on the CPU, engine version) from a Zor model or a checkpoint path."""
    from zor.network import Zor

    if isinstance(source, Zor):
        import zor

        return source, zor.__version__
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(f"expected a Zor model or a checkpoint path, got {type(source).__name__}")
    from zor.checkpoint import read_config

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
) -> ExportResult:
    """Export ``source`` (a Zor model or checkpoint path) to ``output``; see the module docstring."""
    t0 = time.perf_counter()
    if quantize not in MODES:
        raise ConfigError(f"quantize must be one of {', '.join(MODES)}, got {quantize!r}")
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
    final = float_proto
    t = time.perf_counter()
    if quantize == "int8":
        final, quant, figures = quantize_int8(model, float_proto, calib, profile.int8, profile=profile.name,
                                              spike_budget=spike_budget, max_drop=max_drop)
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

    meta = build_metadata(model, engine_version, quantization=quant, calibration=figures, verification=verification)
    set_metadata(final, meta)
    check_proto(final)
    data = final.SerializeToString()
    t = time.perf_counter()
    write_bytes_atomic(output, data)
    timings["write_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    return ExportResult(path=output, mode=quantize, bytes=len(data), verification=verification,
                        quantization=quant, calibration=figures, timings=jsonable(timings), metadata=meta)


def load_model_file(path: PathLike) -> onnx.ModelProto:
    """Read a Zor ONNX file; ModelFileError when it is missing, not ONNX, or not a Zor export."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist (expected an .onnx file written by zor-export)")
    try:
        proto = onnx.load(str(path))
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
    return proto


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
    n0 = model.layers[0].size
    calib = load_calibration(data, n0) if (data is not None or n0 == 784) else None
    validate = None if calib is None else calib.validate
    if mode == "none":
        return verify(model, proto, data=validate, steps=steps, batch=batch, threads=threads)
    if mode == "fp16":
        return verify(rounded_model(model), proto, data=validate, steps=steps, batch=batch, mode="fp16", threads=threads)
    if mode != "int8":
        raise ModelFileError(f"{Path(model_path).name}: unknown quantization mode {mode!r} (expected none, int8, fp16)")
    cal = calib or load_calibration(make_inputs(model, 64, 1, seed=3)[0], n0)
    quality = measure(model, proto, cal)
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
