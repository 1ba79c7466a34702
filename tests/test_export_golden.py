"""Golden tiny models (tests/golden/*.zor, hand-set weights): exported outputs equal hand-derived values."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from zor.export import to_onnx
from zor.export.session import Stepper

from zor import Zor
from zor.common import format as fmt

GOLDEN = Path(__file__).parent / "golden"


def load(name: str) -> Zor:
    return Zor.load(GOLDEN / f"{name}.zor", device="cpu")


def test_dense_golden_by_hand():
    """θ0 = 0.5, W0 = [[1,0],[0,1],[1,-1]], θ1 = (0, 0.25) relu, W1 = [[1,2],[-1,0.5]], sigmoid output.

    x = (0.2, 0.7, 1.0): s0 = (0,1,1), a0 = (0, 0.7, 1) → c1 = (1, −0.3), s1 = (1, 0),
    a1 = (1, 0) → c2 = (1, 2) → output = σ(1, 2) = (0.7310586, 0.8807971).
    x = (0.6, 0.1, 0.4): s0 = (1,0,0), a0 = (0.6,0,0) → c1 = (0.6, 0), s1 = (1, 0) →
    c2 = (0.6, 1.2) → output = (0.6456563, 0.7685248).
    """
    st = Stepper(to_onnx(load("dense")))
    x = np.array([[0.2, 0.7, 1.0], [0.6, 0.1, 0.4]], np.float32)
    st.reset(2)
    out = st.step(x)
    np.testing.assert_allclose(out["output"], [[0.7310586, 0.8807971], [0.6456563, 0.7685248]], atol=1e-6)
    np.testing.assert_array_equal(out["spikes_0"], [[False, True, True], [True, False, False]])
    np.testing.assert_array_equal(out["spikes_1"], [[True, False], [True, False]])
    np.testing.assert_allclose(out["charge_1"], [[1.0, -0.3], [0.6, 0.0]], atol=1e-6)
    np.testing.assert_array_equal(out["spikes_2"], np.ones((2, 2), bool))   # θ_L = −inf: always


def test_stateful_golden_by_hand():
    """λ = 0.5, p = 0.1, θ = 1, W = 2; inputs 0.8, 0.8, 0.8 (neuron.py's example, one step more):

    c = 0.8 (kept) → c = 0.5·0.8 + 0.8 = 1.2 (spike, output 2.4, reset to −0.1)
    → c = 0.5·(−0.1) + 0.8 = 0.75 (no spike). Outputs 0, 2.4, 0; states 0.8, −0.1, 0.75.
    """
    proto = to_onnx(load("stateful"))
    assert [i.name for i in proto.graph.input] == ["input", "state_in_0"]
    st = Stepper(proto)
    st.reset(1)
    outs, states = [], []
    for _ in range(3):
        o = st.step(np.array([[0.8]], np.float32))
        outs.append(float(o["output"][0, 0]))
        states.append(float(o["state_out_0"][0, 0]))
    np.testing.assert_allclose(outs, [0.0, 2.4, 0.0], atol=1e-6)
    np.testing.assert_allclose(states, [0.8, -0.1, 0.75], atol=1e-6)


def test_floor_and_no_reset_golden_by_hand():
    """λ = 0.5, min_charge 0, reset_on_spike False, p = 0.25, θ = 1, W = I.

    unit A: x = 1.2 → spike, carries c − p = 0.95; x = 0.1 → c = 0.575, no spike, kept.
    unit B: x = −0.3 → no spike, below the floor → 0; x = 0.4 → c = 0.4, kept.
    outputs: (1.2, 0) then (0, 0).
    """
    st = Stepper(to_onnx(load("floor")))
    st.reset(1)
    o1 = st.step(np.array([[1.2, -0.3]], np.float32))
    np.testing.assert_allclose(o1["state_out_0"], [[0.95, 0.0]], atol=1e-6)
    np.testing.assert_allclose(o1["output"], [[1.2, 0.0]], atol=1e-6)
    o2 = st.step(np.array([[0.1, 0.4]], np.float32))
    np.testing.assert_allclose(o2["state_out_0"], [[0.575, 0.4]], atol=1e-6)
    np.testing.assert_allclose(o2["output"], [[0.0, 0.0]], atol=1e-6)


def test_conv_golden_by_hand():
    """Map [[1,2,3],[4,5,6],[7,8,9]], kernel [[1,0],[0,1]] → (6, 8, 12, 14); θ = 10 → spikes
    (0, 0, 1, 1); W = ones → output = 12 + 14 = 26."""
    proto = to_onnx(load("conv"))
    assert "Conv" in {n.op_type for n in proto.graph.node}
    st = Stepper(proto)
    st.reset(1)
    out = st.step(np.arange(1, 10, dtype=np.float32)[None])
    np.testing.assert_allclose(out["charge_1"], [[6, 8, 12, 14]], atol=1e-6)
    np.testing.assert_array_equal(out["spikes_1"], [[False, False, True, True]])
    np.testing.assert_allclose(out["output"], [[26.0]], atol=1e-5)
    th = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}[fmt.threshold(1)]
    np.testing.assert_array_equal(th, np.full(4, 10.0, np.float32))       # per channel → per unit


@pytest.mark.parametrize("name", ["dense", "stateful", "floor", "conv"])
def test_golden_checkpoints_still_load_and_verify(name):
    from zor.export import verify

    m = load(name)
    rep = verify(m, to_onnx(m), batch=4, steps=5)
    assert rep["passed"] and rep["outputs"]["output"]["max_abs_diff"] <= 1e-5
