"""The NIR verifier's tie rule downstream: a threshold tie that falls the other way in a hidden node changes
what the nodes after it receive in that step; those rows are excused at that step, and nothing else is."""

from __future__ import annotations

import numpy as np
import pytest

nir = pytest.importorskip("nir", reason="the 'nir' extra reads NIR graphs")

from zor.export.nir import load_graph, simulate  # noqa: E402
from zor.export.nir.reference import initial_state, state_layout  # noqa: E402
from zor.export.nir.verify import _run, downstream  # noqa: E402

from zor.common import format as fmt  # noqa: E402

A = np.asarray


def f32(*v):
    return np.array(v, np.float32)


def two_if_graph():
    """input → w1 (1×1, W = 1) → IF h (r = 1, θ = 1) → w2 (W = 1) → IF o (r = 1, θ = 10) → output, dt = 1.

    From rest with x = 1 at t = 0: v_h = 0 + 1·1 = 1.0 = θ exactly (margin 0: a tie; the reference says no
    spike, [v > θ]), so o receives 0 and v_o = 0. A graph whose h spikes on that tie resets v_h to 0 and gives
    o an input of 1: v_o = 1, not 0."""
    nodes = {"input": nir.Input(A([1])), "w1": nir.Linear(f32(1.0).reshape(1, 1)),
             "h": nir.IF(r=f32(1), v_threshold=f32(1), v_reset=f32(0)),
             "w2": nir.Linear(f32(1.0).reshape(1, 1)),
             "o": nir.IF(r=f32(1), v_threshold=f32(10), v_reset=f32(0)), "output": nir.Output(A([1]))}
    edges = [("input", "w1"), ("w1", "h"), ("h", "w2"), ("w2", "o"), ("o", "output")]
    return load_graph(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))


class TieFallsOver:
    """A session that answers as the reference does, except that at step 0 in batch row 0 the hidden node's tie
    falls the other way (spike 1, v_h reset to 0) and o then holds ``o_shift`` more than the reference."""

    def __init__(self, graph, xs, start, o_shift=1.0, row_1_shift=0.0):
        self.graph, self.ref, self.t = graph, simulate(graph, xs, 1.0, state=start), 0
        self.o_shift, self.row_1_shift = o_shift, row_1_shift
        self.order = {n: k for k, n in enumerate(graph.order)}

    def run(self, names, feeds):
        ref, t, b = self.ref, self.t, feeds[fmt.INPUT].shape[0]
        out = {fmt.OUTPUT: ref.outputs[fmt.OUTPUT][t].reshape(b, -1).copy()}
        for e in state_layout(self.graph):
            out[e.output] = ref.states[e.input][t].copy()
        for n in ref.spikes:
            out[fmt.spikes(self.order[n])] = ref.spikes[n][t].reshape(b, -1).astype(bool).copy()
        if t == 0:
            k_h, k_o = self.order["h"], self.order["o"]
            out[fmt.spikes(k_h)][0, 0] = True
            out[f"state_out_{k_h}_v"][0, 0] = 0.0
            out[f"state_out_{k_o}_v"][0, 0] += self.o_shift
            out[f"state_out_{k_o}_v"][1, 0] += self.row_1_shift     # a row without a tie
        self.t += 1
        return [out[n] for n in names]


def _inputs():
    xs = np.zeros((3, 2, 1), np.float32)
    xs[0, 0, 0] = 1.0          # row 0 ties at step 0
    xs[0, 1, 0] = 0.5          # row 1: v_h = 0.5, far from θ
    return xs


def test_downstream_follows_forward_edges_only():
    g = two_if_graph()
    after = downstream(g)
    assert after["h"] == {"w2", "o", "output"} and after["o"] == {"output"} and after["w1"] == {"h", "w2", "o", "output"}


def test_a_tie_excuses_the_nodes_after_it_in_its_row_and_step():
    g = two_if_graph()
    xs = _inputs()
    start = initial_state(g, 2)
    ref = simulate(g, xs, 1.0, state=start)
    assert ref.margins["h"][0, 0, 0] == 0.0                        # the hand-derived tie: v_h = θ = 1
    report, failures = _run(g, TieFallsOver(g, xs, start), xs, 1.0, start, "zero state")
    assert failures == [] and report["passed"]
    assert report["spikes"]["h"]["ties"] == 1 and report["spikes"]["o"]["after_tie"] == 0


def test_a_difference_in_a_row_without_a_tie_still_fails():
    g = two_if_graph()
    xs = _inputs()
    start = initial_state(g, 2)
    report, failures = _run(g, TieFallsOver(g, xs, start, row_1_shift=0.25), xs, 1.0, start, "zero state")
    k_o = g.order.index("o")
    assert failures == [f"zero state: state_out_{k_o}_v outside tolerance in 1 of 3 steps"]
    assert report["max_abs_error_outside_tolerance"][f"state_in_{k_o}_v"] == pytest.approx(0.25)
