"""benchmarks/int8_profile.py: the prefix graphs it times, the tensor types it declares, the batch-1 bound."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from benchmarks.int8_profile import _elem_types, bound, prefixes, product_forms
from zor.common import format as fmt


def _gate_chain() -> onnx.ModelProto:
    """input → Greater(0.5) → Cast(u8) → QuantizeLinear(input, 0.1, 0) → Mul: the integer gate of an int8 export."""
    nodes = [helper.make_node("Greater", [fmt.INPUT, "theta"], ["s"], name="layer0.spike"),
             helper.make_node("Cast", ["s"], ["s_u8"], name="layer0.spike_u8", to=TensorProto.UINT8),
             helper.make_node("QuantizeLinear", [fmt.INPUT, "scale", "zp"], ["q"], name="q"),
             helper.make_node("Mul", ["q", "s_u8"], ["gated"], name="layer0.gate")]
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info(fmt.INPUT, TensorProto.FLOAT, [None, 3])],
                          [helper.make_tensor_value_info("gated", TensorProto.UINT8, [None, 3]),
                           helper.make_tensor_value_info("s", TensorProto.BOOL, [None, 3])],
                          [numpy_helper.from_array(np.full(3, 0.5, np.float32), "theta"),
                           numpy_helper.from_array(np.array(0.1, np.float32), "scale"),
                           numpy_helper.from_array(np.array(0, np.uint8), "zp")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_element_types_follow_the_nodes():
    t = _elem_types(_gate_chain())
    assert (t["s"], t["s_u8"], t["q"], t["gated"]) == (TensorProto.BOOL, TensorProto.UINT8, TensorProto.UINT8,
                                                       TensorProto.UINT8)


def test_prefixes_run_and_end_in_their_last_node():
    """Prefix k holds nodes 0..k−1 and outputs node k−1's tensor: on x = (0.2, 0.7, 1.0) the last prefix gives
    the gate's integers (0, 7, 10) and the third (QuantizeLinear alone) gives (2, 7, 10)."""
    x = np.array([[0.2, 0.7, 1.0]], np.float32)
    got = []
    for label, p in prefixes(_gate_chain()):
        sess = ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        got.append((label, dict(zip(names, sess.run(None, {fmt.INPUT: x})))))
    assert [label for label, _ in got] == ["(the call: input copied out)", "Greater layer0.spike",
                                           "Cast layer0.spike_u8", "QuantizeLinear q", "Mul layer0.gate"]
    np.testing.assert_array_equal(got[3][1]["q"], [[2, 7, 10]])
    np.testing.assert_array_equal(got[4][1]["gated"], [[0, 7, 10]])
    np.testing.assert_array_equal(got[4][1]["s"], [[False, True, True]])


def test_bound_replaces_the_products_by_the_cheapest_form():
    """float call 20 µs with products 6; int8 call 21 with products 9 (QuantizeLinear 1 + MatMulIntegerToFloat 8);
    the cheapest M=1 form costs 7 − 4 (bare call) = 3 µs: 21 − 9 + 3 = 15 µs, 20 / 15 = 1.333x. Restricted to
    forms faster than float32 at M = 64, the next best costs 8 − 4 = 4: 16 µs, 1.25x."""
    row = lambda node, us, cum=0.0: {"node": node, "node_us": us, "cumulative_us": cum}   # noqa: E731
    f = [row("(call)", 4.0, 4.0), row("MatMul connection0.matmul", 6.0, 10.0), row("Sigmoid out", 10.0, 20.0)]
    q = [row("(call)", 4.0, 4.0), row("QuantizeLinear q", 1.0, 5.0), row("MatMulIntegerToFloat c0", 8.0, 13.0),
         row("Sigmoid out", 8.0, 21.0)]
    form = lambda name, m, us, ratio: {"K": 8, "N": 4, "M": m, "form": name, "us": us,   # noqa: E731
                                       "float_over_form": ratio}
    forms = [form("(the call: Identity)", 1, 4.0, 1.0), form("float32 MatMul", 1, 9.0, 1.0),
             form("fast at M=1 only", 1, 7.0, 1.3), form("fast at M=1 only", 64, 90.0, 0.5),
             form("pays at 64", 1, 8.0, 1.1), form("pays at 64", 64, 20.0, 2.0),
             form("(the call: Identity)", 64, 5.0, 1.0), form("float32 MatMul", 64, 40.0, 1.0)]
    b = bound(f, q, forms, [(8, 4)])
    assert b["float32_products_us"] == 6.0 and b["int8_products_us"] == 9.0
    assert b["any_form"]["best_int8_call_us"] == pytest.approx(15.0)
    assert b["any_form"]["best_speedup_b1"] == pytest.approx(20 / 15)
    assert b["forms_paying_at_b64"]["cheapest_m1"]["8x4"]["form"] == "pays at 64"
    assert b["forms_paying_at_b64"]["best_speedup_b1"] == pytest.approx(1.25)


def test_product_forms_compute_the_same_product():
    """Every form of a 32→8 product gives a·W within its own int8 rounding: |Δ| ≤ K·(s_a/2·max|W| + max|a|·s_w/2)
    plus the activation's clipping at 1 (a in [0, 1): none) — the u8-output QLinearMatMul adds half its output step."""
    forms = product_forms(32, 8, seed=3)
    a = np.random.default_rng(0).random((2, 32), dtype=np.float32)
    w = numpy_helper.to_array(next(i for i in forms["float32 MatMul"].graph.initializer if i.name == "w"))
    exact = a @ w
    for name, model in forms.items():
        if name == "(the call: Identity)":
            continue
        y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"a": a})[0]
        step_w = np.abs(w).max() / 127
        tol = 32 * ((1 / 255) / 2 * np.abs(w).max() + 1.0 * step_w / 2) + (0.05 if "QLinearMatMul" in name else 0)
        if name.startswith("dynamic"):
            tol = 32 * (a.max() / 255 / 2 * np.abs(w).max() + step_w / 2)
        assert np.abs(y - exact).max() <= tol + 1e-6, name
