"""The int8 gate in integers: q = Q(c·float(c > θ)) becomes Q(c)·int8(c > θ) where the zero point is 0.

Hand-derived cases on one-layer graphs (u8 and s8, saturation, a unit that did not
spike), hypothesis over charges, thresholds and scales (the moved graph gives the same
integers as the float gate), the cases that must stay as they are (zero point ≠ 0,
opset 13, an activation between gate and Q), and a real export: the report names the
moved gate, the runtime accepts the file, and its outputs equal the graph before the
move bit for bit.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from zor.devices import get as get_profile
from zor.export import export
from zor.export.calibration import load_calibration
from zor.export.quantize import calibration_feeds, gate_quantized, quantize_graph
from zor.runtime import Model

from zor import Layer, Zor
from zor.common import format as fmt
from zor.tasks.datasets import few_shot, load_bundled

N = 4


def _gate_graph(theta, scale: float, zero_point, opset: int = 17, between: str | None = None) -> onnx.ModelProto:
    """c → Greater(θ) → Cast(float) → Mul → [between] → QuantizeLinear(scale, zero point) → ``q`` (and ``spikes``)."""
    g = "gated" if between is None else "pre"
    nodes = [helper.make_node("Greater", ["c", "theta"], ["spikes"], name="layer0.spike"),
             helper.make_node("Cast", ["spikes"], ["spiked_f32"], name="layer0.spike_float", to=TensorProto.FLOAT),
             helper.make_node("Mul", ["c", "spiked_f32"], [g], name="layer0.gate")]
    if between is not None:
        nodes.append(helper.make_node(between, ["pre"], ["gated"], name="layer0.activation"))
    nodes.append(helper.make_node("QuantizeLinear", ["gated", "scale", "zp"], ["q"], name="gated_0_QuantizeLinear"))
    zp = np.asarray(zero_point)
    graph = helper.make_graph(
        nodes, "gate", [helper.make_tensor_value_info("c", TensorProto.FLOAT, [None, N])],
        [helper.make_tensor_value_info("q", helper.np_dtype_to_tensor_dtype(zp.dtype), [None, N]),
         helper.make_tensor_value_info("spikes", TensorProto.BOOL, [None, N])],
        [numpy_helper.from_array(np.asarray(theta, np.float32), "theta"),
         numpy_helper.from_array(np.array(scale, np.float32), "scale"), numpy_helper.from_array(zp, "zp")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _run(model: onnx.ModelProto, c: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"c": np.asarray(c, np.float32)})


@pytest.mark.parametrize("zero_point, expected", [
    (np.uint8(0), [[5, 0, 0, 3]]),      # u8: −0.2/0.1 = −2 saturates at 0
    (np.int8(0), [[5, -2, 0, 3]]),      # s8 keeps −2
])
def test_hand_derived_gate_in_integers(zero_point, expected):
    """c = (0.5, −0.2, 1.0, 0.3), θ = (0.4, −0.5, 2.0, 0.1), s_a = 0.1: spikes (1, 1, 0, 1);
    q = round(c / 0.1) where a unit spiked, 0 where not (unit 2: c = 1.0 ≤ 2.0)."""
    model = _gate_graph([0.4, -0.5, 2.0, 0.1], 0.1, zero_point)
    moved, names = gate_quantized(model)
    assert names == ["layer0.gate"]
    ops = [(n.op_type, n.name) for n in moved.graph.node]
    assert ops == [("Greater", "layer0.spike"), ("QuantizeLinear", "gated_0_QuantizeLinear"),
                   ("Cast", "layer0.spike_" + ("u8" if zero_point.dtype == np.uint8 else "s8")), ("Mul", "layer0.gate")]
    cast = next(n for n in moved.graph.node if n.op_type == "Cast")
    assert cast.attribute[0].i == helper.np_dtype_to_tensor_dtype(zero_point.dtype)
    c = [[0.5, -0.2, 1.0, 0.3]]
    q, spikes = _run(moved, c)
    assert q.dtype == zero_point.dtype
    np.testing.assert_array_equal(q, expected)
    np.testing.assert_array_equal(spikes, [[True, True, False, True]])
    np.testing.assert_array_equal(_run(model, c)[0], expected)       # the float gate gives the same integers


@settings(max_examples=60, deadline=None)
@given(c=st.lists(st.floats(-50, 50, width=32), min_size=3 * N, max_size=3 * N),
       theta=st.lists(st.floats(-5, 5, width=32), min_size=N, max_size=N),
       scale=st.floats(0.0009765625, 2.0, width=32), signed=st.booleans())
def test_moved_gate_gives_the_same_integers(c, theta, scale, signed):
    """Any charges, thresholds and scale: Q(c)·int8(s) equals Q(c·float(s)) element for element,
    saturation included, and the spikes are untouched."""
    model = _gate_graph(theta, scale, np.int8(0) if signed else np.uint8(0))
    moved, names = gate_quantized(model)
    assert names == ["layer0.gate"]
    x = np.asarray(c, np.float32).reshape(3, N)
    for before, after in zip(_run(model, x), _run(moved, x)):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("case", ["zero_point", "opset13", "relu_between"])
def test_gates_that_must_stay_float(case):
    """A zero point of 28 (Q(0) = 28 ≠ 0·q), opset 13 (no Mul on 8-bit integers), an activation between
    gate and Q: the graph comes back unchanged."""
    model = {"zero_point": lambda: _gate_graph([0.1] * N, 0.1, np.uint8(28)),
             "opset13": lambda: _gate_graph([0.1] * N, 0.1, np.uint8(0), opset=13),
             "relu_between": lambda: _gate_graph([0.1] * N, 0.1, np.uint8(0), between="Relu")}[case]()
    moved, names = gate_quantized(model)
    assert names == [] and moved is model


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 784-32-784 autoencoder trained briefly on 10 bundled images, saved; the bundled training images."""
    torch.manual_seed(0)
    x, y = load_bundled("train")
    net = Zor([Layer(784), Layer(32), Layer(784, activation_function="sigmoid")], seed=0, device="cpu",
              task={"name": "reconstruct"})
    net.fit(x[few_shot(y, 1)], steps=60, batch_size=10, progress=False)
    folder = tmp_path_factory.mktemp("int8gate")
    net.save(folder / "m.zor")
    return folder, net, x


def test_export_moves_the_input_gate_and_keeps_every_output(small):
    """Layer 0's gated pixels are ≥ 0 (zero point 0 in u8): its gate runs in integers; the file passes the
    runtime's checks, and the graph before the move gives the same outputs, spikes and charges bit for bit."""
    folder, net, x = small
    res = export(folder / "m.zor", folder / "m-int8.onnx", quantize="int8", calibration=x, device="x86-64-avx512-vnni")
    assert res.quantization["integer_gates"] == ["layer0.gate"]
    proto = onnx.load(str(folder / "m-int8.onnx"))
    mul = next(n for n in proto.graph.node if n.name == "layer0.gate")
    assert [p.op_type for p in proto.graph.node if mul.input[0] in p.output] == ["QuantizeLinear"]
    model = Model(folder / "m-int8.onnx")                    # the runtime's operator allowlist accepts it
    rows = x[1::2][:40]
    out = model.run(rows, spikes=True, outputs=[fmt.charge(i) for i in range(3)])

    export(folder / "m.zor", folder / "m-float.onnx")
    float_proto = onnx.load(str(folder / "m-float.onnx"))
    calib = load_calibration(x, 784)
    feeds, _ = calibration_feeds(net, float_proto, calib, steps=1)
    plain = quantize_graph(float_proto, feeds, get_profile("x86-64-avx512-vnni").int8)
    assert [n.name for n in plain.graph.node if n.op_type == "Mul"] == ["layer0.gate", "layer1.gate"]
    sess = ort.InferenceSession(plain.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [fmt.OUTPUT] + [fmt.spikes(i) for i in range(3)] + [fmt.charge(i) for i in range(3)]
    for name, value in zip(names, sess.run(names, {fmt.INPUT: rows})):
        np.testing.assert_array_equal(out[name], value, err_msg=name)
