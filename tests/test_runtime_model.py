"""Model: hand-derived outputs of tiny hand-built files, metadata, API shape."""

import json

import numpy as np
import pytest
from test_runtime_support import build_model
from zor.devices import get
from zor.runtime import Model, TensorInfo

INF = float("inf")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """[2 → 2 (relu) → 1]: θ0 = 0.5, W0 = [[1, 2], [3, 4]], θ1 = [1, 0], W1 = [[1], [−1]]."""
    path = tmp_path_factory.mktemp("m") / "tiny.onnx"
    return build_model(
        path,
        [{"size": 2}, {"size": 2, "activation": "relu"}, {"size": 1}],
        [np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.0], [-1.0]])],
        [np.array([0.5, 0.5]), np.array([1.0, 0.0]), np.array([-INF])],
        task={"name": "generic", "input": {"shape": [2]}, "output": {"shape": [1]}},
    )


@pytest.fixture(scope="module")
def leaky(tmp_path_factory):
    """[1 (stateful: λ = 0.5, θ = 1, p = 0.1) → 1 output], W = [[1]] (zor.engine.neuron's example)."""
    path = tmp_path_factory.mktemp("m") / "leaky.onnx"
    return build_model(
        path,
        [{"size": 1, "decay": 0.5, "refractory": 0.1}, {"size": 1}],
        [np.array([[1.0]])],
        [np.array([1.0]), np.array([-INF])],
    )


def test_hand_derived_outputs_and_spikes(tiny):
    m = Model(tiny, device="generic", threads=1)
    x = np.array([[0.4, 1.0], [0.6, 0.2]], np.float32)
    # row 0: c0 = [0.4, 1.0], s0 = [0, 1], h1 = [0, 1]·W0 = [3, 4], s1 = [1, 1], out = 3 − 4 = −1
    # row 1: c0 = [0.6, 0.2], s0 = [1, 0], h1 = [0.6, 1.2], s1 = [0, 1], out = 0 − 1.2 = −1.2
    out = m.run(x, spikes=True)
    np.testing.assert_allclose(out["output"], [[-1.0], [-1.2]], rtol=1e-6)
    np.testing.assert_array_equal(out["spikes_0"], [[False, True], [True, False]])
    np.testing.assert_array_equal(out["spikes_1"], [[True, True], [False, True]])
    np.testing.assert_allclose(out["spike_rates"], [0.5, 0.75, 1.0])
    assert out["spikes_0"].dtype == np.bool_


def test_call_dict_input_float64_and_extra_outputs(tiny):
    m = Model(tiny, device="generic", threads=1)
    x = np.array([[0.4, 1.0]])                                    # float64 is accepted, run as float32
    np.testing.assert_allclose(m(x), [[-1.0]], rtol=1e-6)
    out = m.run({"input": x}, outputs=["charge_1"])
    assert set(out) == {"output", "charge_1"}
    np.testing.assert_allclose(out["charge_1"], [[3.0, 4.0]], rtol=1e-6)
    one = m.run({"input": x}, outputs="charge_1")               # one name as a string, not its letters
    assert set(one) == {"output", "charge_1"}


def test_description(tiny):
    m = Model(tiny, device="x86-64-avx2", threads=1)
    assert m.inputs == [TensorInfo("input", (None, 2), np.float32)]
    assert [t.name for t in m.outputs][:1] == ["output"]
    assert {"spikes_0", "charge_2"} <= {t.name for t in m.outputs}
    assert str(m.inputs[0]) == "input (B, 2) float32"
    assert m.sizes == [2, 2, 1] and m.task == "generic" and m.precision == "float32" and not m.stateful
    assert m.metadata.layers[1]["activation"] == "relu"
    assert m.metadata.layers[2]["threshold"]["min"] == "-inf"
    assert m.profile is get("x86-64-avx2") and m.detection is None
    assert m.providers == ["CPUExecutionProvider"]
    assert "tiny.onnx" in repr(m)


def test_auto_device_uses_detection(tiny):
    m = Model(tiny, threads=1)
    assert m.detection is not None and m.profile is m.detection.profile and m.detection.reason


def test_profile_providers_missing_here_fall_back_to_cpu(tiny):
    m = Model(tiny, device="jetson-orin-nano", threads=1)
    assert m.providers == ["CPUExecutionProvider"]
    assert any("CUDAExecutionProvider" in n for n in m.notes)


def test_session_follows_the_profile():
    from zor.runtime.session import session_options

    opts = session_options(get("rpi3"), threads=None)
    assert opts.intra_op_num_threads == 4 and opts.enable_cpu_mem_arena is False
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    opts = session_options(get("x86-64-avx2"), threads=2)
    assert opts.intra_op_num_threads == 2 and opts.enable_cpu_mem_arena is True
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "1"


def test_stateful_run_is_one_step_from_the_initial_state(leaky):
    m = Model(leaky, device="generic", threads=1)
    assert m.stateful and [s.input for s in m.metadata.state] == ["state_in_0"]
    x = np.array([[0.8]], np.float32)
    a, b = m.run(x), m.run(x)                                    # run() carries nothing between calls
    np.testing.assert_allclose(a["output"], [[0.0]])              # c = 0.8 < θ: nothing passes
    np.testing.assert_allclose(a["state_out_0"], [[0.8]], rtol=1e-6)
    np.testing.assert_array_equal(a["output"], b["output"])
    # from a given state: c = 0.5·0.8 + 0.8 = 1.2 > 1 → output 1.2, reset to −0.1
    c = m.run({"input": x, "state_in_0": a["state_out_0"]})
    np.testing.assert_allclose(c["output"], [[1.2]], rtol=1e-6)
    np.testing.assert_allclose(c["state_out_0"], [[-0.1]], rtol=1e-6)


def test_min_charge_and_no_reset_variants(tmp_path):
    path = build_model(tmp_path / "v.onnx",
                       [{"size": 2, "decay": 1.0, "min_charge": 0.3, "reset_on_spike": False, "refractory": 0.25},
                        {"size": 1}],
                       [np.array([[1.0], [1.0]])], [np.array([1.0, 1.0]), np.array([-INF])])
    m = Model(path, device="generic", threads=1)
    out = m.run(np.array([[0.2, 1.5]], np.float32))
    # unit 0: c = 0.2 < min_charge 0.3 and no spike → 0; unit 1: spikes, keeps c − p = 1.25
    np.testing.assert_allclose(out["state_out_0"], [[0.0, 1.25]], rtol=1e-6)
    np.testing.assert_allclose(out["output"], [[1.5]], rtol=1e-6)


def test_initial_state_from_metadata(tmp_path):
    state = [{"layer": 0, "size": 1, "input": "state_in_0", "output": "state_out_0", "initial": 0.6}]
    path = build_model(tmp_path / "init.onnx", [{"size": 1, "decay": 0.5}, {"size": 1}], [np.array([[1.0]])],
                       [np.array([0.3]), np.array([-INF])], metadata={"zor.state": json.dumps(state)})
    m = Model(path, device="generic", threads=1)
    out = m.run(np.array([[0.1]], np.float32), outputs=["charge_0"])
    # a fresh state is 0.6, not 0: c = 0.5·0.6 + 0.1 = 0.4 > θ = 0.3 → output 0.4
    np.testing.assert_allclose(out["charge_0"], [[0.4]], rtol=1e-6)
    np.testing.assert_allclose(out["output"], [[0.4]], rtol=1e-6)
