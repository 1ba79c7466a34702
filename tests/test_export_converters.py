"""The converter registry and a round trip through onnxruntime for every registered kind."""

import numpy as np
import onnx
import pytest
import torch
from zor.export import to_onnx, verify
from zor.export.builder import OPSET
from zor.export.registry import REGISTRY, converter_for, kind_of, supported_kinds
from zor.export.session import Stepper

from zor import Conv, Layer, Zor
from zor.common import format as fmt
from zor.common.errors import UnsupportedLayerError


def _dense(stateful: bool, act: str) -> Zor:
    kw = dict(decay=0.6, refractory=0.2, min_charge=-0.5) if stateful else {}
    return Zor([Layer(6, **kw), Layer(5, activation_function=act, **kw), Layer(4, activation_function=act)],
               seed=1, device="cpu")


def _conv(stateful: bool, act: str) -> Zor:
    kw = dict(decay=0.6, refractory=0.2) if stateful else {}
    return Zor([Layer(2 * 6 * 6, shape=(2, 6, 6)), Conv(3, kernel_size=3, stride=2, padding=1,
                                                         activation_function=act, **kw),
                Conv(2, kernel_size=2, **kw), Layer(4, activation_function=act)], seed=1, device="cpu")


# Every registered kind needs an entry here: test_every_registered_kind_has_a_round_trip fails otherwise.
MODEL_FOR_KIND = {"dense": _dense, "conv": _conv}


def test_every_registered_kind_has_a_round_trip():
    missing = sorted(set(supported_kinds()) - set(MODEL_FOR_KIND))
    assert not missing, f"registered layer kinds without a round-trip test: {missing}"


@pytest.mark.parametrize("kind", sorted(MODEL_FOR_KIND))
@pytest.mark.parametrize("stateful", [False, True])
@pytest.mark.parametrize("act", ["identity", "sigmoid", "tanh", "relu"])
def test_round_trip_through_onnxruntime(kind, stateful, act):
    model = MODEL_FOR_KIND[kind](stateful, act)
    assert kind in {kind_of(layer) for layer in model.layers}
    proto = to_onnx(model)
    rep = verify(model, proto, batch=5, steps=4 if stateful else 1)
    assert rep["passed"], rep["failures"]
    assert rep["outputs"]["output"]["max_abs_diff"] <= 1e-5
    assert all(row["spike_agreement"] == 1.0 for row in rep["layers"])
    assert sorted(rep["runs"]) == (["from_random", "from_zero"] if stateful else ["from_zero"])


def test_graph_is_valid_onnx_with_dynamic_batch_and_threshold_initializers():
    model = _dense(True, "relu")
    proto = to_onnx(model)
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    assert proto.opset_import[0].version >= 17 and OPSET >= 17
    names = {i.name for i in proto.graph.initializer}
    assert {fmt.threshold(i) for i in range(3)} <= names and {fmt.weight(0), fmt.weight(1)} <= names
    for vi in list(proto.graph.input) + list(proto.graph.output):
        assert vi.type.tensor_type.shape.dim[0].dim_param == "batch"
    st = Stepper(proto)
    for batch in (1, 7):
        st.reset(batch)
        assert st.step(np.zeros((batch, 6), np.float32))["output"].shape == (batch, 4)


def test_graph_follows_the_format_contract():
    proto = to_onnx(_dense(True, "identity"))
    assert [i.name for i in proto.graph.input] == ["input", "state_in_0", "state_in_1"]
    outs = [o.name for o in proto.graph.output]
    assert outs[:3] == ["output", "state_out_0", "state_out_1"]
    assert {fmt.spikes(i) for i in range(3)} | {fmt.charge(i) for i in range(3)} <= set(outs)
    spikes = {o.name: o.type.tensor_type.elem_type for o in proto.graph.output}
    assert spikes["spikes_1"] == onnx.TensorProto.BOOL


def test_hidden_layer_nodes_are_greater_cast_mul_activation_matmul():
    proto = to_onnx(Zor([Layer(3), Layer(2, activation_function="tanh"), Layer(2)], seed=0, device="cpu"))
    ops = [(n.name, n.op_type) for n in proto.graph.node]
    order = [op for name, op in ops if name.startswith("layer1.") or name.startswith("connection1.")]
    assert order == ["Greater", "Cast", "Mul", "Tanh", "MatMul"]   # g = c · float(c > θ)
    last = [op for name, op in ops if name.startswith("layer2.")]
    assert last == ["Greater", "Identity"]                     # identity output: f_L(c) = c


def test_unknown_kind_raises_listing_supported_kinds():
    class Spiral:
        kind = "spiral"
        size = 3

    with pytest.raises(UnsupportedLayerError, match=r"'spiral'.*supported kinds are conv, dense"):
        converter_for(Spiral())


def test_unknown_kind_inside_a_model_raises_not_skips(monkeypatch):
    model = Zor([Layer(3), Layer(2)], seed=0, device="cpu")
    monkeypatch.delitem(REGISTRY, "dense")
    with pytest.raises(UnsupportedLayerError, match="no ONNX converter for layer kind 'dense'"):
        to_onnx(model)


def test_registering_a_kind_twice_raises():
    from zor.export.registry import register

    with pytest.raises(ValueError, match="already registered"):
        register("dense")(lambda ctx: "x")


def test_threshold_minus_inf_output_always_spikes_and_plus_inf_never():
    model = Zor([Layer(2), Layer(2)], seed=0, device="cpu")
    with torch.no_grad():
        model.threshold(0).copy_(torch.tensor([float("inf"), -float("inf")]))
    st = Stepper(to_onnx(model))
    st.reset(1)
    out = st.step(np.array([[1e30, -1e30]], np.float32))
    np.testing.assert_array_equal(out["spikes_0"], [[False, True]])
    np.testing.assert_array_equal(out["spikes_1"], [[True, True]])
