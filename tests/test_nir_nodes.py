"""Every NIR node type, one step at a time, against values worked out by hand (docs/nir.md).

Each case is a chain Input → node → Output built in memory with the ``nir`` package; the reference
(zor.export.nir.simulate) and the exported file run by the runtime's stream must both give the hand
values. test_every_registered_kind_has_a_hand_test fails when a converter is registered without a case here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

nir = pytest.importorskip("nir", reason="the 'nir' extra reads NIR graphs")

from zor.export.nir import export_nir, load_graph, simulate, supported_kinds  # noqa: E402
from zor.runtime import Model  # noqa: E402

A = np.asarray


def chain(node, in_shape, out_shape):
    return nir.NIRGraph(nodes={"input": nir.Input(A(in_shape)), "n": node, "output": nir.Output(A(out_shape))},
                        edges=[("input", "n"), ("n", "output")], type_check=False)


def f32(*v):
    return np.array(v, np.float32)


# kind → (graph, dt, inputs (T, B=1, *shape), expected outputs (T, *out_shape)); hand derivations in comments
def _cases():
    c = {}
    # LIF, dt/τ = 1e-3/2e-3 = 0.5, r = 2, v_leak = 0, θ = 1, v_reset = −0.1, x = 0.6 every step (r·x = 1.2):
    # v1 = 0 + 0.5·(0 + 1.2) = 0.6; v2 = 0.6 + 0.5·(−0.6 + 1.2) = 0.9; v3 = 0.9 + 0.5·(−0.9 + 1.2) = 1.05 > 1 → spike,
    # v ← −0.1; v4 = −0.1 + 0.5·(0.1 + 1.2) = 0.55: spikes 0, 0, 1, 0
    c["LIF"] = (chain(nir.LIF(tau=f32(2e-3), r=f32(2), v_leak=f32(0), v_threshold=f32(1), v_reset=f32(-0.1)), [1], [1]),
                1e-3, [[0.6]] * 4, [[0], [0], [1], [0]])
    # IF, dt = 1, r = 0.5, θ = 1, x = 0.8: v = 0.4, 0.8, 1.2 → spike, v ← 0; 0.4: spikes 0, 0, 1, 0
    c["IF"] = (chain(nir.IF(r=f32(0.5), v_threshold=f32(1), v_reset=f32(0)), [1], [1]), 1.0, [[0.8]] * 4,
               [[0], [0], [1], [0]])
    # LI, dt/τ = 0.25, v_leak = 1, r = 1, x = 3: v1 = 0.25·(1 + 3) = 1; v2 = 1 + 0.25·(0 + 3) = 1.75;
    # v3 = 1.75 + 0.25·(−0.75 + 3) = 2.3125
    c["LI"] = (chain(nir.LI(tau=f32(4e-3), r=f32(1), v_leak=f32(1)), [1], [1]), 1e-3, [[3.0]] * 3,
               [[1.0], [1.75], [2.3125]])
    # I (NIR's Integrator), dt = 0.1, r = 2, x = 1: v = 0.2, 0.4, 0.6
    c["I"] = (chain(nir.I(r=f32(2)), [1], [1]), 0.1, [[1.0]] * 3, [[0.2], [0.4], [0.6]])
    # CubaLIF, dt = 1, τ_syn = 2, τ_mem = 4, r = 1, v_leak = 0, w_in = 2, θ = 0.5, x = 1:
    # i1 = 0.5·(2 − 0) = 1, v1 = 0.25·1 = 0.25; i2 = 1 + 0.5·(2 − 1) = 1.5, v2 = 0.25 + 0.25·(−0.25 + 1.5) = 0.5625 > 0.5
    # → spike, v ← 0; i3 = 1.5 + 0.5·0.5 = 1.75, v3 = 0.25·1.75 = 0.4375: spikes 0, 1, 0
    c["CubaLIF"] = (chain(nir.CubaLIF(tau_syn=f32(2), tau_mem=f32(4), r=f32(1), v_leak=f32(0), v_threshold=f32(0.5),
                                      v_reset=f32(0), w_in=f32(2)), [1], [1]), 1.0, [[1.0]] * 3, [[0], [1], [0]])
    # CubaLI, same without spikes: v = 0.25, 0.5625, 0.5625 + 0.25·(−0.5625 + 1.75) = 0.859375
    c["CubaLI"] = (chain(nir.CubaLI(tau_syn=f32(2), tau_mem=f32(4), r=f32(1), v_leak=f32(0), w_in=f32(2)), [1], [1]),
                   1.0, [[1.0]] * 3, [[0.25], [0.5625], [0.859375]])
    # Threshold θ = 0.5: [0.2, 0.7] → [0, 1]
    c["Threshold"] = (chain(nir.Threshold(f32(0.5, 0.5)), [2], [2]), 1.0, [[0.2, 0.7]], [[0, 1]])
    # Scale s = [2, −1]: [1, 3] → [2, −3]
    c["Scale"] = (chain(nir.Scale(f32(2, -1)), [2], [2]), 1.0, [[1.0, 3.0]], [[2, -3]])
    # Affine W = [[1, 2], [3, 4]], b = [0.5, −1]: x = [1, 1] → [1 + 2 + 0.5, 3 + 4 − 1] = [3.5, 6]
    c["Affine"] = (chain(nir.Affine(f32(1, 2, 3, 4).reshape(2, 2), f32(0.5, -1)), [2], [2]), 1.0, [[1.0, 1.0]], [[3.5, 6]])
    # Linear, same W: [1, 1] → [3, 7]
    c["Linear"] = (chain(nir.Linear(f32(1, 2, 3, 4).reshape(2, 2)), [2], [2]), 1.0, [[1.0, 1.0]], [[3, 7]])
    # Flatten (2, 2, 1) → 4 in C order
    c["Flatten"] = (chain(nir.Flatten(A([2, 2, 1]), 0, -1), [2, 2, 1], [4]), 1.0,
                    [np.arange(4, dtype=np.float32).reshape(2, 2, 1)], [[0, 1, 2, 3]])
    # Conv2d, input 1..9 as (1, 3, 3), a 2×2 kernel of ones, bias 0.5: window sums 1+2+4+5 = 12, 16, 24, 28, + 0.5
    img = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3)
    c["Conv2d"] = (chain(nir.Conv2d((3, 3), np.ones((1, 1, 2, 2), np.float32), 1, 0, 1, 1, f32(0.5)), [1, 3, 3], [1, 2, 2]),
                   1.0, [img], [[[[12.5, 16.5], [24.5, 28.5]]]])
    # Conv1d, input [1, 2, 3, 4], kernel [1, −1]: 1 − 2, 2 − 3, 3 − 4 = −1 each
    c["Conv1d"] = (chain(nir.Conv1d(4, f32(1, -1).reshape(1, 1, 2), 1, 0, 1, 1, f32(0)), [1, 4], [1, 3]), 1.0,
                   [f32(1, 2, 3, 4).reshape(1, 4)], [[[-1, -1, -1]]])
    # SumPool2d / AvgPool2d 2×2 stride 2 over [[1, 2], [3, 4]]: 10 and 2.5
    four = f32(1, 2, 3, 4).reshape(1, 2, 2)
    c["SumPool2d"] = (chain(nir.SumPool2d(A([2, 2]), A([2, 2]), A([0, 0])), [1, 2, 2], [1, 1, 1]), 1.0, [four], [[[[10]]]])
    c["AvgPool2d"] = (chain(nir.AvgPool2d(A([2, 2]), A([2, 2]), A([0, 0])), [1, 2, 2], [1, 1, 1]), 1.0, [four], [[[[2.5]]]])
    # Input and Output: identity (y = x), here around a Scale of 1
    c["Input"] = c["Output"] = (chain(nir.Scale(f32(1)), [1], [1]), 1.0, [[7.0]], [[7.0]])
    return c


CASES = _cases()
STATEFUL = ("LIF", "IF", "LI", "I", "CubaLIF", "CubaLI")


def test_every_registered_kind_has_a_hand_test():
    assert sorted(CASES) == supported_kinds()


@pytest.mark.parametrize("kind", sorted(CASES))
def test_reference_step_matches_hand_values(kind):
    graph, dt, xs, want = CASES[kind]
    xs = np.asarray(xs, np.float32)[:, None]                     # (T, B = 1, *shape)
    got = simulate(graph, xs, dt).outputs["output"][:, 0]
    np.testing.assert_allclose(got, np.asarray(want, np.float32).reshape(got.shape), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_exported_stream_matches_hand_values(kind, tmp_path):
    graph, dt, xs, want = CASES[kind]
    xs = np.asarray(xs, np.float32)
    export_nir(graph, tmp_path / "n.onnx", dt=dt, steps=20)
    model = Model(tmp_path / "n.onnx")
    assert model.stateful == bool(load_graph(graph).nodes["n"].kind in STATEFUL)
    call = model.stream().step if model.stateful else model.run      # a stateless graph: every step on its own
    got = np.stack([call(x.reshape(1, -1))["output"][0] for x in xs])
    np.testing.assert_allclose(got, np.asarray(want, np.float32).reshape(len(xs), -1), rtol=0, atol=1e-6)


def test_recurrent_loop_carries_the_previous_step():
    """Input → a (W = 1) → int (Integrator r = 1, dt = 1) → rec (W = 0.5, b = 0.25) → back into int; int → Output.
    rec's value one step late starts at its bias 0.25. x = 1: v1 = 1 + 0.25 = 1.25, rec = 0.875;
    v2 = 1.25 + 1 + 0.875 = 3.125, rec = 1.8125; v3 = 3.125 + 1 + 1.8125 = 5.9375."""
    g = nir.NIRGraph(nodes={"input": nir.Input(A([1])), "a": nir.Linear(f32(1).reshape(1, 1)), "int": nir.I(r=f32(1)),
                            "rec": nir.Affine(f32(0.5).reshape(1, 1), f32(0.25)), "output": nir.Output(A([1]))},
                     edges=[("input", "a"), ("a", "int"), ("int", "rec"), ("rec", "int"), ("int", "output")],
                     type_check=False)
    graph = load_graph(g)
    assert graph.recurrent == [("rec", "int")]
    got = simulate(graph, np.ones((3, 1, 1), np.float32), 1.0).outputs["output"][:, 0, 0]
    np.testing.assert_allclose(got, [1.25, 3.125, 5.9375], atol=1e-6)


def test_nested_subgraph_is_flattened():
    """The LIF case inside a sub-graph 'inner' (its own Input/Output) gives the same spikes 0, 0, 1, 0."""
    lif_graph, dt, xs, want = CASES["LIF"]
    inner = nir.NIRGraph(nodes={"input": nir.Input(A([1])), "lif": lif_graph.nodes["n"], "output": nir.Output(A([1]))},
                         edges=[("input", "lif"), ("lif", "output")], type_check=False)
    outer = nir.NIRGraph(nodes={"input": nir.Input(A([1])), "inner": inner, "output": nir.Output(A([1]))},
                         edges=[("input", "inner"), ("inner", "output")], type_check=False)
    graph = load_graph(outer)
    assert "inner.lif" in graph.order
    got = simulate(graph, np.asarray(xs, np.float32)[:, None], dt).outputs["output"][:, 0]
    np.testing.assert_array_equal(got, np.asarray(want, np.float32))


def test_exponential_euler_lif_by_hand(tmp_path):
    """The LIF case with discretisation "exp": a = 1 − e^(−0.5) = 0.3934693; x = 0.6, r·x = 1.2:
    v1 = a·1.2 = 0.4721632; v2 = v1 + a·(1.2 − v1) = 0.4721632 + 0.3934693·0.7278368 = 0.7585447;
    v3 = v2 + a·(1.2 − v2) = 0.7585447 + 0.3934693·0.4414553 = 0.9322438; v4 = 0.9322438 + 0.3934693·0.2677562 = 1.0375976 > 1 → the spike comes one step later than forward Euler's: 0, 0, 0, 1."""
    graph, dt, xs, _ = CASES["LIF"]
    xs = np.asarray(xs, np.float32)[:, None]
    res = simulate(graph, xs, dt, discretisation="exp")
    np.testing.assert_array_equal(res.outputs["output"][:, 0, 0], [0, 0, 0, 1])
    np.testing.assert_allclose(res.states["state_in_1_v"][:3, 0, 0], [0.4721632, 0.7585447, 0.9322438], atol=1e-6)
    out = export_nir(graph, tmp_path / "e.onnx", dt=dt, steps=20, discretisation="exp")
    assert json.loads(out.metadata["zor.nir"])["discretisation"] == "exp"
    stream = Model(tmp_path / "e.onnx").stream()
    np.testing.assert_array_equal([stream.step(x)["output"][0, 0] for x in xs], [0, 0, 0, 1])
