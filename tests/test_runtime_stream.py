"""Stream: state carried between steps, isolation between streams, reset, misuse."""

import threading

import numpy as np
import pytest
from test_runtime_support import build_model
from zor.runtime import Model

from zor.common.errors import StateError

INF = float("inf")


@pytest.fixture(scope="module")
def leaky(tmp_path_factory):
    """[1 (λ = 0.5, θ = 1, p = 0.1) → 1], W = [[1]]: zor.engine.neuron's worked example."""
    path = tmp_path_factory.mktemp("s") / "leaky.onnx"
    return Model(build_model(path, [{"size": 1, "decay": 0.5, "refractory": 0.1}, {"size": 1}],
                             [np.array([[1.0]])], [np.array([1.0]), np.array([-INF])]), device="generic", threads=1)


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("s") / "wide.onnx"
    return Model(build_model(path, [{"size": 8, "decay": 0.7, "refractory": 0.05}, {"size": 6, "decay": 0.4,
                                                                                      "activation": "relu"},
                                    {"size": 3, "activation": "sigmoid"}],
                             [rng.normal(size=(8, 6)), rng.normal(size=(6, 3))],
                             [np.full(8, 0.6), np.full(6, 0.2), np.full(3, -INF)]), device="generic", threads=1)


def test_hand_derived_sequence(leaky):
    s = leaky.stream()
    x = np.array([[0.8]], np.float32)
    # c = 0.8 (kept) → c = 0.4 + 0.8 = 1.2 > 1 (spike, g = 1.2, reset −0.1) → c = −0.05 + 0.8 = 0.75
    outs = [float(s.step(x)["output"][0, 0]) for _ in range(3)]
    np.testing.assert_allclose(outs, [0.0, 1.2, 0.0], atol=1e-6)
    np.testing.assert_allclose(s.state["state_in_0"], [[0.75]], rtol=1e-6)
    assert s.steps == 3
    assert "state_out_0" not in s.step(x)                      # the stream keeps the state itself


def test_reset_returns_to_the_initial_state(leaky):
    s = leaky.stream()
    x = np.array([[0.8]], np.float32)
    first = s.step(x)["output"]
    s.step(x)
    s.reset()
    assert s.state == {} and s.steps == 0
    np.testing.assert_array_equal(s.step(x)["output"], first)


def test_streams_are_isolated(wide):
    rng = np.random.default_rng(2)
    xa = rng.random((5, 2, 8), dtype=np.float32)
    xb = rng.random((5, 2, 8), dtype=np.float32) * 2
    alone_a = wide.stream()
    ref_a = [alone_a.step(x)["output"] for x in xa]
    alone_b = wide.stream()
    ref_b = [alone_b.step(x)["output"] for x in xb]
    a, b = wide.stream(), wide.stream()
    for t in range(5):                                            # interleaved steps
        np.testing.assert_array_equal(a.step(xa[t])["output"], ref_a[t])
        np.testing.assert_array_equal(b.step(xb[t])["output"], ref_b[t])
    assert not np.array_equal(a.state["state_in_0"], b.state["state_in_0"])


def test_streams_in_threads_are_isolated(wide):
    rng = np.random.default_rng(3)
    xs = rng.random((4, 6, 3, 8), dtype=np.float32)              # 4 threads × 6 steps × batch 3
    refs = []
    for k in range(4):
        s = wide.stream()
        refs.append([s.step(x)["output"] for x in xs[k]])
    results = [None] * 4

    def work(k):
        s = wide.stream()
        results[k] = [s.step(x)["output"] for x in xs[k]]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        for got, want in zip(results[k], refs[k]):
            np.testing.assert_array_equal(got, want)


def test_set_state_and_spikes(wide):
    s = wide.stream()
    state = {"state_in_0": np.full((1, 8), 0.5, np.float32), "state_in_1": np.zeros((1, 6), np.float32)}
    s.set_state(state)
    x = np.full((1, 8), 0.2, np.float32)
    out = s.step(x, spikes=True)
    # layer 0: c = 0.7·0.5 + 0.2 = 0.55 < θ = 0.6 everywhere: no spikes, nothing reaches layer 1
    np.testing.assert_array_equal(out["spikes_0"], np.zeros((1, 8), bool))
    np.testing.assert_allclose(s.state["state_in_0"], np.full((1, 8), 0.55), rtol=1e-6)
    assert out["spike_rates"][0] == 0.0


def test_stream_misuse_is_a_state_error(wide, tmp_path):
    s = wide.stream()
    s.step(np.zeros((2, 8), np.float32))
    with pytest.raises(StateError, match="expected a batch of 2 rows .* got 3"):
        s.step(np.zeros((3, 8), np.float32))
    s.reset()
    s.step(np.zeros((3, 8), np.float32))                          # after reset any batch size starts anew
    with pytest.raises(StateError, match="a stream carries its state itself"):
        s.step({"input": np.zeros((3, 8), np.float32), "state_in_0": np.zeros((3, 8), np.float32)})
    with pytest.raises(StateError, match="expected exactly the keys"):
        s.set_state({"state_in_0": np.zeros((1, 8), np.float32)})
    with pytest.raises(StateError, match=r"expected shape \(1, 6\)"):
        s.set_state({"state_in_0": np.zeros((1, 8), np.float32), "state_in_1": np.zeros((1, 5), np.float32)})
    stateless = Model(build_model(tmp_path / "sl.onnx", [{"size": 2}, {"size": 1}], [np.ones((2, 1))],
                                  [np.zeros(2), np.array([-INF])]), device="generic", threads=1)
    with pytest.raises(StateError, match=r"stateless .*expected a stateful model"):
        stateless.stream()
