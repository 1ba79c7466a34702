"""Row blocks of a learnable step graph's large state tensors: the optimiser's passes in a core's L2 cache.

A W_i (n_i, n_{i+1}) with more than BLOCK_ELEMENTS elements is updated block by block: its rows
are split into ``count = ⌈n_i·n_{i+1} / BLOCK_ELEMENTS⌉`` nearly equal ranges [lo_k, hi_k), and
every weight-shaped state tensor of W_i (the weight, the Adam moments or the SGD momentum, the
novelty trace) is a graph input ``NAME.k`` and a graph output ``NAME_out.k`` per block:

    U_k = G[lo_k:hi_k] ⊙ E′[lo_k:hi_k]      (the co-activity products of the block's rows: a_iᵀ rows)
    ‖U‖² = Σ_k ‖U_k‖²                      (one norm clip over the whole update, as the engine)
    m_k, v_k, W_k ← Adam(m_k, v_k, W_k; U_k) (each block's element-wise chain on 256 KB operands)

W_i itself stays a whole input as well (the forward and backward products read it). The blocks
are listed in the spec (``spec["blocks"]``: {"state", "rows", "input", "output"}), so a reader
needs no naming rule; the runtime binds row views of one C-contiguous buffer to them (a row
range of such a buffer is contiguous: no copy). Measured on a 2-core Xeon: the chain of 16
element-wise passes over a 784 × 256 weight 838 µs whole, 559 µs in 4 blocks, 594 µs in 8.

Transposed, masked connections (:mod:`zor.export.learnable_masked`): a row-blocked W_i whose update
vanishes on every post unit that spiked for no row (rule post_spikes or gated, post layer not always
spiking, no novelty gating) is held as W_iᵀ (n_{i+1}, n_i) in the graph, with its moments: listed in
``spec["transposed"]``; its row blocks are ranges of post units. The start state initializers hold
those tensors transposed; every reader outside the graph (verification, the Learner's ``state``,
state files, ``save``) sees W_i (n_i, n_{i+1}) as before (:func:`graph_feeds`, :func:`join_outputs`).

Example:
    >>> [b["rows"] for b in row_blocks([784, 256, 10], "adamw", [0.0, 0.0, 0.0]) if b["state"] == "weight_0"]
    [[0, 196], [196, 392], [392, 588], [588, 784]]
    >>> [b["rows"] for b in row_blocks([784, 256, 10], "adamw", [0.0] * 3, [0]) if b["state"] == "weight_0"]
    [[0, 64], [64, 128], [128, 192], [192, 256]]
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from zor.common import moments

__all__ = ["BLOCK_ELEMENTS", "MASKED_RULES", "row_blocks", "masked_connections", "transposed_names", "parts", "graph_io",
           "graph_feeds", "state_outputs", "join_outputs", "run_step"]

BLOCK_ELEMENTS = 65536    # a W_i of more elements is updated in row blocks of at most this many (256 KB of float32)
MASKED_RULES = ("post_spikes", "gated")   # rules whose E (so U) is 0 on a post unit that spiked for no row


def masked_connections(sizes: list, rule: str, always: list, novelty: list) -> list[int]:
    """The connections i updated on their active post units only (zor.export.learnable_masked): W_i larger
    than BLOCK_ELEMENTS (row-blocked; at 784 × 64, 44 % active, the masked form measured level with the
    full one), a rule of MASKED_RULES, a post layer that does not spike for good, no novelty gating (its
    trace moves on silent units too)."""
    return [i for i in range(len(sizes) - 1) if rule in MASKED_RULES and not always[i + 1]
            and novelty[i] == 0.0 and int(sizes[i]) * int(sizes[i + 1]) > BLOCK_ELEMENTS]


def transposed_names(masked: list, optimizer: str) -> list[str]:
    """The state tensors held transposed in the graph: W_i and its moments for every masked connection i."""
    kinds = ["weight"] + (["momentum"] if optimizer == "sgd" else ["adam_m", "adam_v"])
    return [f"{k}_{i}" for i in masked for k in kinds]


def row_blocks(sizes: list, optimizer: str, novelty: list, transposed: tuple = ()) -> list[dict]:
    """The row blocks of every weight-shaped state tensor of a W_i larger than BLOCK_ELEMENTS: each block is
    a graph input ``NAME.k`` and output ``NAME_out.k`` of rows [lo, hi) (W_i itself stays an input too,
    for the products). The runtime binds row views of one buffer to them: no copy. For a connection in
    ``transposed`` the rows are those of W_iᵀ (post units)."""
    out = []
    for i in range(len(sizes) - 1):
        n, width = int(sizes[i]), int(sizes[i + 1])
        if i in transposed:
            n, width = width, n
        count = min(n, -(-n * width // BLOCK_ELEMENTS))
        if count < 2:
            continue
        rows = [round(k * n / count) for k in range(count + 1)]
        names = [f"weight_{i}"] + ([f"momentum_{i}"] if optimizer == "sgd" else [f"adam_m_{i}", f"adam_v_{i}"])
        names += [f"novelty_{i}"] if novelty[i] != 0.0 else []
        out += [{"state": name, "rows": [rows[k], rows[k + 1]], "input": f"{name}.{k}", "output": f"{name}_out.{k}"}
                for name in names for k in range(count)]
    return out


def parts(spec: dict, i: int) -> list[tuple[str, int, int]]:
    """(suffix, lo, hi) of W_i's row blocks: [("", 0, n_i)] when it is not split (see row_blocks)."""
    rows = [b["rows"] for b in spec.get("blocks", []) if b["state"] == f"weight_{i}"]
    if not rows:                                  # one block: all rows of W_i, or of W_iᵀ where transposed
        return [("", 0, int(spec["sizes"][i + int(f"weight_{i}" in spec.get("transposed", ()))]))]
    return [(f".{k}", lo, hi) for k, (lo, hi) in enumerate(rows)]


def _state_shape(name: str, spec: dict) -> list:
    """The graph's shape of a state tensor (W_iᵀ's for one in spec["transposed"])."""
    if name in ("step", "moment_steps"):
        return []
    kind, i = name.rsplit("_", 1)
    sizes = spec["sizes"]
    if kind in ("threshold", "rate"):
        return [sizes[int(i)]]
    shape = [sizes[int(i)], sizes[int(i) + 1]]
    return shape[::-1] if name in spec.get("transposed", ()) else shape


def graph_io(spec: dict, names: list[str]) -> tuple[list[tuple[str, list]], list[tuple[str, list]]]:
    """(inputs, outputs) of the state ``names`` as (graph name, shape): a tensor split in row blocks is one
    input and output per block (W_i stays an input as a whole too: the products read it)."""
    blocks: dict[str, list] = {}
    for b in spec.get("blocks", []):
        blocks.setdefault(b["state"], []).append(b)
    ins, outs = [], []
    for n in names:
        shape = _state_shape(n, spec)
        if n not in blocks or n.startswith("weight_"):
            ins.append((n, shape))
        rows = [(b, [b["rows"][1] - b["rows"][0]] + shape[1:]) for b in blocks.get(n, [])]
        ins += [(b["input"], sh) for b, sh in rows]
        outs += [(b["output"], sh) for b, sh in rows] if rows else [(f"{n}_out", shape)]
    return ins, outs


def graph_feeds(spec: dict, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The state (W_i as (n_i, n_{i+1})) as the graph's inputs: the tensors of spec["transposed"] transposed,
    row blocks as views of the whole tensors (no further copy)."""
    turned = set(spec.get("transposed", ()))
    state = {n: np.ascontiguousarray(v.T) if n in turned else v for n, v in state.items()}
    split = {b["state"] for b in spec.get("blocks", [])}
    feeds = {n: v for n, v in state.items() if n not in split or n.startswith("weight_")}
    feeds.update({b["input"]: state[b["state"]][b["rows"][0]:b["rows"][1]] for b in spec.get("blocks", [])})
    return feeds


def state_outputs(spec: dict, names: list[str]) -> list[str]:
    """The graph's outputs of the state ``names`` (``NAME_out``, or one per row block), in order."""
    return [name for name, _ in graph_io(spec, names)[1]]


def join_outputs(spec: dict, names: list[str], got: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """name → new value of every state tensor in ``names`` from the graph's outputs (row blocks joined, the
    tensors of spec["transposed"] turned back to (n_i, n_{i+1}))."""
    new, turned = {}, set(spec.get("transposed", ()))
    for n in names:
        pieces = [got[b["output"]] for b in spec.get("blocks", []) if b["state"] == n]
        new[n] = np.concatenate(pieces) if pieces else got[f"{n}_out"]
        if n in turned:
            new[n] = np.ascontiguousarray(new[n].T)
    return new


def run_step(sess: Any, spec: dict, names: list[str], state: dict[str, np.ndarray], x: np.ndarray,
             target: np.ndarray, extra: Sequence[str] = (), tau: int = 0) -> tuple[dict[str, np.ndarray],
                                                                                  dict[str, np.ndarray]]:
    """One step of the step graph in the onnxruntime session ``sess`` from ``state`` on (x, target): (the outputs
    named in ``extra`` and the state's graph outputs by name, the new state joined as by :func:`join_outputs`).
    ``state`` and the new state hold Adam's moments at scale 1; a graph with scaled moments (zor.common.moments)
    is fed them at τ = ``tau``."""
    outs = list(extra) + state_outputs(spec, names)
    scaling = spec.get("moment_scaling")
    feeds = graph_feeds(spec, moments.to_graph(state, scaling, tau))
    got = dict(zip(outs, sess.run(outs, {"x": x, "target": target, **feeds})))
    return got, moments.from_graph(join_outputs(spec, names, got), scaling)
