"""The exported file's self-description: ``metadata_props`` under the ``zor.*`` keys.

Every value is a string; structured values are strict JSON (:mod:`zor.export.jsonsafe`:
non-finite numbers as the strings "-inf"/"inf"/"nan"). The keys and their meaning are the contract in
:mod:`zor.common.format`; this module builds them from a model and reads them back.

Weights hash (``zor.weights_sha256``): SHA-256 over θ_0, W_0, θ_1, W_1, ..., θ_L,
each as little-endian float32 bytes in C order. It names the trained model: an int8
or fp16 file carries the hash of the float32 weights it was made from.

Integrity (``zor.integrity``): :func:`set_integrity` is the last thing done to a graph
before it is written: it records the SHA-256 of each initializer's ``TensorProto`` bytes
(for external tensors, their location/offset/length entries), of the graph's other
bytes, and of every other metadata entry (:func:`zor.common.format.metadata_digest`), so
the runtime refuses a file whose tensors, graph or metadata changed after export.

Example:
    >>> from zor import Zor, Layer
    >>> m = Zor([Layer(3), Layer(2, activation_function="sigmoid")], seed=0)
    >>> build_metadata(m)["zor.format"]
    'zor-onnx'
    >>> layer_table(m)[1]["threshold"]["min"]
    '-inf'
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Optional, Union

import numpy as np
import onnx

import zor
from zor.common import format as fmt

from .jsonsafe import dumps, jsonable
from .paths import PathPlan, dense_plan
from .registry import kind_of

__all__ = [
    "jsonable",
    "dumps",
    "layer_table",
    "weights_sha256",
    "task_info",
    "state_info",
    "build_metadata",
    "set_metadata",
    "read_metadata",
    "float_arrays",
    "integrity_record",
    "set_integrity",
]

# the range f_L maps any charge into (None: unbounded / unknown)
_ACTIVATION_RANGE = {"sigmoid": [0.0, 1.0], "tanh": [-1.0, 1.0], "relu": [0.0, "inf"], "identity": None}


def float_arrays(model) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(thresholds θ_i per unit (n_i,), weights W_i) of ``model`` as float32 numpy arrays on the CPU.

    A conv layer's per-channel θ is expanded to one value per unit, as in the file.
    """
    per_unit = getattr(model, "unit_threshold", model.threshold)
    thetas = [per_unit(i).detach().cpu().numpy().astype(np.float32) for i in range(len(model.layers))]
    weights = [w.detach().cpu().numpy().astype(np.float32) for w in model.weights]
    return thetas, weights


def weights_sha256(model) -> str:
    """SHA-256 of θ_0, W_0, ..., θ_L as little-endian float32 (see the module docstring; θ per unit)."""
    thetas, weights = float_arrays(model)
    h = hashlib.sha256()
    for i, theta in enumerate(thetas):
        h.update(np.ascontiguousarray(theta, dtype="<f4").tobytes())
        if i < len(weights):
            h.update(np.ascontiguousarray(weights[i], dtype="<f4").tobytes())
    return h.hexdigest()


def _summary(theta: np.ndarray) -> dict[str, Any]:
    with np.errstate(invalid="ignore"):           # mean of +inf and −inf is nan: reported as "nan"
        return {"min": float(theta.min()), "max": float(theta.max()), "mean": float(theta.mean())}


def layer_table(model) -> list[dict[str, Any]]:
    """Per layer: index, kind, size, activation, state settings and a θ summary."""
    thetas, _ = float_arrays(model)
    rows = []
    for i, layer in enumerate(model.layers):
        row = {
            "index": i,
            "kind": kind_of(layer),
            "size": layer.size,
            "shape": list(getattr(layer, "map_shape", (layer.size,))),
            "activation": layer.activation,
            "stateful": layer.stateful,
            "decay": layer.decay,
            "refractory": layer.refractory,
            "min_charge": layer.min_charge,
            "reset_on_spike": layer.reset_on_spike,
            "threshold": _summary(thetas[i]),
        }
        if row["kind"] == "conv":
            row.update(channels=layer.channels, kernel_size=layer.kernel_size, stride=layer.stride,
                       padding=layer.padding)
        rows.append(row)
    return jsonable(rows)


def task_info(model) -> dict[str, Any]:
    """The model's task dict, completed with what the graph itself says (shapes, ranges)."""
    task = json.loads(json.dumps(jsonable(model.task or {"name": "generic"})))
    task.setdefault("name", "generic")
    n0, nl = model.layers[0].size, model.layers[-1].size
    inp = dict(task.get("input") or {})
    inp.setdefault("shape", ["batch", n0])
    inp.setdefault("dtype", "float32")
    inp.setdefault("range", None)
    inp.setdefault("preprocessing", None)
    out = dict(task.get("output") or {})
    out.setdefault("shape", ["batch", nl])
    out.setdefault("dtype", "float32")
    out.setdefault("range", _ACTIVATION_RANGE.get(model.layers[-1].activation))
    out.setdefault("meaning", None)
    task["input"], task["output"] = inp, out
    return task


def state_info(model) -> list[dict[str, Any]]:
    """The state tensors of a stateful model and the value a fresh stream starts from."""
    return [
        {"layer": i, "size": layer.size, "input": fmt.state_in(i), "output": fmt.state_out(i),
         "initial": 0.0, "meaning": "charge carried to the next step (after reset)"}
        for i, layer in enumerate(model.layers) if layer.stateful
    ]


def build_metadata(
    model,
    engine_version: Optional[str] = None,
    quantization: Optional[dict] = None,
    calibration: Optional[dict] = None,
    verification: Optional[dict] = None,
    paths: Union[PathPlan, dict, None] = None,
    weights: Optional[dict] = None,
) -> dict[str, str]:
    """All ``zor.*`` metadata keys for ``model`` (strings, JSON where structured).

    ``paths`` is the :class:`zor.export.paths.PathPlan` (default: dense everywhere),
    ``weights`` the external weight file's description (default {}: weights inline).
    """
    if paths is None:
        paths = dense_plan(model)
    if engine_version is None:
        engine_version = zor.__version__
    K = fmt.KEYS
    return {
        K.FORMAT: fmt.FORMAT,
        K.FORMAT_VERSION: str(fmt.FORMAT_VERSION),
        K.ENGINE_VERSION: str(engine_version),
        K.LAYERS: dumps(layer_table(model)),
        K.TASK: dumps(task_info(model)),
        K.STATEFUL: "true" if model.stateful else "false",
        K.STATE: dumps(state_info(model)),
        K.QUANTIZATION: dumps(quantization or {"mode": "none"}),
        K.CALIBRATION: dumps(calibration or {}),
        K.VERIFICATION: dumps(verification or {}),
        K.WEIGHTS_SHA256: weights_sha256(model),
        K.PATHS: dumps(paths.to_dict() if hasattr(paths, "to_dict") else paths),
        K.WEIGHTS: dumps(weights or {}),
    }


def set_metadata(proto: onnx.ModelProto, meta: dict[str, str]) -> None:
    """Replace the ``zor.*`` entries of ``proto.metadata_props`` with ``meta`` (others are kept)."""
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key not in meta]
    del proto.metadata_props[:]
    for key, value in keep + sorted(meta.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def _graph_without_initializers(graph: onnx.GraphProto) -> onnx.GraphProto:
    """A graph holding every field of ``graph`` but its initializers (which are not copied)."""
    rest = onnx.GraphProto()
    for desc, value in graph.ListFields():
        if desc.name == "initializer":
            continue
        target = getattr(rest, desc.name)
        if hasattr(target, "extend"):           # a repeated field
            target.extend(value)
        elif hasattr(target, "CopyFrom"):       # a message
            target.CopyFrom(value)
        else:
            setattr(rest, desc.name, value)
    return rest


def integrity_record(proto: onnx.ModelProto) -> dict[str, Any]:
    """The ``zor.integrity`` record of ``proto`` as it stands (see the module docstring): its serialized
    parts are the bytes the file will hold, since protobuf writes a message's fields in number order."""
    graph = proto.graph
    return {
        "version": fmt.INTEGRITY_VERSION,
        "graph": hashlib.sha256(_graph_without_initializers(graph).SerializeToString()).hexdigest(),
        "initializers": {init.name: hashlib.sha256(init.SerializeToString()).hexdigest()
                         for init in graph.initializer},
        "metadata": fmt.metadata_digest([(p.key, p.value) for p in proto.metadata_props]),
    }


def set_integrity(proto: onnx.ModelProto) -> dict[str, Any]:
    """Store :func:`integrity_record` as ``zor.integrity`` (the graph and the other metadata must be final)."""
    record = integrity_record(proto)
    set_metadata(proto, {fmt.KEYS.INTEGRITY: json.dumps(record, sort_keys=True)})
    return record


_JSON_KEYS = {fmt.KEYS.LAYERS, fmt.KEYS.TASK, fmt.KEYS.STATE, fmt.KEYS.QUANTIZATION,
              fmt.KEYS.CALIBRATION, fmt.KEYS.VERIFICATION, fmt.KEYS.PATHS, fmt.KEYS.WEIGHTS, fmt.KEYS.INTEGRITY}


def read_metadata(proto: onnx.ModelProto) -> dict[str, Any]:
    """``metadata_props`` as a dict, JSON values parsed (raw strings where they do not parse)."""
    out: dict[str, Any] = {}
    for p in proto.metadata_props:
        value: Any = p.value
        if p.key in _JSON_KEYS:
            try:
                value = json.loads(p.value)
            except json.JSONDecodeError:
                pass
        out[p.key] = value
    return out
