"""The exported step graph against the reference simulation, before anything is written.

Two runs of T steps each (default 100) on the same inputs: from the fresh state, and from a random
state (seeded). Each step t of the ONNX graph is fed the reference's state after step t − 1, so one
step's rounding does not carry into the next and every step is checked on its own:

    states     |state_out_onnx − state_ref| ≤ atol + rtol·|state_ref|    (atol = rtol = 1e-5), every variable
    output     the same bound on ``output``
    spikes     equal, except ties: elements where the reference's v' − v_threshold is within
               atol + rtol·|v_threshold| of zero (a float32 rounding can fall either side); ties are
               counted and reported, and the state of a tied element (v_reset or v') is not compared
    downstream a tie that fell the other way changes what the nodes after it receive in the same step:
               in that batch row, the states and spikes of every node reached from the tied node along
               forward edges, the recurrent edges' values leaving them and ``output`` are not compared
               at that step (the next step is fed the reference's state again); such spikes are counted
               as ``after_tie``

Every failure is collected and raised together as a :class:`~zor.common.errors.VerificationError`
whose ``report`` is the full report (also what the file's ``zor.verification`` holds).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import onnx

from zor.common import format as fmt
from zor.common.errors import VerificationError

from .graph import NirGraph
from .reference import initial_state, simulate, state_layout

__all__ = ["verify_step_graph", "default_inputs", "downstream", "ATOL", "RTOL"]

ATOL = 1e-5
RTOL = 1e-5


def default_inputs(graph: NirGraph, steps: int, batch: int = 8, seed: int = 0, rate: float = 0.3) -> np.ndarray:
    """Random binary events (T, B, *input_shape): each element 1 with probability ``rate``."""
    rng = np.random.default_rng(seed)
    return (rng.random((steps, batch) + graph.input_shape) < rate).astype(np.float32)


def random_state(graph: NirGraph, batch: int, seed: int = 1) -> dict[str, np.ndarray]:
    """A random start: each state element uniform in [−s, s], s the node's largest |threshold| (1 if none)."""
    rng = np.random.default_rng(seed)
    out = {}
    for e in state_layout(graph):
        node = graph.nodes[e.node]
        theta = node.params.get("v_threshold", node.params.get("threshold"))
        s = float(np.abs(theta).max()) if theta is not None and theta.size else 1.0
        out[e.input] = rng.uniform(-s, s, (batch, e.size)).astype(np.float32)
    return out


def _session(model: onnx.ModelProto) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _close(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.abs(a - ref) <= ATOL + RTOL * np.abs(ref)


def downstream(graph: NirGraph) -> dict[str, set[str]]:
    """Per node, the nodes after it within one step: reached along forward (non-recurrent) edges, itself excluded."""
    forward: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        if (src, dst) not in graph.recurrent:
            forward[src].append(dst)
    out: dict[str, set[str]] = {}
    for start in graph.nodes:
        seen: set[str] = set()
        todo = list(forward[start])
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo.extend(forward[n])
        out[start] = seen - {start}
    return out


def _after_ties(after: dict[str, set[str]], flipped: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """Per node, the batch rows (B,) where a node before it in this step had a tie fall the other way."""
    rows = {n: np.zeros(batch, bool) for n in after}
    for n, flips in flipped.items():
        hit = flips.any(axis=1)                                       # (B,)
        if hit.any():
            for d in after[n]:
                rows[d] |= hit
    return rows


def _run(graph: NirGraph, sess: Any, xs: np.ndarray, dt: float, start: dict, label: str) -> tuple[dict, list[str]]:
    """One verification run; (its report, its failures)."""
    ref = simulate(graph, xs, dt, state=start)
    layout = state_layout(graph)
    order = {n: k for k, n in enumerate(graph.order)}
    spiking = list(ref.spikes)
    names = [fmt.OUTPUT] + [e.output for e in layout] + [fmt.spikes(order[n]) for n in spiking]
    batch, failures = xs.shape[1], []
    stats = {n: {"agree": 0, "total": 0, "ties": 0, "after_tie": 0} for n in spiking}
    after = downstream(graph)
    worst = {e.input: 0.0 for e in layout} | {fmt.OUTPUT: 0.0}
    bad_steps: dict[str, int] = {}
    for t in range(xs.shape[0]):
        feeds = {fmt.INPUT: xs[t].reshape(batch, -1)}
        feeds.update(start if t == 0 else {k: ref.states[k][t - 1] for k in start})
        got = dict(zip(names, sess.run(names, feeds)))
        tied, diffs = _spike_ties(graph, ref, got, spiking, order, t, batch)
        excused = _after_ties(after, tied, batch)                     # node → (B,) rows after a tie
        for n in spiking:
            diff, tie, rows = diffs[n], tied[n], excused[n][:, None]
            stats[n]["total"] += diff.size
            stats[n]["agree"] += int((~diff).sum())
            stats[n]["ties"] += int(tie.sum())
            stats[n]["after_tie"] += int((diff & ~tie & rows).sum())
            if (diff & ~tie & ~rows).any():
                bad_steps[f"spikes of {n}"] = bad_steps.get(f"spikes of {n}", 0) + 1
        for e in layout:
            want, have = ref.states[e.input][t], got[e.output]
            own = e.node in tied and (e.var == "v" or e.var == "edge")     # the tied element itself, or its value
            ok = _close(have, want) | (tied[e.node] if own else False) | excused[e.node][:, None]
            worst[e.input] = max(worst[e.input], float(np.abs(have - want)[~ok].max(initial=0.0)))
            if not ok.all():
                bad_steps[e.output] = bad_steps.get(e.output, 0) + 1
        want_out = ref.outputs[fmt.OUTPUT][t].reshape(batch, -1)
        ok = _close(got[fmt.OUTPUT], want_out) | bool(any(v.any() for v in tied.values()))
        worst[fmt.OUTPUT] = max(worst[fmt.OUTPUT], float(np.abs(got[fmt.OUTPUT] - want_out)[~ok].max(initial=0.0)))
        if not np.all(ok):
            bad_steps[fmt.OUTPUT] = bad_steps.get(fmt.OUTPUT, 0) + 1
    for what, count in bad_steps.items():
        failures.append(f"{label}: {what} outside tolerance in {count} of {xs.shape[0]} steps")
    report = {"start": label, "steps": int(xs.shape[0]), "batch": int(batch),
              "spikes": {n: {"agreement": s["agree"] / max(s["total"], 1), "ties": s["ties"],
                             "after_tie": s["after_tie"], "spike_rate": float(ref.spikes[n].mean())}
                         for n, s in stats.items()},
              "max_abs_error_outside_tolerance": worst, "passed": not bad_steps}
    return report, failures


def _spike_ties(graph: NirGraph, ref: Any, got: dict, spiking: list[str], order: dict, t: int,
                batch: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """At step t, per spiking node: (elements (B, n) that differ on a tie, elements (B, n) that differ)."""
    tied, diffs = {}, {}
    for n in spiking:
        want = ref.spikes[n][t].reshape(batch, -1)
        have = got[fmt.spikes(order[n])]
        node = graph.nodes[n]
        theta = np.broadcast_to(node.params.get("v_threshold", node.params.get("threshold")), node.out_shape)
        tie = np.abs(ref.margins[n][t].reshape(batch, -1)) <= ATOL + RTOL * np.abs(theta.reshape(1, -1))
        diffs[n] = have != want
        tied[n] = diffs[n] & tie
    return tied, diffs


def verify_step_graph(graph: NirGraph, model: onnx.ModelProto, dt: float, steps: int = 100,
                      inputs: Optional[np.ndarray] = None) -> dict[str, Any]:
    """Verify ``model`` (the step graph of ``graph``) against the reference; the report, or VerificationError."""
    xs = default_inputs(graph, steps) if inputs is None else np.asarray(inputs, np.float32)[:steps]
    sess = _session(model)
    batch = xs.shape[1]
    runs, failures = [], []
    for label, start in (("zero state", initial_state(graph, batch)), ("random state", random_state(graph, batch))):
        report, bad = _run(graph, sess, xs, dt, start, label)
        runs.append(report)
        failures += bad
    report = {"passed": not failures, "reference": "torch forward Euler (zor.export.nir.reference)",
              "tolerance": {"atol": ATOL, "rtol": RTOL}, "inputs": "given" if inputs is not None else
              f"random binary events, rate 0.3, seed 0, {math.prod(xs.shape[1:])} values per step",
              "runs": runs, "failures": failures}
    if failures:
        raise VerificationError("NIR export failed verification against the reference simulation: "
                                + "; ".join(failures), report)
    return report
