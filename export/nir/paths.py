"""Which Affine/Linear nodes of a NIR import go event-driven: ``--path dense | sparse | auto``.

A node fed by a 1-D input x (n_in,) computes y = x Wᵀ + b over every row of Wᵀ; its event-driven
form (:func:`.layers.affine_sparse`, batch 1) reads only the rows of the non-zero inputs. With the
input rate r (the share of x's elements that are non-zero, measured on the float step graph over
the calibration events from rest, every step of every row), the node's shape (n_in, n_out), N = n_in·n_out
synapses and the device profile's break-even r*(n_in, n_out) (:func:`zor.export.paths.effective_break_even`:
the profile's cost model by shape, r_be′·(1 − S₀′/N − k/n_out)/(1 + φ/n_out), where it has one and N is
within what it was measured on; else its measured curve in log N, or r_be·(1 − S₀/N)):

    auto:  sparse  ⇔  r < r*(n_in, n_out)

``zor.paths`` records the plan as our own exports do (requested, profile, break_even, curve, shape_model,
form "batch1", max_batch 1 when a node is sparse, rates {source, rows, steps}, and per node: its position
k as ``connection``, node name, kind, path, spike_rate (the input rate r), synapses, shape [n_in, n_out],
break_even (its r*), precision, reason).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..paths import effective_break_even, shape_model
from .graph import NirGraph
from .int8 import run_free
from .onnxgraph import build_onnx, probe_name, sparse_nodes

__all__ = ["plan_nir_paths", "input_rates"]


def input_rates(graph: NirGraph, dt: float, xs: np.ndarray, nodes: list[str]) -> dict[str, float]:
    """{node: share of its input's elements that are non-zero} over events ``xs`` (T, B, *input_shape)."""
    if not nodes:
        return {}
    probe = build_onnx(graph, dt, probes=tuple(nodes))
    names = [probe_name(graph.order.index(n)) for n in nodes]
    got = run_free(graph, probe, xs, names)
    return {n: float((got[p] != 0).mean()) for n, p in zip(nodes, names)}


def plan_nir_paths(graph: NirGraph, dt: float, requested: str, profile: Any = None,
                   xs: Optional[np.ndarray] = None, source: str = "") -> tuple[tuple[str, ...], dict[str, Any]]:
    """(the sparse nodes, the ``zor.paths`` record; {} when dense). ``auto`` needs ``profile`` and events ``xs``."""
    if requested == "dense":
        return (), {}
    candidates = sparse_nodes(graph)
    rates = input_rates(graph, dt, xs, candidates) if requested == "auto" else {}
    conns, chosen = [], []
    for n in candidates:
        node = graph.nodes[n]
        n_out, n_in = (int(v) for v in node.params["weight"].shape)      # NIR weight: (n_out, n_in)
        syn = n_in * n_out
        row = {"connection": graph.order.index(n), "node": n, "kind": node.kind, "synapses": syn,
               "shape": [n_in, n_out], "precision": "float32", "spike_rate": rates.get(n)}
        if requested == "sparse":
            row.update(path="sparse", reason="requested (--path sparse): only the weight rows of non-zero inputs "
                                             "are read")
        else:
            be = effective_break_even(profile, (n_in, n_out))
            sparse = rates[n] < be
            row.update(path="sparse" if sparse else "dense", break_even=be,
                       reason=f"input rate {rates[n]:.3f} {'<' if sparse else '≥'} break-even {be:.3f} "
                              f"({profile.name}, {n_in}x{n_out}, {syn} synapses)")
        conns.append(row)
        if row["path"] == "sparse":
            chosen.append(n)
    record: dict[str, Any] = {"requested": requested, "form": "batch1", "max_batch": 1 if chosen else None,
                              "connections": conns}
    if requested == "auto":
        record.update(profile=profile.name, break_even=float(profile.sparse_break_even),
                      min_synapses=int(profile.sparse_min_synapses),
                      curve=[list(c) for c in (profile.sparse_curve or ())],
                      **({} if shape_model(profile) is None else {"shape_model": shape_model(profile)}),
                      rates={"source": source, "rows": int(xs.shape[1]), "steps": int(xs.shape[0]),
                             "measured": "float graph, from rest, every step"})
    return tuple(chosen), record
