"""NirGraph → one time step as an ONNX graph (opset 17, dynamic batch B), state explicit.

    inputs   input                 (B, n_in)   float32   the step's input, flat (reshaped inside to the Input's shape)
             state_in_{k}_{var}    (B, n_k)    float32   variable var (v, i) of the stateful node at position k
             state_in_edge_{j}     (B, n)      float32   recurrent edge j: its source's value one step before
    outputs  output                (B, n_out)  float32   the Output node's value, flat
             state_out_...         as the inputs          the state carried to the next step
             spikes_{k}            (B, n_k)    bool      node k's spikes (spiking nodes), else [y_k > 0]

Nodes are emitted in step order by their converters (:mod:`.nodes`); only operators of
:data:`zor.common.format.OPERATORS` are used (Reshape, MatMul, Conv, Add, Sub, Mul, Greater, Where, Cast),
so the runtime's load-time check accepts the file. Every ONNX node of NIR node k is named ``node{k}.…``
(what the int8 fallback excludes, :mod:`.int8`). A Reshape that would not change a tensor's shape (a
1-D node's (B, n) values) is left out: the tensor itself is used, or renamed to the graph output it
stands for, since each node costs onnxruntime about a microsecond per call whatever it computes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from zor.common import format as fmt

from .graph import NirGraph
from .kinds import converter_for
from .layers import affine_sparse
from .reference import StateEntry, state_layout

__all__ = ["Builder", "build_onnx", "probe_name", "sparse_nodes", "OPSET"]

OPSET = 17


class Builder:
    """Collects ONNX nodes and initializers; names every intermediate uniquely; knows the per-row shape of the
    tensors it was told about (:attr:`shapes`), so a Reshape to the shape a tensor already has is skipped."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}     # tensor → its shape without the batch axis
        self.prefix = ""                                  # "node{k}." while NIR node k is emitted
        self.bias_sub = False                             # biases as y − (−b) (a graph to quantize: layers._add_bias)
        self._alias: dict[str, str] = {}                  # a node output renamed to the graph output it became
        self._graph_inputs: set[str] = set()
        self._n = 0

    def const(self, value: np.ndarray, name: str) -> str:
        arr = np.ascontiguousarray(value)
        name = name if name not in self.inits else f"{name}_{len(self.inits)}"
        self.inits[name] = numpy_helper.from_array(arr, name)
        return name

    def op(self, op_type: str, inputs: list[str], out: str = "", **attrs: Any) -> str:
        self._n += 1
        out = out or f"t{self._n}_{op_type.lower()}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{self.prefix}n{self._n}_{op_type}", **attrs))
        return out

    def graph_input(self, name: str, shape: tuple[int, ...]) -> str:
        self._graph_inputs.add(name)
        self.shapes[name] = tuple(shape)
        return name

    def reshape(self, x: str, shape: tuple[int, ...], out: str = "") -> str:
        """x as (B, *shape): x itself when it has that shape already (renamed to ``out`` when asked, if x is
        an intermediate not renamed before), else a Reshape."""
        shape = tuple(shape)
        if self.shapes.get(x) == shape:
            if not out:
                return x
            producer = next((n for n in self.nodes if x in n.output), None)
            if producer is not None and x not in self._alias and x not in self._graph_inputs:
                producer.output[list(producer.output).index(x)] = out
                self._alias[x] = out
                self.shapes[out] = shape
                return out
        target = self.const(np.asarray((-1, *shape), np.int64), f"shape_{'x'.join(map(str, shape))}")
        y = self.op("Reshape", [self._alias.get(x, x), target], out)
        self.shapes[y] = shape
        return y

    def finish(self) -> list[onnx.NodeProto]:
        """The nodes, with every use of a renamed tensor pointing at its new name."""
        for n in self.nodes:
            for i, name in enumerate(n.input):
                if name in self._alias:
                    n.input[i] = self._alias[name]
        return self.nodes


def _vi(name: str, elem: int, n: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, ["B", n])


def _sum_inputs(b: Builder, graph: NirGraph, name: str, values: dict, edges: dict) -> str:
    node = graph.nodes[name]
    parts = []
    for s in graph.sources(name):
        e = edges.get((s, name))
        parts.append(b.reshape(e.input, node.in_shape) if e is not None else values[s])
    total = parts[0]
    for p in parts[1:]:
        total = b.op("Add", [total, p])
    return total


def _flat_step(b: Builder, node: Any, conv: Any, x: str, inputs: list[str], names: list[str], dt: float) -> tuple:
    """An elementwise node of shape (C, H, W) run on (B, n) with its parameters flattened to (n,): the runtime
    accepts only scalar or per-unit constants in a broadcast, and the values are the same."""
    n = math.prod(node.in_shape)
    params = {k: (v if v.ndim == 0 else np.ascontiguousarray(np.broadcast_to(v, node.in_shape).reshape(-1)))
              for k, v in node.params.items()}
    flat = dataclasses.replace(node, params=params, in_shape=(n,), out_shape=(n,))
    y, st_new, s = conv.onnx_step(flat, b, b.reshape(x, (n,)), dict(zip(names, inputs)), dt)
    _known(b, (n,), y, s, *st_new.values())
    return b.reshape(y, node.out_shape), st_new, s


def _known(b: Builder, shape: tuple[int, ...], *names: Any) -> None:
    """Record that the tensors ``names`` (None skipped) are (B, *shape)."""
    for name in names:
        if name is not None:
            b.shapes.setdefault(name, tuple(shape))


def sparse_nodes(graph: NirGraph) -> list[str]:
    """The nodes the event-driven form applies to: Affine and Linear nodes on a 1-D input."""
    return [n for n in graph.order if graph.nodes[n].kind in ("Affine", "Linear") and len(graph.nodes[n].in_shape) == 1]


def probe_name(k: int) -> str:
    """The extra output holding the summed input of the node at position k (:func:`build_onnx` ``probes``)."""
    return f"probe_{k}"


def build_onnx(graph: NirGraph, dt: float, sparse: tuple[str, ...] = (), probes: tuple[str, ...] = (),
               bias_sub: bool = False) -> onnx.ModelProto:
    """The per-step ONNX model of ``graph`` (no metadata yet); nodes in ``sparse`` in the event-driven batch-1
    form (:func:`zor.export.nir.layers.affine_sparse`), the graph then taking B = 1 only. ``probes``: nodes
    (1-D input) whose summed input becomes an extra output :func:`probe_name` (k), for measuring input rates
    (such a model is only run by the exporter, never written). ``bias_sub``: the form int8 quantizes, the
    same values (:func:`zor.export.nir.layers._add_bias`)."""
    b = Builder()
    b.bias_sub = bias_sub
    layout = state_layout(graph)
    edges: dict[tuple, StateEntry] = {e.edge: e for e in layout if e.var == "edge"}
    b.graph_input(fmt.INPUT, (math.prod(graph.input_shape),))
    for e in layout:
        b.graph_input(e.input, (e.size,))
    values: dict[str, str] = {}
    outputs: list[onnx.ValueInfoProto] = []
    for k, name in enumerate(graph.order):
        node = graph.nodes[name]
        conv = converter_for(node.kind)
        mine = [e for e in layout if e.node == name and e.var != "edge"]
        b.prefix = f"node{k}."
        if node.kind == "Input":
            x = b.reshape(fmt.INPUT, node.in_shape)
        else:
            x = _sum_inputs(b, graph, name, values, edges)
        n = math.prod(node.out_shape)
        if name in probes:
            b.op("Identity", [x], out=probe_name(k))
            outputs.append(_vi(probe_name(k), TensorProto.FLOAT, math.prod(node.in_shape)))
        if name in sparse:
            y, st_new, s = affine_sparse(node, b, x), {}, None
        elif conv.elementwise and len(node.in_shape) > 1 and node.kind not in ("Input", "Output"):
            y, st_new, s = _flat_step(b, node, conv, x, [e.input for e in mine], [e.var for e in mine], dt)
        else:
            st = {e.var: b.reshape(e.input, node.out_shape) for e in mine}
            y, st_new, s = conv.onnx_step(node, b, x, st, dt)
            _known(b, node.out_shape, s, *st_new.values())
        _known(b, node.out_shape, y)
        values[name] = y
        for e in mine:
            b.reshape(st_new[e.var], (n,), out=e.output)
        spk = s if s is not None else b.op("Greater", [y, b.const(np.zeros((), np.float32), "zero")])
        _known(b, node.out_shape, spk)
        b.reshape(spk, (n,), out=fmt.spikes(k))
        outputs.append(_vi(fmt.spikes(k), TensorProto.BOOL, n))
    b.prefix = ""
    for e in edges.values():
        b.reshape(values[e.node], (e.size,), out=e.output)
    n_out = math.prod(graph.output_shape)
    b.reshape(values[graph.output], (n_out,), out=fmt.OUTPUT)
    inputs = [_vi(fmt.INPUT, TensorProto.FLOAT, math.prod(graph.input_shape))] + \
             [_vi(e.input, TensorProto.FLOAT, e.size) for e in layout]
    outs = [_vi(fmt.OUTPUT, TensorProto.FLOAT, n_out)] + [_vi(e.output, TensorProto.FLOAT, e.size) for e in layout]
    g = helper.make_graph(b.finish(), "zor_nir_step", inputs, outs + outputs, list(b.inits.values()))
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="zor-export (NIR)")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
