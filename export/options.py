"""How :func:`zor.export.export` exports: its settings in one checked dataclass.

``export(source, output, quantize="int8", device="rpi4")`` and
``export(source, output, ExportOptions(quantize="int8", device="rpi4"))`` are the same
call; :meth:`ExportOptions.check` refuses a bad value with a
:class:`~zor.common.errors.ConfigError` before any work is done.

Example:
    >>> opts = ExportOptions(quantize="int8", path="auto")
    >>> opts.quantize, opts.max_drop, opts.verify_model
    ('int8', 0.5, True)
    >>> ExportOptions(quantize="int4").check("m.onnx")
    Traceback (most recent call last):
    ...
    zor.common.errors.ConfigError: quantize must be one of none, int8, fp16, got 'int4'
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

from zor.common import format as fmt
from zor.common.errors import ConfigError

from .paths import DEFAULT_MAX_BATCH

__all__ = ["ExportOptions", "MODES", "options_from"]

MODES = ("none", "int8", "fp16")


@dataclass(frozen=True)
class ExportOptions:
    """The settings of one export (each field is a keyword of :func:`zor.export.export`)."""

    # device profile (a name, a zor.devices.Profile, or "auto": detected): its int8 recipe and sparse break-even
    device: Any = "generic"
    # "none" (float32), "int8" (threshold-aware static quantization) or "fp16" (float16 weights)
    quantize: str = "none"
    # typical inputs, an (N, n_0) array or a .npy path; None: the data set the model's task records, if any
    calibration: Union[str, os.PathLike, np.ndarray, None] = None
    # int8/fp16 are refused when the task metric drops by more points than this
    max_drop: float = 0.5
    # int8: least spike agreement per layer; a connection below it falls back to float
    spike_budget: float = 0.99
    # run the engine-vs-onnxruntime parity check (False skips it: not recommended)
    verify_model: bool = True
    # steps verified for stateful models (None: 100; stateless models run one step)
    steps: Optional[int] = None
    # rows per verification batch
    batch: int = 32
    # onnxruntime intra-op threads while verifying, measuring and calibrating
    threads: int = 1
    # each connection's form: "dense" MatMul, "sparse" (event-driven), or "auto" (by measured spike rate)
    path: str = "dense"
    # the largest batch the sparse form accepts (1: the batch-1 streaming form)
    max_batch: int = DEFAULT_MAX_BATCH
    # write the tensors to NAME.weights next to NAME.onnx (ONNX external data)
    external_weights: bool = False

    def check(self, output: Union[str, os.PathLike]) -> None:
        """ConfigError for a setting out of range or a combination that has no export."""
        if self.quantize not in MODES:
            raise ConfigError(f"quantize must be one of {', '.join(MODES)}, got {self.quantize!r}")
        if self.path not in fmt.PATHS:
            raise ConfigError(f"path must be one of {', '.join(fmt.PATHS)}, got {self.path!r}")
        mb = self.max_batch
        if isinstance(mb, bool) or not isinstance(mb, (int, np.integer)) or mb < 1:
            raise ConfigError(f"max_batch must be an int ≥ 1 (rows per call the sparse form accepts), got {mb!r}")
        if self.quantize == "fp16" and self.path != "dense":
            raise ConfigError(f"fp16 export has no sparse form (its Cast would convert every weight row on each "
                              f"call): expected --path dense with --quantize fp16, got --path {self.path}")
        if self.external_weights and not str(output).endswith(".onnx"):
            raise ConfigError(f"external weights need an output name ending in .onnx (the weights go to "
                              f"NAME.weights), got {Path(output).name!r}")
        drop = self.max_drop
        if not (isinstance(drop, (int, float)) and np.isfinite(drop) and drop >= 0):
            raise ConfigError(f"max_drop must be a finite number ≥ 0 (points of the task metric), got {drop!r}")
        budget = self.spike_budget
        if not (isinstance(budget, (int, float)) and 0.0 <= budget <= 1.0):
            raise ConfigError(f"spike_budget must lie in [0, 1] (share of agreeing spikes), got {budget!r}")


def options_from(options: Optional[ExportOptions], settings: Mapping[str, Any]) -> ExportOptions:
    """``options`` (default: all defaults) with the keyword ``settings`` laid over it; TypeError for an unknown key."""
    if options is not None and not isinstance(options, ExportOptions):
        raise TypeError(f"export(source, output, options): options must be an ExportOptions (other settings go "
                        f"by keyword), got {type(options).__name__}")
    known = {f.name for f in dataclasses.fields(ExportOptions)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise TypeError(f"export() got unexpected keyword arguments {unknown}: expected some of {sorted(known)}")
    return dataclasses.replace(options or ExportOptions(), **settings)
