"""Test support (no tests here): hand-built Zor ONNX files following zor.common.format exactly.

Until a file from ``zor.export`` is needed, the runtime's tests build their models
here with ``onnx.helper``. Per layer i (h_0 = input):

    c_i = h_i                       (stateless)   or  decay·state_in_i + h_i  (stateful)
    s_i = Greater(c_i, θ_i)                       → spikes_i (bool)
    hidden: h_{i+1} = MatMul(f_i(Where(s_i, c_i, 0)), W_i)
    output: f_L(c_L)                              → output
    state_out_i = Where(s_i, spiked, Where(c_i < m, 0, c_i))   spiked = −p (reset) or c_i − p

Also ``charge_i``. Imported by the runtime tests and benchmarks/runtime_bench.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from zor.common import format as fmt

__all__ = ["build_model", "from_zor", "quantize_int8", "set_metadata", "LAYER_DEFAULTS"]

LAYER_DEFAULTS = {"activation": "identity", "decay": 0.0, "refractory": 0.0, "min_charge": None, "reset_on_spike": True}
_ACT = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}


def _const(name: str, value, nodes_init: list) -> str:
    nodes_init.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
    return name


def _act(kind: str, x: str, out: str, nodes: list) -> None:
    if kind == "identity":
        nodes.append(helper.make_node("Identity", [x], [out]))
    else:
        nodes.append(helper.make_node(_ACT[kind], [x], [out]))


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
    return v


def build_model(
    path: Path,
    layers: Sequence[dict],
    weights: Sequence[np.ndarray],
    thresholds: Sequence[np.ndarray],
    task: Optional[dict] = None,
    metadata: Optional[dict] = None,
    opset: int = 17,
) -> Path:
    """Write a Zor-format ONNX file; ``layers`` are dicts with ``size`` and LAYER_DEFAULTS keys."""
    layers = [{**LAYER_DEFAULTS, **d} for d in layers]
    L = len(layers) - 1
    nodes: list = []
    inits: list = []
    zero = _const("zero", 0.0, inits)
    inputs = [helper.make_tensor_value_info(fmt.INPUT, TensorProto.FLOAT, ["batch", layers[0]["size"]])]
    outputs = [helper.make_tensor_value_info(fmt.OUTPUT, TensorProto.FLOAT, ["batch", layers[-1]["size"]])]
    extra_out = []
    state = []
    h = fmt.INPUT
    for i, d in enumerate(layers):
        n = d["size"]
        theta = _const(fmt.threshold(i), np.asarray(thresholds[i], np.float32).reshape(n), inits)
        c = fmt.charge(i)
        if d["decay"] > 0:
            inputs.append(helper.make_tensor_value_info(fmt.state_in(i), TensorProto.FLOAT, ["batch", n]))
            dec = _const(f"decay_{i}", d["decay"], inits)
            nodes.append(helper.make_node("Mul", [dec, fmt.state_in(i)], [f"decayed_{i}"]))
            nodes.append(helper.make_node("Add", [f"decayed_{i}", h], [c]))
        else:
            nodes.append(helper.make_node("Identity", [h], [c]))
        s = fmt.spikes(i)
        nodes.append(helper.make_node("Greater", [c, theta], [s]))
        if i < L:
            nodes.append(helper.make_node("Where", [s, c, zero], [f"gated_{i}"]))
            _act(d["activation"], f"gated_{i}", f"act_{i}", nodes)
            w = _const(fmt.weight(i), np.asarray(weights[i], np.float32), inits)
            nodes.append(helper.make_node("MatMul", [f"act_{i}", w], [f"h_{i + 1}"]))
            h = f"h_{i + 1}"
        else:
            _act(d["activation"], c, fmt.OUTPUT, nodes)
        if d["decay"] > 0:
            kept = c
            if d["min_charge"] is not None:
                m = _const(f"min_charge_{i}", d["min_charge"], inits)
                nodes.append(helper.make_node("Less", [c, m], [f"below_{i}"]))
                nodes.append(helper.make_node("Where", [f"below_{i}", zero, c], [f"kept_{i}"]))
                kept = f"kept_{i}"
            if d["reset_on_spike"]:
                spiked = _const(f"reset_to_{i}", -float(d["refractory"]), inits)
            else:
                p = _const(f"refractory_{i}", float(d["refractory"]), inits)
                nodes.append(helper.make_node("Sub", [c, p], [f"spiked_{i}"]))
                spiked = f"spiked_{i}"
            nodes.append(helper.make_node("Where", [s, spiked, kept], [fmt.state_out(i)]))
            outputs.append(helper.make_tensor_value_info(fmt.state_out(i), TensorProto.FLOAT, ["batch", n]))
            state.append({"layer": i, "size": n, "input": fmt.state_in(i), "output": fmt.state_out(i), "initial": 0.0})
        extra_out.append(helper.make_tensor_value_info(s, TensorProto.BOOL, ["batch", n]))
        extra_out.append(helper.make_tensor_value_info(c, TensorProto.FLOAT, ["batch", n]))
    graph = helper.make_graph(nodes, "zor", inputs, outputs + extra_out, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="zor-tests")
    model.ir_version = 8
    table = []
    for i, d in enumerate(layers):
        t = np.asarray(thresholds[i], np.float64)
        table.append({"size": d["size"], "activation": d["activation"], "stateful": d["decay"] > 0,
                      "decay": d["decay"], "refractory": d["refractory"], "min_charge": d["min_charge"],
                      "reset_on_spike": d["reset_on_spike"],
                      "threshold": {k: _jsonable(float(f(t))) for k, f in (("min", np.min), ("max", np.max), ("mean", np.mean))}})
    meta = {
        fmt.KEYS.FORMAT: fmt.FORMAT,
        fmt.KEYS.FORMAT_VERSION: str(fmt.FORMAT_VERSION),
        fmt.KEYS.ENGINE_VERSION: "0.1.0",
        fmt.KEYS.LAYERS: json.dumps(table),
        fmt.KEYS.TASK: json.dumps(task or {"name": "generic"}),
        fmt.KEYS.STATEFUL: "true" if state else "false",
        fmt.KEYS.STATE: json.dumps(state),
        fmt.KEYS.QUANTIZATION: json.dumps({"mode": "none"}),
        fmt.KEYS.CALIBRATION: "{}",
        fmt.KEYS.VERIFICATION: "{}",
        fmt.KEYS.WEIGHTS_SHA256: "",
    }
    meta.update(metadata or {})
    set_metadata(model, meta)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def set_metadata(model: onnx.ModelProto, meta: dict) -> None:
    del model.metadata_props[:]
    for k, v in meta.items():
        if v is not None:
            entry = model.metadata_props.add()
            entry.key, entry.value = k, str(v)


def from_zor(net, path: Path, task: Optional[dict] = None) -> Path:
    """A Zor-format file with the weights and thresholds of a torch ``zor.Zor`` network."""
    layers = [{"size": l.size, "activation": l.activation, "decay": l.decay, "refractory": l.refractory,
               "min_charge": l.min_charge, "reset_on_spike": l.reset_on_spike} for l in net.layers]
    weights = [w.detach().cpu().numpy() for w in net.weights]
    thresholds = [net.threshold(i).detach().cpu().numpy() for i in range(len(net.layers))]
    return build_model(path, layers, weights, thresholds, task=task or net.task)


def quantize_int8(src: Path, dst: Path, calibration: np.ndarray, reduce_range: bool = True,
                  activation: str = "u8", weight: str = "s8") -> Path:
    """Static QDQ int8 (MatMuls only, per-channel) of a Zor file, metadata kept and marked int8."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{fmt.INPUT: calibration[i:i + 16].astype(np.float32)}
                               for i in range(0, len(calibration), 16)])

        def get_next(self):
            return next(self.items, None)

    qt = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
    src_model = onnx.load(str(src))
    if any(i.name.startswith("state_in_") for i in src_model.graph.input):
        raise ValueError("quantize_int8 supports stateless test models only")
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"],
                    per_channel=True, reduce_range=reduce_range, activation_type=qt[activation], weight_type=qt[weight])
    q = onnx.load(str(dst))
    meta = {p.key: p.value for p in src_model.metadata_props}
    meta[fmt.KEYS.QUANTIZATION] = json.dumps({"mode": "int8", "recipe": {
        "format": "QDQ", "activation_type": activation, "weight_type": weight, "per_channel": True,
        "reduce_range": reduce_range}})
    set_metadata(q, meta)
    onnx.save(q, str(dst))
    return Path(dst)
