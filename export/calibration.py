"""Calibration and validation data for int8/fp16 export, and the task metric.

Where the data comes from (:func:`find_calibration`), never guessed from the input width:

- the caller's data (``--calibration DATA``): a float array (N, n_0), or a ``.npy``
  file holding one, N ≥ 2: rows 0, 2, 4, ... calibrate, rows 1, 3, 5, ... validate
  (the same rows do both when N < 20);
- else the data set the checkpoint's task records (``task["data"]["name"]``, as
  :func:`zor.tasks.images.classify_task` writes it): ``fashion-mnist`` is the bundled
  subset (200 training images calibrate, 500 test images with labels validate);
- else none: int8 export then refuses with a :class:`~zor.common.errors.DataError`
  that says what to pass (:func:`load_calibration` of ``None``).

The task metric (what ``--max-drop`` limits), chosen from the model's task:

- ``classify``: accuracy (%) against the labels when there are labels and the output
  width matches their classes, else agreement (%) with the float model's argmax;
- ``translate`` (a next-token step model): agreement (%) of the next token, the
  argmax, with the float model's;
- ``reconstruct``, or ``generic`` with n_0 = n_L (an autoencoder): the seed's metric
  100·(1 − MAE) against the input, with PSNR beside it;
- anything else: 100·(1 − MAE) against the float model's own output, which bounds the
  drop against any target (|MAE(q, y) − MAE(f, y)| ≤ MAE(q, f)).

Example:
    >>> import numpy as np
    >>> task_metric({"name": "reconstruct"}, np.full((1, 4), 0.5, np.float32),
    ...             np.ones((1, 4), np.float32), np.ones((1, 4), np.float32))["value"]
    50.0
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np

from zor.common import metrics
from zor.common.errors import DataError, DataNotFoundError, ShapeError
from zor.tasks.datasets import load_bundled
from zor.tasks.images import FASHION_MNIST

__all__ = ["CalibrationSet", "load_calibration", "find_calibration", "recorded_calibration", "task_metric",
           "metric_kind", "RECORDED_DATA"]


@dataclass
class CalibrationSet:
    calibrate: np.ndarray                    # (N_c, n_0) float32
    validate: np.ndarray                     # (N_v, n_0) float32
    labels: Optional[np.ndarray]             # (N_v,) int for ``validate`` when known
    source: str                              # where it came from (a file name, not a path)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "calibration_rows": int(len(self.calibrate)),
                "validation_rows": int(len(self.validate)), "labels": self.labels is not None}


def _from_array(x: Any, width: int, source: str) -> CalibrationSet:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != width:
        raise ShapeError(f"calibration data {source}: expected shape (N, {width}) to match the model's input "
                         f"width, got {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"calibration data {source}: expected floating-point values, got dtype {x.dtype}"
                        + (" (scale integer images to [0, 1] first)" if np.issubdtype(x.dtype, np.integer) else ""))
    if len(x) < 2:
        raise DataError(f"calibration data {source}: expected at least 2 rows, got {len(x)}")
    if not np.isfinite(x).all():
        raise DataError(f"calibration data {source}: expected finite values, got "
                        f"{int((~np.isfinite(x)).sum())} NaN/inf entries")
    x = x.astype(np.float32)
    if len(x) >= 20:
        return CalibrationSet(x[0::2], x[1::2], None, source)
    return CalibrationSet(x, x, None, source)


def _fashion_mnist() -> CalibrationSet:
    xc, _ = load_bundled("train")
    xv, yv = load_bundled("test")
    return CalibrationSet(xc, xv, yv, "bundled Fashion-MNIST subset (200 train / 500 test)")


# task["data"]["name"] → its calibration set
RECORDED_DATA: dict[str, Callable[[], CalibrationSet]] = {FASHION_MNIST: _fashion_mnist}


def recorded_calibration(task: Optional[dict], width: int) -> Optional[CalibrationSet]:
    """The calibration set of the data set ``task`` records (``task["data"]["name"]``); None when it records none."""
    data = task.get("data") if isinstance(task, dict) else None
    name = data.get("name") if isinstance(data, dict) else None
    if name is None:
        return None
    if name not in RECORDED_DATA:
        raise DataError(f"the model's task records data set {name!r}, which the exporter cannot load (known: "
                        f"{', '.join(sorted(RECORDED_DATA))}): pass --calibration DATA, a .npy file of shape (N, {width})")
    calib = RECORDED_DATA[name]()
    if calib.calibrate.shape[1] != width:
        raise ShapeError(f"the model's task records data set {name!r} of width {calib.calibrate.shape[1]}, but the "
                         f"model's input width is {width}: pass --calibration DATA, a .npy file of shape (N, {width})")
    return calib


def find_calibration(data: Union[str, os.PathLike, np.ndarray, None], task: Optional[dict], width: int,
                     required: bool = False) -> Optional[CalibrationSet]:
    """The caller's data when given, else the data set ``task`` records, else None, or a DataError saying
    what to pass when ``required`` (see the module docstring)."""
    if data is not None:
        return load_calibration(data, width)
    calib = recorded_calibration(task, width)
    if calib is None and required:
        raise _missing(width)
    return calib


def _missing(width: int) -> DataError:
    return DataError(f"int8 export needs calibration data: pass --calibration DATA, a .npy file of shape "
                     f"(N, {width}) with typical inputs, or train with a task that records its data set "
                     f"({' or '.join(sorted(RECORDED_DATA))}, as zor.tasks.images.classify_task does)")


def load_calibration(data: Union[str, os.PathLike, np.ndarray, None], width: int) -> CalibrationSet:
    """The caller's calibration/validation data for input width ``width``; DataError for None (see the module)."""
    if isinstance(data, np.ndarray):
        return _from_array(data, width, "array")
    if data is None:
        raise _missing(width)
    path = Path(data)
    if not path.is_file():
        raise DataNotFoundError(f"calibration data {path.name!r} does not exist: expected a .npy file of shape (N, {width})")
    if path.suffix != ".npy":
        raise DataError(f"calibration data {path.name!r}: expected a .npy file of shape (N, {width}), got a "
                        f"{path.suffix or 'suffix-less'} file")
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"calibration data {path.name!r}: not a readable .npy array ({exc}); expected shape "
                        f"(N, {width}) float32") from exc
    return _from_array(x, width, path.name)


def metric_kind(task: dict, n_in: int, n_out: int, labels: Optional[np.ndarray]) -> tuple[str, str]:
    """(metric name, reference) for a task; see the module docstring."""
    name = (task or {}).get("name", "generic")
    if name == "translate":      # a step model: the next token is its argmax, so agreement on it
        return "accuracy", "float_predictions"
    if name == "classify":
        if labels is not None and labels.size and int(labels.max()) < n_out:
            return "accuracy", "labels"
        return "accuracy", "float_predictions"
    if name == "reconstruct" or (name == "generic" and n_in == n_out):
        return "seed_accuracy", "input"
    return "seed_accuracy", "float_output"


def task_metric(task: dict, output: np.ndarray, x: np.ndarray, float_output: np.ndarray,
                labels: Optional[np.ndarray] = None) -> dict[str, Any]:
    """The task metric of ``output`` for inputs ``x`` (rows aligned); see the module docstring."""
    kind, ref = metric_kind(task, x.shape[1], output.shape[1], labels)
    if kind == "accuracy":
        target = labels if ref == "labels" else np.argmax(float_output, axis=1)
        return {"metric": kind, "reference": ref, "value": metrics.class_accuracy(output, target)}
    target = x if ref == "input" else float_output
    rec = metrics.reconstruction(output, target)
    return {"metric": kind, "reference": ref, "value": rec["accuracy"], "psnr": rec["psnr"]}
