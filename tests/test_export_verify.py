"""Verification: stateful step parity over T steps, ties, and failures it must catch."""

import numpy as np
import onnx
import pytest
import torch
from zor.export import to_onnx, verify
from zor.export.verify import compare_runs, make_inputs, random_state

from zor import Layer, Zor
from zor.common import format as fmt
from zor.common.errors import VerificationError


def _stateful() -> Zor:
    return Zor([Layer(20, decay=0.5), Layer(12, decay=0.8, refractory=0.1, min_charge=0.0),
                Layer(20, activation_function="sigmoid")], seed=3, device="cpu")


def _set_initializer(proto: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    for init in proto.graph.initializer:
        if init.name == name:
            init.CopyFrom(onnx.numpy_helper.from_array(value.astype(np.float32), name))
            return
    raise KeyError(name)


def test_stateful_parity_over_many_steps_from_zero_and_random_state():
    model = _stateful()
    rep = verify(model, to_onnx(model), batch=8, steps=60)
    assert rep["passed"] and rep["runs"] == ["from_zero", "from_random"] and rep["steps"] == 60
    assert rep["outputs"]["output"]["max_abs_diff"] <= 1e-5
    assert set(rep["outputs"]) == {"output", "state_out_0", "state_out_1"}
    assert rep["rows_diverged_at_ties"] == 0                         # seeded: no charge lands on a threshold
    for row in rep["layers"]:
        assert row["spike_agreement"] == 1.0 and row["mismatches"] == 0 and row["ties"] == 0
        assert row["compared"] == 2 * 60 * 8 * model.layers[row["layer"]].size   # every unit, step, run


def test_step_by_step_state_matches_the_engine_including_a_random_start():
    model = _stateful()
    proto = to_onnx(model)
    xs = make_inputs(model, 3, 10, seed=5)
    init = random_state(model, 3, seed=6)
    comp = compare_runs(model, proto, [("r", xs, init)], collect=True)
    assert not comp.failures
    # the engine's own stepping, by hand, gives the same outputs the comparison collected
    model.set_state([torch.from_numpy(init[0]), torch.from_numpy(init[1]), None])
    for t in range(10):
        out, _ = model.run(torch.from_numpy(xs[t]))
        np.testing.assert_allclose(comp.candidate[t], out.numpy(), atol=1e-5)


def test_verification_restores_the_models_carried_state():
    model = _stateful()
    model.run(torch.rand(2, 20))
    before = [None if s is None else s.clone() for s in model.state]
    verify(model, to_onnx(model), batch=4, steps=3)
    after = model.state
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(before, after))


def test_a_threshold_moved_far_is_caught_with_a_report():
    model = Zor([Layer(10), Layer(8), Layer(10)], seed=0, device="cpu")
    proto = to_onnx(model)
    _set_initializer(proto, fmt.threshold(0), np.full(10, 0.5))       # engine has θ0 = 0
    with pytest.raises(VerificationError, match="layer 0: .* spike mismatches") as err:
        verify(model, proto, batch=16)
    rep = err.value.report
    assert rep["passed"] is False and rep["layers"][0]["mismatches"] > 0
    assert any("output" in f for f in rep["failures"])               # every failure collected


def test_a_wrong_weight_is_caught_on_the_output():
    model = Zor([Layer(6), Layer(4)], seed=0, device="cpu")
    proto = to_onnx(model)
    w = model.weights[0].detach().numpy().copy()
    w[0, 0] += 1e-3
    _set_initializer(proto, fmt.weight(0), w)
    with pytest.raises(VerificationError, match=r"output: max abs diff .* past tolerance 1e-05"):
        verify(model, proto, batch=8)


def test_output_names_are_checked_first():
    model = Zor([Layer(3), Layer(2)], seed=0, device="cpu")
    proto = to_onnx(model)
    proto.graph.output[0].name = "renamed"
    proto.graph.node[-1].output[0] = "renamed"
    with pytest.raises(VerificationError, match=r"output names: missing \['output'\]"):
        verify(model, proto)


def test_an_exact_tie_is_counted_apart_and_not_a_failure():
    """Engine θ0 = 0.5 and input 0.5⁺ (next float up): the engine spikes; the file's θ0 is
    0.5⁺ itself, so onnxruntime does not. |c − θ| ≈ 6e-8 ≤ tie_tol: a tie, and the row is
    left out downstream."""
    model = Zor([Layer(2, threshold=0.5), Layer(2)], seed=0, device="cpu")
    proto = to_onnx(model)
    up = np.nextafter(np.float32(0.5), np.float32(1.0))
    _set_initializer(proto, fmt.threshold(0), np.array([up, 0.5], np.float32))
    x = np.array([[[up, 0.9], [0.1, 0.9]]], np.float32)                 # (T=1, B=2, n=2)
    comp = compare_runs(model, proto, [("tie", x, None)])
    assert comp.layers[0].ties == 1 and comp.layers[0].mismatches == 0
    assert comp.rows_diverged == 1
    assert comp.outputs["output"].n == 2                              # only the undisturbed row compared


def test_the_same_flip_far_from_the_threshold_is_a_mismatch():
    model = Zor([Layer(2, threshold=0.5), Layer(2)], seed=0, device="cpu")
    proto = to_onnx(model)
    _set_initializer(proto, fmt.threshold(0), np.array([0.7, 0.5], np.float32))
    x = np.array([[[0.6, 0.9]]], np.float32)                           # engine spikes at 0.6 > 0.5, file not
    comp = compare_runs(model, proto, [("far", x, None)])
    assert comp.layers[0].mismatches == 1 and comp.layers[0].ties == 0


def test_output_tolerance_is_relative_for_large_outputs():
    """Logit-sized outputs (|o| ~ 30) differ by float32 rounding ~ 1e-5·|o|: not a failure;
    the same difference on an output within ±1 is."""
    from zor.export.verify import ATOL, _Acc

    big, small = _Acc(), _Acc()
    o = np.array([30.0, -25.0], np.float32)
    big.add(np.array([2e-4, 1e-4], np.float32), np.float32(ATOL) * np.maximum(np.float32(1), np.abs(o)))
    small.add(np.array([2e-4], np.float32), np.float32(ATOL) * np.maximum(np.float32(1), np.abs(np.float32([0.5]))))
    assert big.over == 0 and small.over == 1


def test_translate_models_are_judged_on_next_token_agreement():
    from zor.export.calibration import metric_kind

    assert metric_kind({"name": "translate"}, 4056, 1000, None) == ("accuracy", "float_predictions")
