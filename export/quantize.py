"""Threshold-aware int8: static QDQ quantization with per-layer fallback to float.

The recipe comes from the device profile (:class:`zor.devices.Int8Recipe`: QDQ or
QOperator, u8/s8 activations and weights, per-channel, reduce_range). Only the
MatMul nodes are quantized (weights per output channel, axis 1; the gated, activated
values a_i by calibrated ranges; Conv kernels of conv layers likewise, per output
channel), and in QDQ format their outputs, the next layer's charges, stay float: onnxruntime accumulates in int32 and dequantizes, so the spike
decision c > θ compares a float charge with a float threshold. (QOperator's
QLinearMatMul always quantizes its output; the agreement figures show the cost.)

The spike decision must survive: per layer i ≥ 1 the spike agreement with the float
engine on validation data is measured; while the lowest layer under the budget
(``spike_budget``, default 99 %) has a quantized connection below it, the nearest
such connection j (its nodes ``connection{j}.*``) is excluded, i.e. falls back to
float, and the graph is quantized again. Then the task metric drop (engine − int8, points)
must stay within ``max_drop``, or :class:`~zor.common.errors.QuantizationError` refuses.

Reported per layer: spike agreement, whether its input connection is int8 or fell
back, weight bytes float vs int8, and the task-metric drop with only that connection
in int8.

The gate moves behind the activation quantization (:func:`gate_quantized`) wherever
that gives the same integers: with a zero point of 0,

    q_i = Q(c_i · float(s_i)) = Q(c_i) · int8(s_i)      Q(x) = sat(round(x / s_a)), Q(±0) = 0

(a unit that spiked: c·1 = c; one that did not: both sides are 0). The gate then runs
on 8-bit integers instead of float32 (Cast to u8/s8 and an integer Mul, opset ≥ 14),
which onnxruntime does in a quarter of the bytes (docs/notes/int8-vnni.md). The spike
decision s_i = c_i > θ_i and the charge c_i stay float; a non-zero zero point keeps
the float gate.

Example (needs calibration data; see the tests and benchmarks/export_fidelity.py):
    >>> from zor.devices import get
    >>> get("generic").int8.format
    'QDQ'
"""

from __future__ import annotations

import logging
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import numpy as np
import onnx

from zor.common import format as fmt
from zor.common.errors import QuantizationError

from .calibration import CalibrationSet
from .jsonsafe import jsonable
from .quality import measure
from .registry import connection_prefix
from .session import Stepper

__all__ = ["quantize_int8", "calibration_feeds", "quantize_graph", "gate_quantized", "weight_bytes", "connection_nodes",
           "OP_TYPES"]

OP_TYPES = ("MatMul", "Conv")   # the connections; spike, gate and state nodes stay float


def connection_nodes(proto: onnx.ModelProto, connections) -> list[str]:
    """Names of the nodes of the given connections (what falls back to float)."""
    prefixes = tuple(connection_prefix(j) for j in connections)
    return [n.name for n in proto.graph.node if prefixes and n.name.startswith(prefixes)]


@contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime.quantization logs warnings on the root logger (pre-processing hints)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def calibration_feeds(model, float_proto: onnx.ModelProto, calib: CalibrationSet, steps: int,
                      batch: int = 64) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
    """Feeds for the calibration reader (stateful: the float graph's states over ``steps`` steps),
    and calibration figures per layer (spike rate, charge range) measured on the way."""
    stepper = Stepper(float_proto)
    n = len(model.layers)
    names = [fmt.spikes(i) for i in range(n)] + [fmt.charge(i) for i in range(n)]
    spikes = np.zeros(n)
    count = np.zeros(n)
    lo, hi = np.full(n, np.inf), np.full(n, -np.inf)
    feeds = []
    for start in range(0, len(calib.calibrate), batch):
        x = calib.calibrate[start:start + batch]
        stepper.reset(len(x), sizes={i: l.size for i, l in enumerate(model.layers)})
        for _ in range(steps):
            feeds.append({k: v.copy() for k, v in stepper.feeds(x).items()})
            out = stepper.step(x, names)
            for i in range(n):
                spikes[i] += out[fmt.spikes(i)].sum()
                count[i] += out[fmt.spikes(i)].size
                lo[i] = min(lo[i], float(out[fmt.charge(i)].min()))
                hi[i] = max(hi[i], float(out[fmt.charge(i)].max()))
    figures = {**calib.describe(), "steps": steps,
               "layers": [{"layer": i, "spike_rate": spikes[i] / count[i], "charge_min": lo[i], "charge_max": hi[i]}
                          for i in range(n)]}
    return feeds, jsonable(figures)


def _reader(feeds: list[dict[str, np.ndarray]]):
    from onnxruntime.quantization import CalibrationDataReader

    class _Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = iter(feeds)

    return _Feeds()


def quantize_graph(float_proto: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], recipe,
                   exclude: Optional[list[str]] = None) -> onnx.ModelProto:
    """quantize_static on the MatMul nodes of ``float_proto`` with ``recipe``, minus ``exclude``."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    qtype = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
    qformat = {"QDQ": QuantFormat.QDQ, "QOperator": QuantFormat.QOperator}
    with tempfile.TemporaryDirectory(prefix="zor-int8-") as tmp, _quiet():
        src, dst = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "int8.onnx")
        onnx.save(float_proto, src)
        quantize_static(
            src, dst, _reader(feeds),
            quant_format=qformat[recipe.format],
            op_types_to_quantize=list(OP_TYPES),
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            activation_type=qtype[recipe.activation_type],
            weight_type=qtype[recipe.weight_type],
            nodes_to_exclude=list(exclude or []),
            extra_options={
                "OpTypesToExcludeOutputQuantization": list(OP_TYPES),  # charges stay float (QDQ)
                "MatMulConstBOnly": True,
                "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},  # one scale per output unit
            },
        )
        return onnx.load(dst)


_INT_TYPES = {onnx.TensorProto.UINT8: "u8", onnx.TensorProto.INT8: "s8"}   # what Q may output, for the integer gate
_BOOL_OPS = frozenset({"Greater", "Less", "And"})   # producers of a spike flag (bool: Cast gives exactly 0 or 1)


def _single_use(proto: onnx.ModelProto) -> set[str]:
    """Tensors read by exactly one node and not graph outputs (safe to rename or drop)."""
    uses: dict[str, int] = {}
    for n in proto.graph.node:
        for name in n.input:
            uses[name] = uses.get(name, 0) + 1
    outputs = {o.name for o in proto.graph.output}
    return {k for k, v in uses.items() if v == 1 and k not in outputs}


def _gate_pattern(q: onnx.NodeProto, producer: dict, inits: dict, once: set) -> Optional[tuple]:
    """(Mul, Cast, integer type) when ``q`` quantizes a float gate c·Cast(s) with zero point 0, else None."""
    mul = producer.get(q.input[0])
    if mul is None or mul.op_type != "Mul" or q.input[0] not in once:
        return None
    cast = producer.get(mul.input[1])
    if cast is None or cast.op_type != "Cast" or mul.input[1] not in once \
            or next((a.i for a in cast.attribute if a.name == "to"), None) != onnx.TensorProto.FLOAT \
            or getattr(producer.get(cast.input[0]), "op_type", None) not in _BOOL_OPS:
        return None
    zp = inits.get(q.input[2]) if len(q.input) > 2 and q.input[2] else None
    if len(q.input) > 2 and q.input[2] and zp is None:
        return None                                         # a zero point computed in the graph: leave it
    if zp is None and any(a.name == "output_dtype" for a in q.attribute):
        return None                                         # opset 21's type attribute: not ours, leave it
    dtype = onnx.TensorProto.UINT8 if zp is None else zp.data_type
    if dtype not in _INT_TYPES or (zp is not None and np.any(onnx.numpy_helper.to_array(zp) != 0)):
        return None
    return mul, cast, dtype


def gate_quantized(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """The gates moved behind their activation quantization where exact (see the module docstring);
    (the new graph, the names of the gate nodes moved). The graph is copied; it is returned as it
    was when no gate qualifies (a non-zero zero point, another activation between gate and Q, opset < 14)."""
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 14:                                          # Mul on 8-bit integers needs opset 14
        return proto, []
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    nodes = list(out.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    inits = {i.name: i for i in out.graph.initializer}
    once = _single_use(out)
    moved, drop, after = [], set(), {}
    for q in (n for n in nodes if n.op_type == "QuantizeLinear"):
        found = _gate_pattern(q, producer, inits, once)
        if found is None:
            continue
        mul, cast, dtype = found
        gated = q.output[0]                                 # the DequantizeLinear downstream keeps reading it
        spikes, charge = cast.input[0], mul.input[0]
        q.input[0], q.output[0] = charge, f"{gated}_ungated"
        flag = f"{spikes}_{_INT_TYPES[dtype]}"
        name = (cast.name[:-len("_float")] if cast.name.endswith("_float") else cast.name) + f"_{_INT_TYPES[dtype]}"
        after[id(q)] = [onnx.helper.make_node("Cast", [spikes], [flag], name=name, to=dtype),
                        onnx.helper.make_node("Mul", [q.output[0], flag], [gated], name=mul.name)]
        drop |= {id(mul), id(cast)}
        moved.append(mul.name)
    if not moved:
        return proto, []
    ordered = []
    for n in nodes:
        if id(n) not in drop:
            ordered += [n] + after.get(id(n), [])
    del out.graph.node[:]
    out.graph.node.extend(ordered)
    return out, moved


def _dense_bytes(model, j: int) -> int:
    """Bytes of W_j as float32."""
    return int(model.layers[j].size) * int(model.layers[j + 1].size) * 4


def weight_bytes(proto: onnx.ModelProto, j: int) -> int:
    """Bytes of the initializers that hold connection j's weights (quantized or not)."""
    prefix = fmt.weight(j)
    total = 0
    for init in proto.graph.initializer:
        if init.name == prefix or init.name.startswith(prefix + "_"):
            total += len(init.raw_data) if init.raw_data else onnx.numpy_helper.to_array(init).nbytes
    return total


@dataclass
class _Int8Run:
    """What every int8 pass over one graph shares: the graph, its calibration feeds and validation data."""

    model: Any
    float_proto: onnx.ModelProto
    feeds: list
    recipe: Any
    calib: CalibrationSet
    steps: int
    sparse: dict          # {connection j: rows precision} of the sparse connections (never quantized here)
    max_batch: Optional[int]
    gates: tuple = ()     # the gate nodes the last quantize moved behind their QuantizeLinear

    def quantize(self, excluded: list[int]) -> onnx.ModelProto:
        """The graph with every connection int8 but ``excluded`` and the sparse ones, gates in integers where exact."""
        nodes = connection_nodes(self.float_proto, list(excluded) + list(self.sparse))
        q, moved = gate_quantized(quantize_graph(self.float_proto, self.feeds, self.recipe, nodes))
        self.gates = tuple(moved)
        return q

    def measure(self, candidate: onnx.ModelProto) -> dict[str, Any]:
        return measure(self.model, candidate, self.calib, self.steps, max_batch=self.max_batch)


def quantize_int8(
    model,
    float_proto: onnx.ModelProto,
    calib: CalibrationSet,
    recipe,
    profile: str = "generic",
    spike_budget: float = 0.99,
    max_drop: float = 0.5,
    steps: Optional[int] = None,
    per_layer_drop: bool = True,
    sparse: Optional[dict[int, str]] = None,
    max_batch: Optional[int] = None,
) -> tuple[onnx.ModelProto, dict[str, Any], dict[str, Any]]:
    """(int8 proto, quantization report, calibration figures); raises QuantizationError past ``max_drop``.

    ``sparse`` {connection j: "int8" | "float32"}: connections already in sparse form
    (:mod:`zor.export.sparse`; their rows carry their own precision, and quantize_static
    excludes their nodes: QDQ would otherwise quantize the gathered values and rows, with
    calibration ranges that are empty when no unit spiked); they are reported, never
    part of the fallback here. ``max_batch``: the graph's row limit per call.
    """
    if recipe.format not in ("QDQ", "QOperator") or recipe.activation_type not in ("u8", "s8") \
            or recipe.weight_type not in ("u8", "s8"):
        raise QuantizationError(f"profile {profile!r}: unusable int8 recipe {recipe}: expected format QDQ/QOperator "
                                "and u8/s8 types")
    steps = steps if steps is not None else (10 if model.stateful else 1)
    feeds, figures = calibration_feeds(model, float_proto, calib, steps, batch=max_batch or 64)
    run = _Int8Run(model, float_proto, feeds, recipe, calib, steps, dict(sparse or {}), max_batch)
    q, quality, excluded, history = _fall_back(run, spike_budget)
    gates = list(run.gates)
    layers = [_layer_row(run, q, i, row, excluded, spike_budget, per_layer_drop)
              for i, row in enumerate(quality["layers"])]
    float_size, int8_size = len(float_proto.SerializeToString()), len(q.SerializeToString())
    report = jsonable({
        "mode": "int8",
        "profile": profile,
        "recipe": recipe.to_dict(),
        "op_types": list(OP_TYPES),
        "charges": "float" if recipe.format == "QDQ" else "quantized (QLinearMatMul output)",
        "thresholds": "float32",
        "integer_gates": gates,            # gates computed as Q(c)·int8(s) (zero point 0): the same integers
        "spike_budget": spike_budget,
        "max_drop": max_drop,
        "fallback": sorted(excluded),
        "passes": history,
        "layers": layers,
        "output": quality["output"],
        "metric": quality["metric"],
        "validation": {"rows": quality["rows"], "steps": quality["steps"], "source": calib.source},
        "size": {"float32_graph_bytes": float_size, "int8_graph_bytes": int8_size,
                 "ratio": int8_size / float_size},
    })
    _refuse_past_max_drop(report, max_drop, excluded)
    return q, report, figures


def _fall_back(run: _Int8Run, spike_budget: float) -> tuple[onnx.ModelProto, dict, list[int], list[dict]]:
    """Quantize, measure, and exclude the nearest quantized connection below the lowest layer under the
    spike budget, until none can help; (graph, its measurement, excluded connections, every pass)."""
    excluded: list[int] = []
    history = []
    while True:
        q = run.quantize(excluded)
        quality = run.measure(q)
        agree = {row["layer"]: row["spike_agreement"] for row in quality["layers"]}
        history.append({"fallback": sorted(excluded), "spike_agreement": [agree[i] for i in sorted(agree)]})
        failing = [i for i in sorted(agree) if i >= 1 and agree[i] < spike_budget]
        fixable = [(i, [j for j in range(i) if j not in excluded and j not in run.sparse]) for i in failing]
        fixable = [(i, js) for i, js in fixable if js]
        if not fixable:
            return q, quality, excluded, history
        excluded.append(max(fixable[0][1]))                 # the nearest quantized connection upstream


def _layer_row(run: _Int8Run, q: onnx.ModelProto, i: int, row: dict, excluded: list[int], spike_budget: float,
               per_layer_drop: bool) -> dict[str, Any]:
    """The report row of layer i: its spike agreement, and how its input connection j = i − 1 is stored."""
    entry = {"layer": i, "spike_agreement": row["spike_agreement"], "mismatches": row["mismatches"],
             "charge_max_err": row["charge_max_err"], "meets_budget": i == 0 or row["spike_agreement"] >= spike_budget}
    j = i - 1
    if i >= 1 and j in run.sparse:
        entry.update(connection=j, path="sparse",
                     precision="int8 rows" if run.sparse[j] == "int8" else "float rows", fallback=False,
                     weight_bytes_float=_dense_bytes(run.model, j), weight_bytes=weight_bytes(q, j))
    elif i >= 1:
        entry.update(connection=j, precision="float" if j in excluded else "int8", fallback=j in excluded,
                     weight_bytes_float=weight_bytes(run.float_proto, j), weight_bytes=weight_bytes(q, j))
        if per_layer_drop and j not in excluded:
            others = [k for k in range(len(run.model.weights)) if k != j and k not in run.sparse]
            entry["metric_drop_alone"] = run.measure(run.quantize(others))["metric"]["drop"]
    return entry


def _refuse_past_max_drop(report: dict[str, Any], max_drop: float, excluded: list[int]) -> None:
    """QuantizationError (with the report) when the task metric drops by more than ``max_drop`` points."""
    drop = report["metric"]["drop"]
    if drop > max_drop:
        raise QuantizationError(
            f"int8 export refused: the task metric ({report['metric']['metric']} vs {report['metric']['reference']}) "
            f"drops by {drop:.3f} points, more than --max-drop {max_drop:g} "
            f"(float {report['metric']['float']:.3f}, int8 {report['metric']['candidate']:.3f}; "
            f"fallback connections {sorted(excluded) or 'none'}); nothing was written",
            report=report)
