"""The reference simulation of a NIR graph in torch: the discrete steps of :mod:`.neurons` and :mod:`.layers`.

For each time step t, every node in ``graph.order`` (Input first, Output last):

    x_t(n) = Σ_{forward edges s → n} y_t(s) + Σ_{recurrent edges s → n} e_{t−1}(s → n),   e_t(s → n) = y_t(s)
    y_t(n), state_t(n) = step_n(x_t(n), state_{t−1}(n), dt)

with x_t(Input) the input at t. The state is named as the export names its state tensors
(:func:`state_layout`): ``state_in_{k}_{var}`` for variable var (v, i) of the node at position k of the
order, ``state_in_edge_{j}`` for recurrent edge j; each (B, n) float32, n the node's size. A fresh
state is v = i = 0 and every recurrent edge at its source's rest value (an Affine's bias, else 0).

Example:
    >>> res = simulate(load_graph("net.nir"), xs, dt=1e-4)     # doctest: +SKIP
    >>> res.outputs["output"].shape                            # (T, B, *output_shape)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

from zor.common.errors import NirGraphError, ShapeError

from .graph import NirGraph, load_graph, rest_value, with_discretisation
from .kinds import converter_for

__all__ = ["SimResult", "StateEntry", "simulate", "state_layout", "initial_state"]


@dataclass(frozen=True)
class StateEntry:
    """One state tensor: its ONNX input/output names, the node (or edge) it belongs to, size, start value."""

    input: str
    output: str
    node: str                       # the node whose variable it is, or the recurrent edge's source
    var: str                        # "v", "i", or "edge"
    size: int
    index: int                      # the node's position in graph.order (the metadata's layer index)
    initial: Any                    # a number, or a list of ``size`` numbers
    edge: Optional[tuple[str, str]] = None


@dataclass
class SimResult:
    """What :func:`simulate` returns."""

    outputs: dict[str, np.ndarray]                 # "output" → (T, B, *output_shape) float32
    spikes: dict[str, np.ndarray]                  # spiking node name → (T, B, *shape) bool
    state: dict[str, np.ndarray]                   # final state, state_in name → (B, n) float32
    states: dict[str, np.ndarray] = field(default_factory=dict)   # state_in name → (T, B, n) every step's state
    margins: dict[str, np.ndarray] = field(default_factory=dict)  # spiking node → (T, B, *shape) value − threshold


def state_layout(graph: NirGraph) -> list[StateEntry]:
    """Every state tensor of ``graph``: per stateful node its variables, then per recurrent edge the carried value."""
    out: list[StateEntry] = []
    for k, name in enumerate(graph.order):
        node = graph.nodes[name]
        for var in converter_for(node.kind).state:
            out.append(StateEntry(f"state_in_{k}_{var}", f"state_out_{k}_{var}", name, var,
                                  math.prod(node.out_shape), k, 0.0))
    for j, (src, dst) in enumerate(graph.recurrent):
        rest = rest_value(graph.nodes[src])
        initial: Any = float(rest[0]) if np.all(rest == rest[0]) else [float(v) for v in rest]
        out.append(StateEntry(f"state_in_edge_{j}", f"state_out_edge_{j}", src, "edge", rest.size,
                              graph.order.index(src), initial, (src, dst)))
    return out


def initial_state(graph: NirGraph, batch: int) -> dict[str, np.ndarray]:
    """The fresh state for ``batch`` rows, by state_in name."""
    return {e.input: np.broadcast_to(np.asarray(e.initial, np.float32), (batch, e.size)).copy()
            for e in state_layout(graph)}


def _check_inputs(graph: NirGraph, xs: Any, dt: float) -> np.ndarray:
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise NirGraphError(f"dt = {dt!r}: expected a positive finite time step")
    xs = np.asarray(xs)
    want = graph.input_shape
    if xs.ndim != 2 + len(want) or tuple(xs.shape[2:]) != want or xs.shape[0] < 1 or xs.shape[1] < 1:
        raise ShapeError(f"simulate: xs has shape {list(xs.shape)}: expected (T, B, {', '.join(map(str, want))})")
    if xs.dtype.kind not in "fiub" or not np.isfinite(xs.astype(np.float32)).all():
        raise ShapeError(f"simulate: xs (dtype {xs.dtype}): expected finite numbers")
    return xs.astype(np.float32)


def simulate(graph: Any, xs: Any, dt: float, state: Optional[Mapping[str, Any]] = None,
             discretisation: Optional[str] = None) -> SimResult:
    """Run ``graph`` (a NirGraph, path or nir.NIRGraph) over ``xs`` (T, B, *input_shape) from ``state``
    (default: the fresh state); ``discretisation`` "euler" or "exp" (default: the graph's own, else "euler")."""
    import torch

    graph = load_graph(graph)
    if discretisation is not None:
        graph = with_discretisation(graph, discretisation)
    xs = _check_inputs(graph, xs, dt)
    batch = xs.shape[1]
    layout = state_layout(graph)
    start = initial_state(graph, batch)
    if state is not None:
        missing = sorted(set(start) - set(state))
        if missing:
            raise ShapeError(f"simulate: state lacks {missing}: expected every one of {sorted(start)}")
        start = {k: np.asarray(state[k], np.float32).reshape(batch, -1) for k in start}
    cur = {k: torch.from_numpy(v.copy()) for k, v in start.items()}
    outs, spikes = [], {n: [] for n in graph.order if converter_for(graph.nodes[n].kind).spiking}
    margins: dict[str, list] = {n: [] for n in spikes}
    states: dict[str, list] = {e.input: [] for e in layout}
    with torch.no_grad():
        for x in torch.from_numpy(xs):
            y, s, cur = step(graph, layout, x, cur, dt)
            outs.append(y)
            for n in spikes:
                spikes[n].append(s[n][0])
                margins[n].append(s[n][1])
            for k in states:
                states[k].append(cur[k])
    return SimResult(outputs={"output": torch.stack(outs).numpy()},
                     spikes={n: torch.stack(v).numpy() for n, v in spikes.items()},
                     state={k: v.numpy().copy() for k, v in cur.items()},
                     states={k: torch.stack(v).numpy() for k, v in states.items()},
                     margins={n: torch.stack(v).numpy() for n, v in margins.items()})


def step(graph: NirGraph, layout: list[StateEntry], x: Any, cur: dict, dt: float) -> tuple[Any, dict, dict]:
    """One time step: (output (B, *shape), (spikes, value − threshold) per spiking node, the new state by
    state_in name)."""
    batch = x.shape[0]
    by_node: dict[str, list[StateEntry]] = {}
    for e in layout:
        if e.var != "edge":
            by_node.setdefault(e.node, []).append(e)
    edges = {e.edge: e for e in layout if e.var == "edge"}
    now: dict[str, Any] = {}
    new: dict[str, Any] = {}
    spikes: dict[str, Any] = {}
    for name in graph.order:
        node = graph.nodes[name]
        if node.kind == "Input":
            inp = x
        else:
            parts = [edges[(s, name)] if (s, name) in edges else now[s] for s in graph.sources(name)]
            parts = [cur[p.input].reshape((batch,) + node.in_shape) if isinstance(p, StateEntry) else p for p in parts]
            inp = parts[0]
            for p in parts[1:]:
                inp = inp + p
        conv = converter_for(node.kind)
        st = {e.var: cur[e.input].reshape((batch,) + node.out_shape) for e in by_node.get(name, [])}
        y, st_new, s = conv.torch_step(node, inp, st, dt)
        now[name] = y
        for e in by_node.get(name, []):
            new[e.input] = st_new[e.var].reshape(batch, -1)
        if s is not None:
            spikes[name] = (s, st_new["margin"])
    for e in edges.values():
        new[e.input] = now[e.node].reshape(batch, -1)
    return now[graph.output], spikes, new
