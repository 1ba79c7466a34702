"""The sparse path's int8 rows (integer product) and row groups per device profile.

The row-streaming runtime (zor.runtime.rows) must quantize the values exactly as the graph's
DynamicQuantizeLinear does, so its int8 outputs stay equal to the graph's; row groups are sized by
the device profile the export is made for."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from onnx import TensorProto, helper
from zor.devices import Profile, get
from zor.export import export
from zor.export.paths import (
    GROUP_BYTES,
    MAX_GROUPS,
    SINGLE_GROUP_BYTES,
    choose_groups,
    group_settings,
)
from zor.export.sparse import plan_paths
from zor.runtime import Model
from zor.runtime.onnxmeta import scan_model
from zor.runtime.rows import dynamic_quantize, integer_rows

from zor import Layer, Zor
from zor.common import format as fmt
from zor.common.errors import DeviceError


def _ort_dynamic_quantize():
    graph = helper.make_graph([helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"])], "dq",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("q", TensorProto.UINT8, None),
                               helper.make_tensor_value_info("s", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("z", TensorProto.UINT8, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


_DQ = _ort_dynamic_quantize()


def test_dynamic_quantize_hand_derived():
    # x = [-1, 0, 0.5, 2]: lo = -1, hi = 2, s = 3/255, z = round(255/3) = 85;
    # q = round(x / s) + z = [-85, 0, 42.5 → 42 (half to even), 170] + 85 = [0, 85, 127, 255]
    q, s, z = dynamic_quantize(np.array([[-1.0, 0.0, 0.5, 2.0]], np.float32))
    assert s == np.float32(3.0 / 255.0) and z == 85
    assert q.tolist() == [[0, 85, 127, 255]]
    # all zero: scale 1, zero point 0; positive only: z = 0
    assert dynamic_quantize(np.zeros((1, 3), np.float32))[1:] == (1.0, 0)
    assert dynamic_quantize(np.array([[0.0, 0.9]], np.float32))[0].tolist() == [[0, 255]]
    q, s, z = dynamic_quantize(np.array([[4.3e-44, -1e-44]], np.float32))   # s = 5.6e-44 / 255 underflows to 0
    assert s == 0.0 and q.tolist() == [[0, 0]] and z == 0
    q, s, z = dynamic_quantize(np.zeros((2, 0), np.float32))          # nothing active: what the graph's zero
    assert q.shape == (2, 0) and (s, z) == (1.0, 0)                    # column alone gives


@settings(max_examples=200, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 40)),
              elements=st.floats(-1e4, 1e4, width=32, allow_nan=False, allow_infinity=False)))
def test_dynamic_quantize_equals_onnxruntime(x):
    q, s, z = _DQ.run(None, {"x": x})
    mq, ms, mz = dynamic_quantize(x)
    if s == 0.0:                 # a range of subnormals: s underflows to 0, and both products are scaled by 0
        assert ms == 0.0 and np.all((mq.astype(int) - int(mz)) * ms == 0)
        return
    # what rows mode relies on to stay equal to the graph: the same scale and zero point, and every value
    # in the same step (x / s is one IEEE float32 division in both, then round half to even)
    assert ms == s and mz == z
    assert np.array_equal(mq, q)


def test_integer_rows_reads_the_graph():
    net = Zor([Layer(6, threshold=0.5), Layer(4, threshold=0.2), Layer(3)], seed=0, device="cpu")
    from zor.export import to_onnx

    def nodes(precision):                      # what the runtime scans, without onnx
        proto = to_onnx(net, paths=plan_paths(net, "sparse", get("generic"), precision=precision))
        return scan_model(proto.SerializeToString()).nodes

    assert integer_rows(nodes("int8")) == {0, 1}
    assert integer_rows(nodes("float32")) == frozenset()


def _stored_rows_equal_graph(tmp_path, act, max_batch):
    net = Zor([Layer(64, threshold=0.6), Layer(48, threshold=0.2, activation_function=act),
               Layer(8, activation_function="sigmoid")], seed=3, device="cpu")
    calib = np.random.default_rng(5).random((40, 64), dtype=np.float32)
    export(net, tmp_path / "m.onnx", path="sparse", max_batch=max_batch, external_weights=True, quantize="int8",
           calibration=calib, max_drop=100.0, spike_budget=0.0)
    return (Model(tmp_path / "m.onnx", device="generic", threads=1, weights="load"),
            Model(tmp_path / "m.onnx", device="generic", threads=1, weights="rows"))


@pytest.mark.parametrize("act, max_batch", [("identity", 1), ("sigmoid", 1), ("relu", 1), ("sigmoid", 4)])
def test_rows_mode_int8_equals_the_graph(tmp_path, act, max_batch):
    # batch 1: the integer product; max_batch 4 (union form): weight-only int8 rows, values float
    loaded, rows = _stored_rows_equal_graph(tmp_path, act, max_batch)
    assert rows.weights_mode == "rows" and rows._rows.conns[0].integer == (max_batch == 1)
    rng = np.random.default_rng(9)
    for b in (1, max_batch):
        x = rng.random((b, 64), dtype=np.float32)
        a, r = loaded.run(x, spikes=True), rows.run(x, spikes=True)
        for i in range(3):
            assert np.array_equal(a[fmt.spikes(i)], r[fmt.spikes(i)])
        # both compute exact int32 sums of the same integers and scale them in float32: equal up to the
        # float32 rounding of the final products (a few ulp of the largest output)
        np.testing.assert_allclose(r["output"], a["output"], rtol=0, atol=1e-6)
        zero = np.zeros((b, 64), np.float32)                         # nothing spikes: only the rest bias
        np.testing.assert_allclose(rows.run(zero)["output"], loaded.run(zero)["output"], rtol=0, atol=1e-6)
    if max_batch == 1:
        # rows mode takes any batch; an integer-product row is quantized on its own, as the batch-1 graph
        # quantizes each call: 5 rows at once equal 5 calls of the graph
        x = rng.random((5, 64), dtype=np.float32)
        one_by_one = np.concatenate([loaded.run(row[None])["output"] for row in x])
        np.testing.assert_allclose(rows.run(x)["output"], one_by_one, rtol=0, atol=1e-6)


def test_row_groups_follow_the_profile():
    # default sizes (GROUP_BYTES 2 MiB, one group up to 4 MiB, at most 16): 10 % of 4096 × 4096 float32 is
    # 6,710,886 B → ceil(6.71 MB / 2 MiB) = 4 groups
    assert (GROUP_BYTES, SINGLE_GROUP_BYTES, MAX_GROUPS) == (2 << 20, 4 << 20, 16)
    assert group_settings(get("generic")) == {"group_bytes": 2 << 20, "single_bytes": 4 << 20, "max_groups": 16}
    assert choose_groups(0.1, 4096, 4096, **group_settings(get("x86-64-avx2"))) == 4
    # the AVX-512 profile (measured on an Intel Xeon): 1 MiB groups, split above 1 MiB, at most 32:
    # 5 % = 3,355,443 B → ceil(3.2) = 4; 10 % → ceil(6.4) = 7; 100 % = 64 MiB → 64, capped at 32
    avx512 = group_settings(get("x86-64-avx512-vnni"))
    assert avx512 == {"group_bytes": 1 << 20, "single_bytes": 1 << 20, "max_groups": 32}
    assert [choose_groups(r, 4096, 4096, **avx512) for r in (0.05, 0.1, 1.0)] == [4, 7, 32]
    assert choose_groups(0.05, 4096, 4096, itemsize=1, **avx512) == 1       # int8 rows: 838,861 B ≤ 1 MiB
    prof = Profile(name="t", description="", arch="any", sparse_group_bytes=1000, sparse_single_group_bytes=1000,
                   sparse_max_groups=3)
    net = Zor([Layer(100, threshold=0.5), Layer(10)], seed=0, device="cpu")
    # rate .5 · 100 rows · 10 · 4 B = 2000 B > 1000 → ceil(2000 / 1000) = 2 groups; rate 1 → 4000 B → 3 (cap)
    assert plan_paths(net, "sparse", prof, rates=[0.5, 1.0]).get(0).groups == 2
    assert plan_paths(net, "sparse", prof, rates=[1.0, 1.0]).get(0).groups == 3


@pytest.mark.parametrize("key, value", [("sparse_group_bytes", 0), ("sparse_single_group_bytes", -1),
                                        ("sparse_max_groups", True), ("sparse_group_bytes", 1.5)])
def test_profile_refuses_bad_group_sizes(key, value):
    with pytest.raises(DeviceError, match=key):
        Profile(name="x", description="", arch="any", **{key: value})


@pytest.mark.parametrize("max_batch, integer", [(1, True), (3, False)])
def test_int8_graph_uses_only_allowed_operators(max_batch, integer):
    # batch 1: the integer product; the union form keeps weight-only int8 rows (a per-call value scale
    # would tie a row's output to the other rows of its batch)
    net = Zor([Layer(6, threshold=0.5, activation_function="sigmoid"), Layer(4)], seed=0, device="cpu")
    from zor.export import to_onnx

    proto = to_onnx(net, paths=plan_paths(net, "sparse", get("generic"), precision="int8", max_batch=max_batch))
    ops = {n.op_type for n in proto.graph.node}
    assert ops <= fmt.OPERATORS and ("MatMulInteger" in ops) == integer
    onnx.checker.check_model(proto, full_check=True)


def test_int8_exports_read_the_int8_break_even():
    # float32 curve (1000, 0.4); int8 curve (1000, 0.1): an int8 export compares int8 rows with the int8
    # dense graph, so its break-even is the int8 one; a profile without an int8 curve uses the float32 one
    from zor.export.paths import effective_break_even

    prof = Profile(name="t", description="", arch="any", sparse_min_synapses=0, sparse_curve=((1000, 0.4),),
                   sparse_int8_curve=((1000, 0.1),))
    assert effective_break_even(prof, 4000) == 0.4 and effective_break_even(prof, 4000, "int8") == 0.1
    plain = Profile(name="p", description="", arch="any", sparse_min_synapses=0, sparse_curve=((1000, 0.4),))
    assert effective_break_even(plain, 4000, "int8") == 0.4
    net = Zor([Layer(40, threshold=0.5), Layer(100)], seed=0, device="cpu")      # 4000 synapses, rate 0.2
    assert plan_paths(net, "auto", prof, rates=[0.2, 1.0]).get(0).path == "sparse"
    plan8 = plan_paths(net, "auto", prof, rates=[0.2, 1.0], precision="int8")
    assert plan8.get(0).path == "dense" and plan8.curve == ((1000, 0.1),)
    with pytest.raises(DeviceError, match="sparse_int8_curve"):
        Profile(name="x", description="", arch="any", sparse_int8_curve=((10, 2.0),))
