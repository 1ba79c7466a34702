"""How much a reduced-precision graph (int8, fp16) departs from the float engine.

On the validation data (:mod:`zor.export.calibration`) the torch engine and the
candidate graph run side by side (stateful models: each row is presented for
``steps`` steps from rest, every step compared). Reported:

    per layer   spike agreement = share of (row, unit, step) whose spike equals the
                engine's (every flip counts: no tie excuse below float precision),
                max/mean charge error
    output      max/mean absolute difference
    metric      the task metric of the engine and of the candidate, and the drop
                (engine − candidate, in points; PSNR drop beside it where defined)

Example:
    >>> import numpy as np
    >>> from zor import Zor, Layer
    >>> from zor.export.graph import to_onnx
    >>> from zor.export.calibration import load_calibration
    >>> m = Zor([Layer(3), Layer(3)], seed=0)
    >>> cal = load_calibration(np.random.default_rng(0).random((8, 3), dtype=np.float32), 3)
    >>> measure(m, to_onnx(m), cal)["metric"]["drop"] < 1e-4
    True
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from zor.common.errors import VerificationError

from .calibration import CalibrationSet, task_metric
from .jsonsafe import jsonable
from .verify import compare_runs

__all__ = ["measure", "validation_inputs"]


def validation_inputs(model, calib: CalibrationSet, steps: Optional[int] = None) -> np.ndarray:
    """(T, N, n_0): each validation row held for T steps (T = 1 for stateless models)."""
    steps = steps if steps is not None else (10 if model.stateful else 1)
    return np.repeat(calib.validate[None], steps, axis=0)


def measure(model, candidate, calib: CalibrationSet, steps: Optional[int] = None, threads: int = 1,
            max_batch: Optional[int] = None) -> dict[str, Any]:
    """Compare ``candidate`` (a ModelProto, bytes or Stepper) with the engine on the validation data.

    ``max_batch``: the candidate takes at most that many rows per call (a sparse export).
    """
    xs = validation_inputs(model, calib, steps)
    comp = compare_runs(model, candidate, [("validation", xs, None)], excuse_ties=False, collect=True, threads=threads,
                        max_batch=max_batch)
    if comp.failures:
        raise VerificationError("the reduced-precision graph does not fit the model: " + "; ".join(comp.failures))
    ref = np.concatenate(comp.reference)
    got = np.concatenate(comp.candidate)
    x = np.concatenate([calib.validate] * xs.shape[0])
    labels = None if calib.labels is None else np.concatenate([calib.labels] * xs.shape[0])
    before = task_metric(model.task, ref, x, ref, labels)
    after = task_metric(model.task, got, x, ref, labels)
    metric = {"metric": before["metric"], "reference": before["reference"], "float": before["value"],
              "candidate": after["value"], "drop": before["value"] - after["value"]}
    if "psnr" in before:
        metric.update(psnr_float=before["psnr"], psnr_candidate=after["psnr"], psnr_drop=before["psnr"] - after["psnr"])
    layers = [{k: row[k] for k in ("layer", "spike_agreement", "mismatches", "compared", "charge_max_err",
                                   "charge_mean_err")} for row in comp.layer_report()]
    return jsonable({"steps": int(xs.shape[0]), "rows": int(xs.shape[1]), "layers": layers,
                     "output": comp.output_report()["output"], "metric": metric})
