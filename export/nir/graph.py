"""NirGraph: a NIR graph read, flattened and checked, in the order one time step runs it.

A NIR file (HDF5, read by the ``nir`` package) holds nodes and edges (src → dst). One step of the
graph at time t computes every node once, in :attr:`NirGraph.order` (breadth-first from the Input
node, successors by name; Output nodes last). A node's input is the sum over its incoming edges:

    x_t(dst) = Σ_{src → dst forward} y_t(src)  +  Σ_{src → dst recurrent} y_{t−1}(src)

An edge is *recurrent* when its source does not come before its destination in that order (a cycle
in the edges, or a self loop): it carries the previous step's value, a state tensor of the export,
starting from the value the source gives at rest (its bias for Affine/Conv, else 0).

Nested sub-graphs are flattened: node ``b`` of sub-graph ``a`` becomes ``a.b``; an edge into ``a``
goes to ``a``'s Input node(s), an edge out of ``a`` leaves from its Output node(s), and the inner
Input/Output nodes become identities. Everything is checked here and a malformed graph raises
:class:`~zor.common.errors.NirGraphError` (exit 2) naming the node and what was expected.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from zor.common.errors import NirGraphError

from .kinds import converter_for, parse_node
from .nodes import Node

__all__ = ["NirGraph", "load_graph", "read_nir"]


@dataclass
class NirGraph:
    """The flattened graph: nodes by name, edges, the step order and which edges are recurrent."""

    nodes: dict[str, Node]                  # name → parsed node (kind, params, in/out shapes)
    edges: list[tuple[str, str]]            # (src, dst), forward and recurrent
    order: list[str]                        # the order one step computes the nodes (Input first, Output last)
    recurrent: list[tuple[str, str]]        # the edges carrying the previous step's value
    source: str = "<in memory>"             # the file it was read from
    metadata: dict = field(default_factory=dict)

    @property
    def input(self) -> str:
        return self.order[0]

    @property
    def output(self) -> str:
        return self.order[-1]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.nodes[self.input].in_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.nodes[self.output].out_shape

    def sources(self, name: str) -> list[str]:
        """The nodes with an edge into ``name``, in edge order."""
        return [s for s, d in self.edges if d == name]

    def is_recurrent(self, src: str, dst: str) -> bool:
        return (src, dst) in self.recurrent

    def summary(self) -> list[dict[str, Any]]:
        """Per node in step order: name, kind, input and output shapes, stateful, spiking."""
        return [{"name": n, "kind": self.nodes[n].kind, "in_shape": list(self.nodes[n].in_shape),
                 "out_shape": list(self.nodes[n].out_shape), "state": list(converter_for(self.nodes[n].kind).state),
                 "spiking": converter_for(self.nodes[n].kind).spiking} for n in self.order]


def read_nir(path: Union[str, Path]) -> Any:
    """``nir.read(path)``, every failure of a bad file a NirGraphError naming what was expected."""
    import nir

    p = Path(path)
    if not p.is_file():
        raise NirGraphError(f"{p}: no such file: expected a NIR graph (.nir, HDF5)")
    with open(p, "rb") as f:
        magic = f.read(8)
    if magic != b"\x89HDF\r\n\x1a\n":
        raise NirGraphError(f"{p}: not an HDF5 file (first bytes {magic[:8]!r}): expected a NIR graph written "
                            "by nir.write (HDF5 signature \\x89HDF)")
    try:
        return nir.read(str(p))
    except Exception as exc:     # h5py/nir raise many kinds (OSError, KeyError, ValueError) on bad files
        raise NirGraphError(f"{p}: not a readable NIR graph ({type(exc).__name__}: {exc}): expected an HDF5 file "
                            "with 'node' holding 'nodes' and 'edges', as nir.write makes") from None


def _flatten(graph: Any, prefix: str = "") -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Raw nodes and edges with nested sub-graphs inlined (names joined by '.')."""
    nodes: dict[str, Any] = {}
    edges: list[tuple[str, str]] = []
    ins: dict[str, list[str]] = {}      # sub-graph name → its inner Input nodes (full names)
    outs: dict[str, list[str]] = {}
    raw_nodes = getattr(graph, "nodes", None)
    raw_edges = getattr(graph, "edges", None)
    if not isinstance(raw_nodes, dict) or raw_edges is None:
        raise NirGraphError(f"graph {prefix or '<top>'}: expected nodes (a dict) and edges (a list), "
                            f"got {type(raw_nodes).__name__} and {type(raw_edges).__name__}")
    for name, node in raw_nodes.items():
        full = f"{prefix}{name}"
        if type(node).__name__ == "NIRGraph":
            sub_nodes, sub_edges = _flatten(node, full + ".")
            nodes.update(sub_nodes)
            edges += sub_edges
            ins[full] = [n for n, v in sub_nodes.items() if type(v).__name__ == "Input" and n.count(".") == full.count(".") + 1]
            outs[full] = [n for n, v in sub_nodes.items() if type(v).__name__ == "Output" and n.count(".") == full.count(".") + 1]
        else:
            nodes[full] = node
    for edge in raw_edges:
        if not (isinstance(edge, (tuple, list)) and len(edge) == 2):
            raise NirGraphError(f"graph {prefix or '<top>'}: edge {edge!r}: expected a pair (src, dst)")
        src, dst = (f"{prefix}{e}" for e in edge)
        for s in outs.get(src, [src]):
            for d in ins.get(dst, [dst]):
                edges.append((s, d))
    return nodes, edges


def _order(nodes: dict[str, Node], edges: list[tuple[str, str]], where: str) -> list[str]:
    """Breadth-first from the Input node, successors sorted by name; the Output node moved last."""
    inputs = [n for n, v in nodes.items() if v.kind == "Input" and "." not in n]
    inputs = inputs or [n for n, v in nodes.items() if v.kind == "Input" and not any(d == n for _, d in edges)]
    outputs = [n for n, v in nodes.items() if v.kind == "Output" and not any(s == n for s, _ in edges)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NirGraphError(f"{where}: expected exactly one top-level Input and one Output node, got Input "
                            f"{sorted(inputs)} and Output {sorted(outputs)}")
    order, seen, frontier = [], set(), [inputs[0]]
    while frontier:
        name = frontier.pop(0)
        if name in seen:
            continue
        seen.add(name)
        order.append(name)
        frontier += sorted(d for s, d in edges if s == name)
    unreached = sorted(set(nodes) - seen)
    if unreached:
        raise NirGraphError(f"{where}: node(s) {unreached} cannot be reached from the Input node "
                            f"{inputs[0]!r}: expected every node on a path from the input")
    order.remove(outputs[0])
    return order + [outputs[0]]


def _check_edges(nodes: dict[str, Any], edges: list[tuple[str, str]], where: str) -> None:
    for s, d in edges:
        for end, role in ((s, "source"), (d, "destination")):
            if end not in nodes:
                raise NirGraphError(f"{where}: edge {s!r} → {d!r}: {role} {end!r} is not a node (dangling edge): "
                                    f"expected one of {sorted(nodes)}")
    for n, node in nodes.items():
        has_in = any(d == n for _, d in edges)
        if not has_in and type(node).__name__ != "Input":
            raise NirGraphError(f"{where}: node {n!r} ({type(node).__name__}) has no incoming edge: expected "
                                "every node but the Input to be fed")


def _shapes(nodes: dict[str, Node], edges: list, order: list[str], recurrent: list, where: str) -> None:
    """Propagate shapes in step order; every edge into a node must carry the shape the node takes."""
    pos = {n: i for i, n in enumerate(order)}
    for name in order:
        node = nodes[name]
        srcs = [s for s, d in edges if d == name and pos[s] < pos[name]]
        if node.kind != "Input":
            shapes = {nodes[s].out_shape for s in srcs}
            if len(shapes) != 1:
                raise NirGraphError(f"{where}: node {name!r} ({node.kind}) is fed shapes {sorted(shapes)} by "
                                    f"{srcs}: expected one shape on every incoming edge")
            node.set_input(shapes.pop())
        conv = converter_for(node.kind)
        node.out_shape = tuple(int(v) for v in conv.out_shape(node))
    for s, d in recurrent:
        if nodes[s].out_shape != nodes[d].in_shape:
            raise NirGraphError(f"{where}: recurrent edge {s!r} → {d!r} carries shape {nodes[s].out_shape}: "
                                f"expected {nodes[d].in_shape}, the shape {d!r} takes")


def load_graph(source: Any) -> NirGraph:
    """A NIR graph (``.nir`` path or an in-memory ``nir.NIRGraph``) parsed, flattened and checked."""
    if isinstance(source, NirGraph):
        return source
    where = str(source) if isinstance(source, (str, Path)) else "<in memory NIR graph>"
    graph = read_nir(source) if isinstance(source, (str, Path)) else source
    raw_nodes, edges = _flatten(graph)
    if not raw_nodes:
        raise NirGraphError(f"{where}: the graph has no nodes: expected at least an Input and an Output node")
    _check_edges(raw_nodes, edges, where)
    nodes = {n: parse_node(n, v, where) for n, v in raw_nodes.items()}
    order = _order(nodes, edges, where)
    pos = {n: i for i, n in enumerate(order)}
    recurrent = [(s, d) for s, d in edges if pos[s] >= pos[d]]
    _shapes(nodes, edges, order, recurrent, where)
    for n in order:
        size = math.prod(nodes[n].out_shape)
        if size <= 0:
            raise NirGraphError(f"{where}: node {n!r} has output shape {nodes[n].out_shape}: expected positive sizes")
    meta = dict(getattr(graph, "metadata", {}) or {})
    return NirGraph(nodes=nodes, edges=edges, order=order, recurrent=recurrent, source=where,
                    metadata={k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))})


def with_discretisation(graph: NirGraph, mode: str) -> NirGraph:
    """A copy of ``graph`` whose neurons use ``mode`` ("euler" or "exp", :mod:`.neurons`); ``graph`` is unchanged."""
    from .neurons import DISCRETISATIONS

    if mode not in DISCRETISATIONS:
        raise NirGraphError(f"discretisation {mode!r}: expected one of {', '.join(DISCRETISATIONS)}")
    nodes = {n: dataclasses.replace(v, attrs={**v.attrs, "discretisation": mode}) for n, v in graph.nodes.items()}
    return dataclasses.replace(graph, nodes=nodes)


def rest_value(node: Node) -> np.ndarray:
    """What a node outputs with zero input and zero state, flat (n,): the start of a recurrent edge."""
    return converter_for(node.kind).rest(node).reshape(-1).astype(np.float32)
