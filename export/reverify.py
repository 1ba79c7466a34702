"""Verify an exported file again, later, against the checkpoint it came from (``zor-export verify``).

The weights hash must match first. float32 and fp16 files get the parity check
(fp16 against the engine with fp16-rounded weights); int8 files are measured against
the float engine and must meet the spike budget and metric drop stored at export.
The data: the caller's, else the data set the checkpoint's task records, else random
rows in the task's input range (:mod:`zor.export.calibration`).

Example:
    >>> import tempfile, pathlib
    >>> from zor import Zor, Layer
    >>> from zor.export import export
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> Zor([Layer(4), Layer(2)], seed=0).save(d / "m.zor")
    >>> _ = export(d / "m.zor", d / "m.onnx")
    >>> verify_file(d / "m.onnx", d / "m.zor")["passed"]
    True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from zor.common import format as fmt
from zor.common.errors import ModelFileError, VerificationError

from .calibration import CalibrationSet, find_calibration, load_calibration
from .fp16 import rounded_model
from .jsonsafe import jsonable
from .metadata import read_metadata, weights_sha256
from .modelfile import load_model_file
from .quality import measure
from .source import load_source
from .verify import make_inputs, verify

__all__ = ["verify_file"]

PathLike = Union[str, os.PathLike]


def verify_file(
    model_path: PathLike,
    checkpoint: PathLike,
    data: Union[PathLike, np.ndarray, None] = None,
    steps: Optional[int] = None,
    batch: int = 32,
    threads: int = 1,
) -> dict[str, Any]:
    """Re-verify an exported file against its checkpoint; raise VerificationError on failure (see the module)."""
    proto = load_model_file(model_path)
    meta = read_metadata(proto)
    model, _ = load_source(checkpoint)
    want, have = meta.get(fmt.KEYS.WEIGHTS_SHA256), weights_sha256(model)
    if want != have:
        raise VerificationError(f"{Path(model_path).name} was exported from other weights than "
                                f"{Path(checkpoint).name}: weights hash {str(want)[:12]}… in the file, "
                                f"{have[:12]}… in the checkpoint",
                                report={"passed": False, "failures": ["weights hash mismatch"]})
    mode, max_batch = _stored_mode(meta, Path(model_path).name)
    calib = find_calibration(data, model.task, model.layers[0].size)
    validate = None if calib is None else calib.validate
    if mode == "none":
        return verify(model, proto, data=validate, steps=steps, batch=batch, threads=threads, max_batch=max_batch)
    if mode == "fp16":
        return verify(rounded_model(model), proto, data=validate, steps=steps, batch=batch, mode="fp16", threads=threads)
    quant = meta.get(fmt.KEYS.QUANTIZATION) or {}
    cal = calib or load_calibration(make_inputs(model, 64, 1, seed=3)[0], model.layers[0].size)
    return _int8_report(model, proto, cal, quant, max_batch)


def _stored_mode(meta: dict[str, Any], name: str) -> tuple[str, Optional[int]]:
    """(quantization mode, the sparse form's batch limit or None) as the file's metadata says."""
    quant = meta.get(fmt.KEYS.QUANTIZATION) or {}
    mode = quant.get("mode", "none") if isinstance(quant, dict) else "none"
    paths = meta.get(fmt.KEYS.PATHS) or {}
    mb = paths.get("max_batch") if isinstance(paths, dict) else None
    if mb is not None and (isinstance(mb, bool) or not isinstance(mb, int) or mb < 1):
        raise ModelFileError(f"{name}: {fmt.KEYS.PATHS} max_batch expected an int ≥ 1 or null, got {mb!r}")
    if mode not in ("none", "int8", "fp16"):
        raise ModelFileError(f"{name}: unknown quantization mode {mode!r} (expected none, int8, fp16)")
    return mode, mb


def _int8_report(model, proto, cal: CalibrationSet, quant: dict[str, Any], max_batch: Optional[int]) -> dict[str, Any]:
    """An int8 file measured against the float engine; VerificationError past its stored budgets."""
    quality = measure(model, proto, cal, max_batch=max_batch)
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
