"""int8 for NIR imports: the connections of the verified float step graph quantized, spikes kept.

The connections are the MatMul (Affine, Linear) and Conv (Conv1d/2d, SumPool2d, AvgPool2d) nodes of the
float step graph (:mod:`.onnxgraph` names every ONNX node of NIR node k ``node{k}.…``). They are quantized
as our own exports are (:func:`zor.export.quantize.quantize_graph`: static QDQ with the device profile's
recipe, weights per output channel, MatMul/Conv outputs, the membrane's input currents, left float), so
the neurons' arithmetic and every threshold stay float32:

    y_k = Σ_j q(x_j)·q(W_jk)·s_x·s_k (int32 accumulate) + b_k    instead of    y_k = Σ_j x_j·W_jk + b_k

with q(x) = round(x/s_x) on the calibrated range (spikes 0/1 are exact) and q(W) = round(W/s_k) per output
unit k. Calibration: the float graph runs over the calibration events (T, B, *input_shape) from the fresh
state, and every step's inputs (events and state) are the calibration feeds.

The spike decision must survive: the float and the int8 graph each run free (carrying their own state)
over the validation events; per spiking node the spike agreement is measured. While the first spiking
node (in step order) under ``spike_budget`` (default 99 %) has a quantized connection before it, the
nearest such connection falls back to float and the graph is quantized again (as
:func:`zor.export.quantize.quantize_int8` does for layers). Then the task metric, the agreement (%) of the
predicted class (argmax of the output summed over the T steps) with the float graph's, may drop by at
most ``max_drop`` points, or :class:`~zor.common.errors.QuantizationError` refuses and nothing is written.
Sparse (event-driven) nodes keep float rows and are reported as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import onnx

from zor.common import format as fmt
from zor.common.errors import QuantizationError

from ..jsonsafe import jsonable
from ..quantize import OP_TYPES, quantize_graph
from .graph import NirGraph
from .kinds import converter_for
from .reference import initial_state, state_layout
from .verify import _session

__all__ = ["quantize_nir", "connection_nodes", "run_free", "step_feeds", "split_events"]


def connection_nodes(proto: onnx.ModelProto) -> dict[int, list[str]]:
    """{NIR node position k: names of its MatMul/Conv nodes} in ``proto`` (a float step graph)."""
    out: dict[int, list[str]] = {}
    for n in proto.graph.node:
        if n.op_type in OP_TYPES and n.name.startswith("node"):
            out.setdefault(int(n.name[4:n.name.index(".")]), []).append(n.name)
    return out


def split_events(xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(calibration, validation) events from (T, B, ...): even rows calibrate, odd rows validate (B ≥ 2)."""
    return (xs[:, 0::2], xs[:, 1::2]) if xs.shape[1] >= 2 else (xs, xs)


def _rows(xs: np.ndarray, max_batch: Optional[int]) -> list[np.ndarray]:
    """The (T, b, n) sequences a graph taking at most ``max_batch`` rows per call runs, flattened per step."""
    flat = np.ascontiguousarray(xs.reshape(xs.shape[0], xs.shape[1], -1), dtype=np.float32)
    step = max_batch or flat.shape[1]
    return [flat[:, i:i + step] for i in range(0, flat.shape[1], step)]


def step_feeds(graph: NirGraph, proto: onnx.ModelProto, xs: np.ndarray,
               max_batch: Optional[int] = None) -> list[dict[str, np.ndarray]]:
    """Every step's feeds (input and state) of the float graph run over ``xs`` (T, B, *input_shape) from rest."""
    sess = _session(proto)
    outs = [e.output for e in state_layout(graph)]
    feeds = []
    for seq in _rows(xs, max_batch):
        state = initial_state(graph, seq.shape[1])
        for x in seq:
            feed = {fmt.INPUT: x, **state}
            feeds.append(feed)
            values = sess.run(outs, feed) if outs else []
            state = {e.input: v for e, v in zip(state_layout(graph), values)}
    return feeds


def run_free(graph: NirGraph, proto: onnx.ModelProto, xs: np.ndarray, names: list[str],
             max_batch: Optional[int] = None) -> dict[str, np.ndarray]:
    """``names`` over ``xs`` (T, B, *input_shape), the graph carrying its own state from rest: name → (T, B, n)."""
    sess = _session(proto)
    layout = state_layout(graph)
    fetch = list(names) + [e.output for e in layout]
    parts: dict[str, list] = {n: [] for n in names}
    for seq in _rows(xs, max_batch):
        state = initial_state(graph, seq.shape[1])
        got: dict[str, list] = {n: [] for n in names}
        for x in seq:
            values = sess.run(fetch, {fmt.INPUT: x, **state})
            for n, v in zip(names, values):
                got[n].append(v)
            state = {e.input: v for e, v in zip(layout, values[len(names):])}
        for n in names:
            parts[n].append(np.stack(got[n]))
    return {n: np.concatenate(v, axis=1) for n, v in parts.items()}


@dataclass
class _Pass:
    """What every quantization pass over one graph shares."""

    graph: NirGraph
    proto: onnx.ModelProto
    feeds: list
    recipe: Any
    valid: np.ndarray
    conns: dict                    # {k: ONNX node names}
    sparse: tuple                  # positions k kept float (event-driven rows)
    max_batch: Optional[int]
    names: list                    # output, then spikes_{k} of every spiking node
    reference: dict                # the float graph's run over ``valid``

    def quantize(self, excluded: list[int]) -> onnx.ModelProto:
        skip = [n for k in list(excluded) + list(self.sparse) for n in self.conns.get(k, [])]
        return quantize_graph(self.proto, self.feeds, self.recipe, skip)

    def measure(self, q: onnx.ModelProto) -> dict[str, Any]:
        got = run_free(self.graph, q, self.valid, self.names, self.max_batch)
        ref = self.reference
        agree = {int(n.split("_")[1]): float((got[n] == ref[n]).mean()) for n in self.names[1:]}
        pred_f, pred_q = ref[fmt.OUTPUT].sum(0).argmax(-1), got[fmt.OUTPUT].sum(0).argmax(-1)
        same = 100.0 * float((pred_f == pred_q).mean())
        return {"spike_agreement": agree, "output_max_abs_diff": float(np.abs(got[fmt.OUTPUT] - ref[fmt.OUTPUT]).max()),
                "metric": {"metric": "class_agreement", "reference": "float_predictions", "float": 100.0,
                           "candidate": same, "drop": 100.0 - same}}


def _weight_bytes(float_proto: onnx.ModelProto, proto: onnx.ModelProto, names: list[str]) -> int:
    """Bytes in ``proto`` of the weights of the given nodes of ``float_proto``: W itself, or what quantization
    made of it (W_quantized, W_scale, W_zero_point)."""
    by_name = {n.name: n for n in float_proto.graph.node}
    weights = {by_name[n].input[1] for n in names if n in by_name and len(by_name[n].input) > 1}
    total = 0
    for init in proto.graph.initializer:
        if any(init.name == w or init.name.startswith(w + "_") for w in weights):
            total += len(init.raw_data) if init.raw_data else onnx.numpy_helper.to_array(init).nbytes
    return total


def _fall_back(run: _Pass, budget: float) -> tuple[onnx.ModelProto, dict, list[int], list[dict]]:
    """Quantize, measure; while the first spiking node under the budget has quantized connections before it,
    fall back the one whose fallback alone lifts that node's agreement most (one pass each; ties: the
    nearest), and quantize again; (graph, its measurement, excluded positions, every pass)."""
    excluded: list[int] = []
    history: list[dict] = []
    q = run.quantize(excluded)
    quality = run.measure(q)
    while True:
        agree = quality["spike_agreement"]
        history.append({"fallback": sorted(excluded), "spike_agreement": {str(k): v for k, v in agree.items()}})
        failing = [k for k in sorted(agree) if agree[k] < budget]
        js = next(([j for j in run.conns if j < k and j not in excluded and j not in run.sparse] for k in failing
                   if any(j < k and j not in excluded and j not in run.sparse for j in run.conns)), [])
        if not js:
            return q, quality, excluded, history
        k = next(k for k in failing if any(j < k for j in js))
        tries = []
        for j in sorted(js, reverse=True):                  # nearest first: it wins ties
            cand = run.quantize(excluded + [j])
            tries.append((run.measure(cand), j, cand))
        best = max(range(len(tries)), key=lambda i: (tries[i][0]["spike_agreement"][k], -i))
        history[-1]["tried"] = {str(t[1]): t[0]["spike_agreement"][k] for t in tries}   # fallback j → node k's agreement
        quality, j, q = tries[best]
        excluded.append(j)


def quantize_nir(graph: NirGraph, proto: onnx.ModelProto, calibrate: np.ndarray, validate: np.ndarray, recipe: Any,
                 profile: str, spike_budget: float = 0.99, max_drop: float = 0.5, sparse: tuple = (),
                 max_batch: Optional[int] = None, source: str = "") -> tuple[onnx.ModelProto, dict, dict]:
    """(int8 proto, the ``zor.quantization`` report, the ``zor.calibration`` figures); QuantizationError past
    ``max_drop``. ``calibrate``/``validate``: events (T, B, *input_shape); ``sparse``: NIR node names kept float."""
    order = {n: k for k, n in enumerate(graph.order)}
    spiking = [k for k, n in enumerate(graph.order) if converter_for(graph.nodes[n].kind).spiking]
    names = [fmt.OUTPUT] + [fmt.spikes(k) for k in spiking]
    conns = connection_nodes(proto)
    feeds = step_feeds(graph, proto, calibrate, max_batch)
    ref = run_free(graph, proto, validate, names, max_batch)
    run = _Pass(graph, proto, feeds, recipe, validate, conns, tuple(order[n] for n in sparse), max_batch, names, ref)
    q, quality, excluded, history = _fall_back(run, spike_budget)
    rows = []
    for k, nodes in sorted(conns.items()):
        node = graph.nodes[graph.order[k]]
        precision = "float rows (sparse)" if k in run.sparse else ("float" if k in excluded else "int8")
        rows.append({"node": graph.order[k], "index": k, "kind": node.kind, "precision": precision,
                     "fallback": k in excluded, "weight_bytes_float": _weight_bytes(proto, proto, nodes),
                     "weight_bytes": _weight_bytes(proto, q, nodes)})
    spikes = [{"node": graph.order[k], "index": k, "spike_agreement": quality["spike_agreement"][k],
               "meets_budget": quality["spike_agreement"][k] >= spike_budget} for k in spiking]
    float_size, int8_size = len(proto.SerializeToString()), len(q.SerializeToString())
    report = jsonable({
        "mode": "int8", "profile": profile, "recipe": recipe.to_dict(), "op_types": list(OP_TYPES),
        "charges": "float" if recipe.format == "QDQ" else "quantized (QLinearMatMul output)",
        "thresholds": "float32", "spike_budget": spike_budget, "max_drop": max_drop,
        "fallback": [graph.order[k] for k in sorted(excluded)], "passes": history, "connections": rows,
        "spikes": spikes, "layers": _layers(graph, rows, spikes), "output_max_abs_diff": quality["output_max_abs_diff"], "metric": quality["metric"],
        "validation": {"rows": int(validate.shape[1]), "steps": int(validate.shape[0]), "source": source,
                       "run": "free-running from rest, each graph carrying its own state"},
        "size": {"float32_graph_bytes": float_size, "int8_graph_bytes": int8_size, "ratio": int8_size / float_size},
    })
    figures = _figures(graph, ref, calibrate, spiking, source)
    drop = report["metric"]["drop"]
    if drop > max_drop:
        raise QuantizationError(
            f"int8 export refused: the predicted class agrees with the float graph's on {100 - drop:.2f} % of the "
            f"validation sequences, a drop of {drop:.3f} points, more than --max-drop {max_drop:g} (fallback nodes "
            f"{report['fallback'] or 'none'}); nothing was written", report=report)
    return q, report, figures


def _layers(graph: NirGraph, conns: list[dict], spikes: list[dict]) -> list[dict]:
    """One row per node k in step order, as our own exports' ``layers`` (what ``zor-export inspect`` shows):
    its connection's precision and weight bytes, its spike agreement."""
    by_k = {r["index"]: r for r in conns}
    agree = {r["index"]: r["spike_agreement"] for r in spikes}
    out = []
    for k, name in enumerate(graph.order):
        c = by_k.get(k, {})
        out.append({"layer": k, "node": name, "precision": {"float rows (sparse)": "sparse"}.get(c.get("precision"),
                                                                                           c.get("precision", "-")),
                    "spike_agreement": agree.get(k), "weight_bytes": c.get("weight_bytes"),
                    "weight_bytes_float": c.get("weight_bytes_float")})
    return out


def _figures(graph: NirGraph, ref: dict, calibrate: np.ndarray, spiking: list[int], source: str) -> dict:
    """``zor.calibration``: where the events came from, and each spiking node's rate on the float graph."""
    nodes = [{"node": graph.order[k], "index": k, "spike_rate": float(ref[fmt.spikes(k)].mean())} for k in spiking]
    return jsonable({"source": source, "calibration_rows": int(calibrate.shape[1]), "steps": int(calibrate.shape[0]),
                     "rates_on": "the validation events, float graph", "nodes": nodes,
                     "layers": [{"layer": r["index"], "spike_rate": r["spike_rate"]} for r in nodes]})
