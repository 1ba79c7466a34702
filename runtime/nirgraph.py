"""The synaptic edges of an imported NIR graph, read from its file alone: what ``zor-bench`` counts on it.

A NIR import (:mod:`zor.export.nir`, docs/nir.md) computes one time step. Its weights live in nodes
(``Affine``, ``Linear``, ``Conv1d``, ``Conv2d``: the *synapse nodes*) and the graph's own edges, recorded in
the metadata ``zor.nir`` with the recurrent ones, say what feeds them. A *synaptic edge* is an edge
src → w into a synapse node w. Per time step and input row:

    dense   M(w) = |in(w)| · n_out(w)              Affine / Linear: every weight, every step
            M(w) = |W| · L_out(w)                  Conv: every weight at each output position (padding taps too)
    events  E(src → w) = Σ_u a_t(u) · f_w(u)       a_t(u) = [y_t(src)_u ≠ 0], the source's active units
            f_w(u) = n_out                         Affine / Linear: an active input reads one row of W
            f_w(u) = (C_out / groups) · Π_axes #{(o, k) : o·s − p + k·d = x_axis(u), 0 ≤ o < L_out, 0 ≤ k < K}
                                                   Conv: the output positions whose window holds u, per kernel tap

An edge is *spike-fed* when its source's value is binary: a spiking node (``spiking`` in ``zor.nir``), or a
node that only reshapes (``Flatten``, a sub-graph's ``Input``/``Output``) fed by exactly one spike-fed edge;
the top-level ``Input`` is spike-fed when the events given are all 0 or 1. Only spike-fed edges get the
event-driven count (what the sparse form computes: the sum of the active rows of W). A recurrent edge
carries its source's value one step late, so its active units are those of ``state_in_edge_{j}``.
``SumPool2d``/``AvgPool2d`` (fixed kernels of ones), ``Scale`` and the neurons' own weights (CubaLIF's w_in)
are elementwise or fixed and are not counted as synapses.

A Conv's stride, padding, dilation and groups are read from the file's ``Conv`` node (whose weight is the
initializer ``{node}.weight``, or in an int8 file what its ``{node}.weight_*`` initializer dequantizes to),
with the file's own protobuf reader (:mod:`zor.runtime.onnxmeta`).

Example:
    >>> axis_fan_out(4, 2, kernel=3, stride=2, pad=1, dilation=1).tolist()   # 4 inputs, 2 outputs
    [1, 2, 1, 1]
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from zor.common.errors import ModelFileError

from .onnxmeta import ScanError, _Cursor, scan_model

__all__ = ["NirNode", "SynapticEdge", "NirGraphInfo", "nir_graph", "axis_fan_out", "SYNAPSE_KINDS", "RESHAPE_KINDS"]

SYNAPSE_KINDS = ("Affine", "Linear", "Conv1d", "Conv2d")
RESHAPE_KINDS = ("Flatten", "Input", "Output")     # pass their (single) input on unchanged in value
_G_NODE, _N_INPUT, _N_OP, _N_ATTR = 1, 1, 4, 5      # GraphProto.node; NodeProto input, op_type, attribute
_A_NAME, _A_I, _A_INTS = 1, 3, 8                    # AttributeProto name, i, ints


@dataclass(frozen=True)
class NirNode:
    """One node of ``zor.nir``, at position ``index`` of the step order."""

    index: int
    name: str
    kind: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    spiking: bool

    @property
    def size(self) -> int:
        return math.prod(self.out_shape)


@dataclass(frozen=True)
class SynapticEdge:
    """An edge src → w into a synapse node w, with w's dense count and per-input-unit fan-out."""

    src: str
    dst: str
    kind: str                     # w's NIR type
    recurrent: bool
    edge_index: Optional[int]     # j of ``state_in_edge_{j}`` for a recurrent edge
    dense: int                    # M(w): multiply-accumulates of w per step and row
    fan_out: np.ndarray = field(repr=False)   # (|in(w)|,) f_w(u), flat in C order


@dataclass
class NirGraphInfo:
    """``zor.nir`` parsed: nodes in step order, edges, recurrent edges, the synaptic edges."""

    source: str
    nodes: list[NirNode]
    edges: list[tuple[str, str]]
    recurrent: list[tuple[str, str]]
    synaptic: list[SynapticEdge]

    def node(self, name: str) -> NirNode:
        return next(n for n in self.nodes if n.name == name)

    def binary_nodes(self, input_binary: bool) -> set[str]:
        """The nodes whose value is 0/1 (module docstring): spiking ones, and reshapes of one spike-fed edge."""
        top = self.nodes[0].name
        binary = {n.name for n in self.nodes if n.spiking} | ({top} if input_binary else set())
        for _ in range(len(self.nodes)):              # a reshape chain through recurrent edges settles in ≤ N passes
            grown = {n.name for n in self.nodes if n.kind in RESHAPE_KINDS and n.name != top
                     and len(srcs := [s for s, d in self.edges if d == n.name]) == 1 and srcs[0] in binary}
            if grown <= binary:
                break
            binary |= grown
        return binary


def axis_fan_out(length: int, out_length: int, kernel: int, stride: int, pad: int, dilation: int) -> np.ndarray:
    """Per input position x along one axis: #{(o, k): o·stride − pad + k·dilation = x} (padding taps fall out)."""
    f = np.zeros(length, np.int64)
    for o in range(out_length):
        for k in range(kernel):
            x = o * stride - pad + k * dilation
            if 0 <= x < length:
                f[x] += 1
    return f


def _ints(cur: _Cursor, wire: int, into: list[int]) -> None:
    if wire == 2:                                          # packed
        a, b = cur.span()
        inner = _Cursor(cur.buf, a, b)
        while inner.pos < inner.end:
            into.append(inner.varint())
    else:
        into.append(cur.varint())


def _conv_attributes(node_buf: _Cursor) -> tuple[list[str], dict[str, Any]]:
    """(inputs, {attribute: int or [ints]}) of one NodeProto, if its op is Conv (else ([], {}))."""
    inputs, attrs, op = [], {}, ""
    while node_buf.pos < node_buf.end:
        number, wire = node_buf.key()
        if number == _N_INPUT and wire == 2:
            inputs.append(node_buf.text())
        elif number == _N_OP and wire == 2:
            op = node_buf.text()
        elif number == _N_ATTR and wire == 2:
            attr = _Cursor(node_buf.buf, *node_buf.span())
            name, ints, i = "", [], None
            while attr.pos < attr.end:
                n, w = attr.key()
                if n == _A_NAME and w == 2:
                    name = attr.text()
                elif n == _A_I and w == 0:
                    i = attr.varint()
                elif n == _A_INTS:
                    _ints(attr, w, ints)
                else:
                    attr.skip(w)
            attrs[name] = ints if ints else i
        else:
            node_buf.skip(wire)
    weight = {"Conv": 1, "QLinearConv": 3}.get(op)          # the position of the weight among the inputs
    return ([inputs[weight]], attrs) if weight is not None and len(inputs) > weight else ([], {})


def _convs(data: bytes) -> dict[str, dict[str, Any]]:
    """Every Conv (or QLinearConv) node's attributes, by the name of its weight input."""
    buf = memoryview(data).cast("B")
    top, out = _Cursor(buf, 0, len(buf)), {}
    while top.pos < top.end:
        number, wire = top.key()
        if number != 7 or wire != 2:                      # ModelProto.graph
            top.skip(wire)
            continue
        graph = _Cursor(buf, *top.span())
        while graph.pos < graph.end:
            n, w = graph.key()
            if n == _G_NODE and w == 2:
                weight, attrs = _conv_attributes(_Cursor(buf, *graph.span()))
                if weight:
                    out[weight[0]] = attrs
            else:
                graph.skip(w)
    return out


def _conv_fan_out(node: NirNode, dims: tuple[int, ...], attrs: dict[str, Any]) -> tuple[int, np.ndarray]:
    """(M(w), f_w) of a Conv node from its weight dims (C_out, C_in/g, *K) and the Conv attributes."""
    axes = len(dims) - 2
    strides = attrs.get("strides") or [1] * axes
    pads = attrs.get("pads") or [0] * (2 * axes)
    dilations = attrs.get("dilations") or [1] * axes
    groups = int(attrs.get("group") or 1)
    per_axis = [axis_fan_out(node.in_shape[1 + a], node.out_shape[1 + a], dims[2 + a], strides[a], pads[a],
                             dilations[a]) for a in range(axes)]
    spatial = per_axis[0]
    for f in per_axis[1:]:
        spatial = np.multiply.outer(spatial, f)
    fan = np.broadcast_to(spatial * (dims[0] // groups), node.in_shape).reshape(-1)
    dense = math.prod(dims) * math.prod(node.out_shape[1:])
    return int(dense), np.ascontiguousarray(fan, np.int64)


def _synapse(node: NirNode, convs: dict, inits: dict, where: str) -> tuple[int, np.ndarray]:
    """(M(w), f_w) of synapse node ``node``."""
    if node.kind in ("Affine", "Linear"):
        n_out = node.out_shape[-1]
        return math.prod(node.in_shape) * n_out, np.full(math.prod(node.in_shape), n_out, np.int64)
    weight = f"{node.name}.weight"               # float: the initializer itself; int8: weight_quantized → Dequantize
    conv = next((convs[k] for k in sorted(convs) if k == weight or k.startswith(weight + "_")), None)
    dims = next((inits[k].dims for k in sorted(inits) if (k == weight or k.startswith(weight + "_"))
                 and len(inits[k].dims) == len(node.in_shape) + 1), None)
    if conv is None or dims is None:
        raise ModelFileError(f"{where}: NIR node {node.name!r} ({node.kind}): expected a Conv node reading the "
                             f"initializer {weight!r} (or its int8 form), found none")
    return _conv_fan_out(node, dims, conv)


def _shape(value: Any, what: str, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, int) and v > 0 for v in value):
        raise ModelFileError(f"{where}: metadata zor.nir {what}: expected a list of positive integers, got {value!r}")
    return tuple(value)


def _record(raw: str, where: str) -> tuple[list[NirNode], list[tuple[str, str]], list[tuple[str, str]], str]:
    """Nodes, edges and recurrent edges of the ``zor.nir`` text, checked."""
    try:
        rec = json.loads(raw)
        nodes = [NirNode(k, str(d["name"]), str(d["kind"]), _shape(d["in_shape"], f"node {k} in_shape", where),
                         _shape(d["out_shape"], f"node {k} out_shape", where), bool(d.get("spiking")))
                 for k, d in enumerate(rec["nodes"])]
        edges = [(str(s), str(d)) for s, d in rec["edges"]]
        recurrent = [(str(s), str(d)) for s, d in rec.get("recurrent_edges", [])]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(f"{where}: metadata zor.nir: expected {{nodes [{{name, kind, in_shape, out_shape, "
                             f"spiking}}], edges [[src, dst]], recurrent_edges}}, could not read it ({exc})") from None
    names = {n.name for n in nodes}
    bad = [e for e in edges + recurrent if e[0] not in names or e[1] not in names]
    if not nodes or bad or not set(recurrent) <= set(edges):
        raise ModelFileError(f"{where}: metadata zor.nir: expected every edge between listed nodes and the recurrent "
                             f"edges among the edges, got {bad[:3] or recurrent[:3] or 'no nodes'}")
    return nodes, edges, recurrent, str(rec.get("source", ""))


def nir_graph(model: Any) -> NirGraphInfo:
    """The graph of a NIR import ``model`` (a :class:`zor.runtime.Model`) with its synaptic edges (module doc)."""
    where = str(model.path)
    raw = model.metadata.raw.get("zor.nir")
    if not raw:
        raise ModelFileError(f"{where}: no metadata zor.nir: expected a NIR import (zor-export graph.nir --dt DT)")
    nodes, edges, recurrent, source = _record(raw, where)
    kinds = {n.name: n for n in nodes}
    convs: dict = {}
    inits: dict = {}
    if any(n.kind.startswith("Conv") for n in nodes):
        data = model.path.read_bytes()
        try:
            convs, inits = _convs(data), scan_model(data, digests=False).initializers
        except ScanError as exc:
            raise ModelFileError(f"{where}: expected a well-formed ONNX file, could not read its Conv nodes "
                                 f"({exc})") from None
    synapses: dict[str, tuple[int, np.ndarray]] = {}
    synaptic = []
    for s, d in edges:
        if kinds[d].kind not in SYNAPSE_KINDS:
            continue
        if d not in synapses:
            synapses[d] = _synapse(kinds[d], convs, inits, where)
        dense, fan = synapses[d]
        rec = (s, d) in recurrent
        synaptic.append(SynapticEdge(s, d, kinds[d].kind, rec, recurrent.index((s, d)) if rec else None, dense, fan))
    return NirGraphInfo(source, nodes, edges, recurrent, synaptic)
