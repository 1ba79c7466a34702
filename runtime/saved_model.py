"""Learner.save: the learned weights as an ordinary inference model, checked before it is switched in.

The learnable file carries the float32 dense inference file ``zor-export`` writes for the
same start (metadata ``zor.inference_template``, base64). Saving writes W_i and θ_i of the
session into it (:func:`zor.runtime.onnxwrite.patch_model`) and updates what depends on them:

    zor.weights_sha256   SHA-256 of θ_0, W_0, ..., θ_L (little-endian float32, C order)
    zor.layers           each layer's threshold {min, max, mean}
    zor.verification     {"passed": true, "learner": {"steps", "rows", "max_rel_diff"}}
    zor.integrity        recomputed last

then loads the new file with :class:`~zor.runtime.Model` (every load check included) and
compares its output with the step graph's forward pass on ``rows`` inputs drawn in [0, 1]:

    max|y_model − y_learner| ≤ 1e-4 · max(1, max|y_learner|)

Example:
    >>> learner.save("adapted.onnx")                           # doctest: +SKIP
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from zor.common import format as fmt
from zor.common.errors import ModelFileError

from .model import Model
from .onnxmeta import scan_model
from .onnxwrite import patch_model

__all__ = ["build", "check", "TEMPLATE_KEY", "SAVE_TOLERANCE"]

TEMPLATE_KEY = "zor.inference_template"
SAVE_TOLERANCE = 1e-4


def _json_float(v: float) -> Any:
    return v if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))


def _layers(table: str, thetas: list[np.ndarray]) -> str:
    rows = json.loads(table)
    for row, theta in zip(rows, thetas):
        with np.errstate(invalid="ignore"):
            row["threshold"] = {"min": _json_float(float(theta.min())), "max": _json_float(float(theta.max())),
                                "mean": _json_float(float(theta.mean()))}
    return json.dumps(rows, allow_nan=False, separators=(",", ":"))


def build(learner: Any) -> bytes:
    """The inference file of ``learner``'s current weights (not yet checked)."""
    try:
        template = base64.b64decode(learner.meta[TEMPLATE_KEY], validate=True)
    except (KeyError, binascii.Error, ValueError) as exc:
        raise ModelFileError(f"{learner.path}: no inference template ({TEMPLATE_KEY}) in the learnable file: "
                             "export it again with zor-export --learnable") from exc
    n = len(learner.sizes)
    thetas = [learner.state[f"threshold_{i}"] for i in range(n)]
    weights = [learner.state[f"weight_{i}"] for i in range(n - 1)]
    h = hashlib.sha256()
    for i in range(n):
        h.update(np.ascontiguousarray(thetas[i], "<f4").tobytes())
        if i < n - 1:
            h.update(np.ascontiguousarray(weights[i], "<f4").tobytes())
    tensors = {f"threshold_{i}": thetas[i] for i in range(n)}
    tensors.update({f"weight_{i}": weights[i] for i in range(n - 1)})
    meta = {fmt.KEYS.WEIGHTS_SHA256: h.hexdigest(),
            fmt.KEYS.VERIFICATION: json.dumps({"passed": True, "learner": {"steps": learner.steps_done}})}
    table = _template_layers(template)
    if table is not None:
        meta[fmt.KEYS.LAYERS] = _layers(table, thetas)
    return patch_model(template, tensors, meta)


def _template_layers(template: bytes) -> Any:
    return dict(scan_model(template, digests=False).metadata).get(fmt.KEYS.LAYERS)


def check(learner: Any, path: Path, rows: int) -> float:
    """Load ``path`` as a Model and compare with the learner's forward pass; the max relative difference."""
    x = np.random.default_rng(0).random((rows, learner.sizes[0]), dtype=np.float32)
    want = learner.predict(x)
    got = Model(path, threads=1).run(x)["output"]
    diff = float(np.abs(got - want).max() / max(1.0, float(np.abs(want).max())))
    if not diff <= SAVE_TOLERANCE:
        raise ModelFileError(f"saved model differs from the learner's forward pass: relative difference "
                             f"{diff:.3g} > {SAVE_TOLERANCE:g} on {rows} rows; nothing written")
    return diff
