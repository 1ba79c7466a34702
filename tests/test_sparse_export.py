"""Sparse (event-driven) export: graph forms, hand-derived values, per-layer choice, metadata, CLI, int8 rows."""

import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from zor.devices import Profile, get
from zor.export import export, to_onnx, verify, verify_file
from zor.export.cli import main as export_cli
from zor.export.metadata import read_metadata
from zor.export.session import Stepper
from zor.export.sparse import (
    dense_plan,
    effective_break_even,
    measure_rates,
    plan_paths,
    quantize_rows,
    rest_value,
)
from zor.runtime import Model

from zor import Conv, Layer, Zor
from zor.common import format as fmt
from zor.common.errors import ConfigError, DeviceError, ShapeError


def _set_weights(net: Zor, *mats) -> Zor:
    with torch.no_grad():
        for w, m in zip(net.weights, mats):
            w.copy_(torch.tensor(m, dtype=torch.float32))
    return net


def _run(proto, x, names=("output",)):
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(list(names), {"input": np.asarray(x, np.float32)})


def _hand_net(act: str = "identity") -> Zor:
    net = Zor([Layer(3, threshold=0.5, activation_function=act), Layer(2)], seed=0, device="cpu")
    return _set_weights(net, [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])


@pytest.mark.parametrize("max_batch", [1, 3])
def test_sparse_identity_hand_derived(max_batch):
    # x = [0.2, 0.7, 0.9], θ = 0.5: units 1 and 2 spike, a = [0, .7, .9]
    # h = 0.7·[3, 4] + 0.9·[5, 6] = [6.6, 8.2]; the output layer is the identity of its charge
    net = _hand_net()
    plan = plan_paths(net, "sparse", get("generic"), max_batch=max_batch)
    (out,) = _run(to_onnx(net, paths=plan), [[0.2, 0.7, 0.9]])
    np.testing.assert_allclose(out, [[6.6, 8.2]], rtol=0, atol=1e-6)


def test_sparse_sigmoid_rest_value_hand_derived():
    # a sigmoid layer sends σ(0) = ½ from every unit that did not spike:
    # h = ½·[1, 2] + σ(.7)·[3, 4] + σ(.9)·[5, 6], computed as Σ_active (a − ½) W + ½ Σ_rows W
    net = _hand_net("sigmoid")
    s = lambda v: 1.0 / (1.0 + math.exp(-v))  # noqa: E731
    want = [0.5 * 1 + s(0.7) * 3 + s(0.9) * 5, 0.5 * 2 + s(0.7) * 4 + s(0.9) * 6]
    proto = to_onnx(net, paths=plan_paths(net, "sparse", get("generic")))
    (out,) = _run(proto, [[0.2, 0.7, 0.9]])
    np.testing.assert_allclose(out, [want], rtol=0, atol=1e-6)
    bias = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}[fmt.sparse_bias(0)]
    np.testing.assert_allclose(bias, [0.5 * (1 + 3 + 5), 0.5 * (2 + 4 + 6)], atol=1e-6)


def test_no_unit_spiking_gives_the_rest_sum():
    # nothing above θ: identity sends nothing (h = 0); sigmoid sends ½ from every unit
    for act, want in (("identity", [0.0, 0.0]), ("sigmoid", [4.5, 6.0])):
        net = _hand_net(act)
        (out,) = _run(to_onnx(net, paths=plan_paths(net, "sparse", get("generic"))), [[0.1, 0.2, 0.3]])
        np.testing.assert_allclose(out, [want], atol=1e-6)


def test_sparse_graph_uses_standard_operators_only():
    net = Zor([Layer(8), Layer(6, activation_function="sigmoid"), Layer(4)], seed=0, device="cpu")
    for max_batch, form_ops in ((1, {"Reshape"}), (4, {"Cast", "ReduceMax"})):
        proto = to_onnx(net, paths=plan_paths(net, "sparse", get("generic"), max_batch=max_batch))
        ops = {n.op_type for n in proto.graph.node}
        assert {"Compress", "MatMul"} <= ops and form_ops <= ops
        assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
        assert [o.domain for o in proto.opset_import] == [""]
        weight_users = [n for n in proto.graph.node if fmt.weight(0) in n.input]
        assert [n.op_type for n in weight_users] == ["Compress"]          # W_0 is never read whole


def test_batch1_form_refuses_two_rows_in_plain_onnxruntime():
    net = _hand_net()
    proto = to_onnx(net, paths=plan_paths(net, "sparse", get("generic"), max_batch=1))
    with pytest.raises(Exception) as exc:                                  # onnxruntime's own error type
        _run(proto, [[0.2, 0.7, 0.9], [0.9, 0.1, 0.6]])
    assert "reshape" in str(exc.value).lower() or "shape" in str(exc.value).lower()


@pytest.mark.parametrize("act", ["identity", "sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("max_batch", [1, 4])
@pytest.mark.parametrize("stateful", [False, True])
def test_sparse_matches_dense_and_engine(act, max_batch, stateful):
    kw = dict(decay=0.5, refractory=0.1, min_charge=0.05) if stateful else {}
    net = Zor([Layer(24, threshold=0.6, **kw), Layer(16, threshold=0.3, activation_function=act, **kw),
               Layer(5, activation_function="sigmoid")], seed=3, device="cpu")
    plan = plan_paths(net, "sparse", get("generic"), max_batch=max_batch)
    rep = verify(net, to_onnx(net, paths=plan), batch=8, steps=4 if stateful else 1, max_batch=max_batch)
    assert rep["passed"] and rep["outputs"]["output"]["max_abs_diff"] <= 1e-5
    assert all(row["spike_agreement"] == 1.0 for row in rep["layers"])


def test_quantize_rows_hand_derived():
    # per output unit: scale = max|W[:, c]| / 127; q = rint(W / scale) (half to even)
    q, scale = quantize_rows(np.array([[1.0, -2.0], [0.5, 4.0]], np.float32))
    np.testing.assert_allclose(scale, [1 / 127, 4 / 127], rtol=1e-6)
    assert q.dtype == np.int8 and q.tolist() == [[127, -64], [64, 127]]
    q0, s0 = quantize_rows(np.zeros((2, 1), np.float32))
    assert q0.tolist() == [[0], [0]] and s0.tolist() == [1.0]


def test_int8_rows_graph_computes_with_the_rounded_weights():
    net = _hand_net()
    plan = plan_paths(net, "sparse", get("generic"), precision="int8")
    proto = to_onnx(net, paths=plan)
    names = {i.name for i in proto.graph.initializer}
    assert fmt.weight_int8(0) in names and fmt.weight_scale(0) in names and fmt.weight(0) not in names
    q, scale = quantize_rows(np.array([[1, 2], [3, 4], [5, 6]], np.float32))
    # scale = column peaks / 127 = [5, 6] / 127; W_q = round(W / scale) = [[25, 42], [76, 85], [127, 127]]
    assert q.tolist() == [[25, 42], [76, 85], [127, 127]]
    # values [0, .7, .9] and the zero column: s_v = .9 / 255, z_v = 0, q(.7) = round(198.33) = 198, q(.9) = 255
    # h = (198·W_q[1] + 255·W_q[2]) · s_v · scale = [47433, 49215] · (.9 / 255) · [5, 6] / 127
    (out,) = _run(proto, [[0.2, 0.7, 0.9]])
    expected = np.array([47433, 49215]) * (0.9 / 255) * np.array([5, 6]) / 127
    np.testing.assert_allclose(out, [expected], rtol=1e-6, atol=0)
    assert {"DynamicQuantizeLinear", "MatMulInteger", "Gather"} <= {n.op_type for n in proto.graph.node}
    assert not any(n.op_type == "Cast" and fmt.weight_int8(0) in n.input for n in proto.graph.node)


def test_int8_rows_with_empty_row_groups_add_exactly_zero():
    # 12 input units in 3 groups of 4; only units 1 and 2 (group 0) spike: groups 1 and 2 gather no active
    # row, only the extra entry (index −1: the zero column times row 11), which must add exactly 0.
    # x = .9 and .6 on units 1, 2 (θ = .5): s_v = .9 / 255, z_v = 0, q = [255, 170]; W = 1 everywhere → W_q = 127,
    # scale = 1/127: h = (255 + 170) · 127 · (.9 / 255) / 127 = 1.5 exactly in real numbers
    from dataclasses import replace

    net = _set_weights(Zor([Layer(12, threshold=0.5), Layer(2)], seed=0, device="cpu"), np.ones((12, 2)))
    plan = plan_paths(net, "sparse", get("generic"), precision="int8")
    plan = replace(plan, connections=tuple(replace(c, groups=3) for c in plan.connections))
    proto = to_onnx(net, paths=plan)
    assert sum(n.op_type == "MatMulInteger" for n in proto.graph.node) == 3
    x = np.zeros((1, 12), np.float32)
    x[0, 1], x[0, 2] = 0.9, 0.6
    (out,) = _run(proto, x)
    np.testing.assert_allclose(out[0], [1.5, 1.5], rtol=1e-6, atol=0)
    (none,) = _run(proto, np.zeros((1, 12), np.float32))
    assert np.all(none == 0.0)                               # no unit active anywhere: every inner dimension is 1


def test_effective_break_even_and_plan():
    prof = Profile(name="t", description="", arch="any", sparse_break_even=0.3, sparse_min_synapses=1000)
    assert effective_break_even(prof, 4000) == pytest.approx(0.3 * (1 - 1000 / 4000))
    assert effective_break_even(prof, 500) == 0.0
    net = Zor([Layer(40), Layer(100), Layer(50)], seed=0, device="cpu")     # 4000 and 5000 synapses
    plan = plan_paths(net, "auto", prof, rates=[0.2, 0.25, 1.0], union_rates=[0.5, 0.6, 1.0])
    # connection 0: 0.2 < 0.225 → sparse; connection 1: 0.25 ≥ 0.3·(1 − 1000/5000) = 0.24 → dense
    assert [c.path for c in plan.connections] == ["sparse", "dense"]
    assert plan.max_batch == 1 and plan.form == "batch1"
    # the union form compares the union rate: 0.5 ≥ 0.225 → dense
    plan4 = plan_paths(net, "auto", prof, rates=[0.2, 0.25, 1.0], union_rates=[0.5, 0.6, 1.0], max_batch=4)
    assert [c.path for c in plan4.connections] == ["dense", "dense"] and plan4.max_batch is None
    assert [c.path for c in plan_paths(net, "dense", prof).connections] == ["dense", "dense"]


def test_plan_refuses_bad_arguments():
    net = Zor([Layer(4), Layer(2)], seed=0, device="cpu")
    with pytest.raises(ConfigError, match="path must be one of"):
        plan_paths(net, "fast", get("generic"))
    with pytest.raises(ConfigError, match="max_batch"):
        plan_paths(net, "sparse", get("generic"), max_batch=0)
    with pytest.raises(ConfigError, match="needs the measured spike rate"):
        plan_paths(net, "auto", get("generic"))
    with pytest.raises(DeviceError, match="sparse_min_synapses"):
        Profile(name="x", description="", arch="any", sparse_min_synapses=-1)
    assert rest_value("sigmoid") == 0.5 and rest_value("relu") == 0.0


def test_conv_connections_stay_dense():
    net = Zor([Layer(2 * 6 * 6, shape=(2, 6, 6)), Conv(3, kernel_size=3, stride=2, padding=1), Layer(4)],
              seed=1, device="cpu")
    plan = plan_paths(net, "sparse", get("generic"))
    assert [(c.kind, c.path) for c in plan.connections] == [("conv", "dense"), ("dense", "sparse")]
    assert "no sparse form" in plan.connections[0].reason
    rep = verify(net, to_onnx(net, paths=plan), batch=4, max_batch=1)
    assert rep["passed"]


def test_measure_rates_hand_derived():
    # 4 input units with θ = 0.5; rows [1,0,1,0] and [1,1,0,0]: mean rate 2/4 each → 0.5;
    # union over the pair: units 0, 1, 2 → 0.75; per single row (groups of 1): 0.5
    net = Zor([Layer(4, threshold=0.5), Layer(2)], seed=0, device="cpu")
    x = np.array([[1, 0, 1, 0], [1, 1, 0, 0]], np.float32)
    rates, union = measure_rates(net, to_onnx(net), x, max_batch=2)
    assert rates[0] == pytest.approx(0.5) and union[0] == pytest.approx(0.75)
    assert rates[1] == pytest.approx(1.0)                                    # output θ = −inf: every unit
    _, union1 = measure_rates(net, to_onnx(net), x, max_batch=1)
    assert union1[0] == pytest.approx(0.5)


def test_export_records_paths_rates_and_both_verifications(tmp_path):
    # connection 0: 512·256 = 131072 synapses at ≈ 10 % activity; the profile's measured curve gives
    # 0.19 + 0.07·log(2)/log(4) = 0.225 there → sparse; connection 1: 256·8 synapses, below S0: dense
    net = Zor([Layer(512, threshold=0.9), Layer(256, threshold=0.4), Layer(8)], seed=0, device="cpu")
    calib = np.random.default_rng(0).random((40, 512), dtype=np.float32)
    res = export(net, tmp_path / "m.onnx", path="auto", calibration=calib, device="x86-64-avx2")
    meta = read_metadata(onnx.load(str(tmp_path / "m.onnx")))
    paths = meta[fmt.KEYS.PATHS]
    assert paths["requested"] == "auto" and paths["profile"] == "x86-64-avx2"
    assert paths["break_even"] == get("x86-64-avx2").sparse_break_even
    assert paths["curve"] == [list(c) for c in get("x86-64-avx2").sparse_curve]
    assert "break-even 0.2250" in paths["connections"][0]["reason"]
    # inputs uniform in [0, 1) against θ = 0.9: about 10 % of the input units spike
    assert 0.05 < paths["connections"][0]["spike_rate"] < 0.15
    assert paths["rates"]["source"] == "array" and paths["rates"]["rows"] == 20
    assert meta[fmt.KEYS.CALIBRATION]["layers"][0]["spike_rate"] == paths["connections"][0]["spike_rate"]
    assert [c["path"] for c in paths["connections"]] == ["sparse", "dense"]
    assert paths["connections"][0]["reason"].startswith("spike rate 0.")
    assert paths["connections"][1]["reason"].endswith("≥ break-even 0.0000")
    assert res.verification["float32"]["passed"] and res.verification["sparse"]["passed"]
    dense = read_metadata(to_onnx(net))[fmt.KEYS.PATHS]
    assert dense["requested"] == "dense" and all(c["path"] == "dense" for c in dense["connections"])
    assert dense["max_batch"] is None
    assert meta[fmt.KEYS.WEIGHTS] == {}


def test_verify_file_checks_a_sparse_export_in_chunks(tmp_path):
    net = Zor([Layer(16, threshold=0.5), Layer(8), Layer(4)], seed=0, device="cpu")
    net.save(tmp_path / "m.zor")
    export(tmp_path / "m.zor", tmp_path / "m.onnx", path="sparse")
    rep = verify_file(tmp_path / "m.onnx", tmp_path / "m.zor", batch=6)
    assert rep["passed"] and rep["batch"] == 6


def test_int8_sparse_rows_and_fallback_to_float_rows(tmp_path):
    net = Zor([Layer(96, threshold=0.7), Layer(64, threshold=0.2), Layer(16)], seed=2, device="cpu")
    calib = np.random.default_rng(1).random((60, 96), dtype=np.float32)
    res = export(net, tmp_path / "q.onnx", path="sparse", quantize="int8", calibration=calib, max_drop=50.0,
                 spike_budget=0.0)
    rows = {r["connection"]: r for r in res.quantization["layers"] if "connection" in r}
    assert rows[0]["precision"] == "int8 rows" and rows[0]["weight_bytes"] < rows[0]["weight_bytes_float"]
    assert res.paths["connections"][0]["precision"] == "int8"
    # a budget of 100 % agreement: any spike flipped by int8 rows sends that connection back to float rows
    strict = export(net, tmp_path / "q1.onnx", path="sparse", quantize="int8", calibration=calib, max_drop=50.0,
                    spike_budget=1.0)
    srows = {r["connection"]: r for r in strict.quantization["layers"] if "connection" in r}
    for j, row in srows.items():
        assert row["spike_agreement"] == 1.0 or row["precision"] == "float rows"
    flipped = [j for j, r in rows.items() if r["spike_agreement"] < 1.0]
    assert flipped, "expected int8 rows to flip at least one spike on this model"
    assert all(srows[j]["precision"] == "float rows" for j in flipped)
    m = Model(tmp_path / "q.onnx", device="generic", threads=1)
    assert m.precision == "int8" and m.max_batch == 1


def test_fp16_with_sparse_is_refused(tmp_path):
    net = Zor([Layer(4), Layer(2)], seed=0, device="cpu")
    with pytest.raises(ConfigError, match="fp16 export has no sparse form"):
        export(net, tmp_path / "m.onnx", quantize="fp16", path="sparse")
    assert not (tmp_path / "m.onnx").exists()


def _cli(*args):
    return CliRunner().invoke(export_cli, [str(a) for a in args])


def test_cli_path_options(tmp_path):
    net = Zor([Layer(32, threshold=0.8), Layer(16, threshold=0.3), Layer(4)], seed=0, device="cpu")
    net.save(tmp_path / "m.zor")
    r = _cli(tmp_path / "m.zor", "-o", tmp_path / "s.onnx", "--path", "sparse", "--max-batch", "4")
    assert r.exit_code == 0, r.output
    assert "2 of 2 connections sparse (union form, batch ≤ 4)" in r.output
    assert "connection 0: sparse (float32 rows): requested sparse" in r.output
    info = _cli("inspect", tmp_path / "s.onnx", "--json")
    assert json.loads(info.output)["paths"]["max_batch"] == 4
    r = _cli(tmp_path / "m.zor", "-o", tmp_path / "x.onnx", "--path", "fast")
    assert r.exit_code == 2 and "'fast' is not one of" in r.output
    r = _cli(tmp_path / "m.zor", "-o", tmp_path / "x.onnx", "--max-batch", "0")
    assert r.exit_code == 2
    r = _cli(tmp_path / "m.zor", "-o", tmp_path / "x.onnx", "--quantize", "fp16", "--path", "auto")
    assert r.exit_code == 2 and "fp16 export has no sparse form" in r.output
    r = _cli(tmp_path / "m.zor", "-o", tmp_path / "x.bin", "--external-weights")
    assert r.exit_code == 2 and "ending in .onnx" in r.output
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "x.bin").exists()


def test_runtime_refuses_batches_past_the_limit(tmp_path):
    net = Zor([Layer(16, threshold=0.5), Layer(8)], seed=0, device="cpu")
    export(net, tmp_path / "b1.onnx", path="sparse")
    export(net, tmp_path / "u4.onnx", path="sparse", max_batch=4)
    x = np.random.default_rng(0).random((5, 16), dtype=np.float32)
    b1, u4 = Model(tmp_path / "b1.onnx", device="generic"), Model(tmp_path / "u4.onnx", device="generic")
    with pytest.raises(ShapeError, match="at most 1 row per call"):
        b1.run(x[:2])
    with pytest.raises(ShapeError, match="at most 4 rows per call"):
        u4.run(x)
    ref = Stepper(to_onnx(net))
    ref.reset(4)
    np.testing.assert_allclose(u4.run(x[:4])["output"], ref.step(x[:4])["output"], atol=1e-5)
    np.testing.assert_allclose(b1(x[:1]), ref.step(x[:4])["output"][:1], atol=1e-5)


def test_dense_plan_covers_every_connection():
    net = Zor([Layer(3), Layer(4), Layer(5), Layer(2)], seed=0, device="cpu")
    plan = dense_plan(net)
    assert [c.connection for c in plan.connections] == [0, 1, 2] and not plan.sparse()
    assert [c.synapses for c in plan.connections] == [12, 20, 10]


def test_choose_groups_hand_derived():
    from zor.export.sparse import GROUP_BYTES, SINGLE_GROUP_BYTES, choose_groups

    assert GROUP_BYTES == 2 << 20 and SINGLE_GROUP_BYTES == 4 << 20
    # 5 % of 4096 rows × 4096 float32 = 3,355,443 B ≤ 4 MiB → one group
    assert choose_groups(0.05, 4096, 4096) == 1
    # 6.3 %: 4,227,858 B > 4 MiB (4,194,304) → ceil(4.23 MB / 2 MiB) = 3 groups
    assert choose_groups(0.063, 4096, 4096) == 3
    # 10 % of 4096 rows × 4096 float32 = 6,710,886 B → ceil(6.71 MB / 2 MiB) = 4 groups
    assert choose_groups(0.1, 4096, 4096) == 4
    assert choose_groups(0.1, 4096, 4096, itemsize=1) == 1                   # int8 rows: 1.68 MB
    assert choose_groups(1.0, 4096, 4096) == 16                              # capped
    assert choose_groups(None, 4096, 4096) == 1 and choose_groups(0.5, 1, 10) == 1


@pytest.mark.parametrize("act, precision, max_batch", [("identity", "float32", 3), ("sigmoid", "float32", 3),
                                                       ("sigmoid", "int8", 3), ("sigmoid", "int8", 1)])
def test_row_groups_compute_the_same_sum(act, precision, max_batch):
    from dataclasses import replace

    net = Zor([Layer(10, threshold=0.5, activation_function=act), Layer(7), Layer(3)], seed=5, device="cpu")
    plan = plan_paths(net, "sparse", get("generic"), precision=precision, max_batch=max_batch)
    grouped = replace(plan, connections=tuple(replace(c, groups=3) for c in plan.connections))
    p1, p3 = to_onnx(net, paths=plan), to_onnx(net, paths=grouped)
    integer = precision == "int8" and max_batch == 1                 # batch 1: Gather + MatMulInteger, int32 Add
    w0 = fmt.weight_int8(0) if precision == "int8" else fmt.weight(0)
    assert sum(n.op_type == ("Gather" if integer else "Compress") and w0 in n.input for n in p3.graph.node) == 3
    assert any(n.op_type == ("Add" if integer else "Sum") for n in p3.graph.node)
    x = np.random.default_rng(2).random((max_batch, 10), dtype=np.float32)
    (a,), (b,) = _run(p1, x), _run(p3, x)
    np.testing.assert_allclose(b, a, atol=1e-5)
    if precision == "float32":
        rep = verify(net, p3, batch=6, max_batch=3)
        assert rep["passed"]


def test_break_even_curve_interpolates_in_log_synapses():
    # points (1000, 0.2) and (4000, 0.4), S0 = 250: 0 at or below S0; log-interpolated between S0 and the
    # first point; between points: 2000 is halfway in log → 0.3; past the last: 0.4
    prof = Profile(name="c", description="", arch="any", sparse_min_synapses=250,
                   sparse_curve=((1000, 0.2), (4000, 0.4)))
    assert effective_break_even(prof, 250) == 0.0 and effective_break_even(prof, 100) == 0.0
    assert effective_break_even(prof, 500) == pytest.approx(0.1)            # halfway from 250 to 1000 in log
    assert effective_break_even(prof, 1000) == pytest.approx(0.2)
    assert effective_break_even(prof, 2000) == pytest.approx(0.3)
    assert effective_break_even(prof, 10**6) == 0.4
    with pytest.raises(DeviceError, match="sparse_curve"):
        Profile(name="c", description="", arch="any", sparse_curve=((4000, 0.4), (1000, 0.2)))
    with pytest.raises(DeviceError, match="sparse_curve"):
        Profile(name="c", description="", arch="any", sparse_curve=((1000, 1.5),))
    x86 = get("x86-64-avx2")
    assert x86.sparse_curve and "measured" in x86.sparse_evidence
    assert effective_break_even(x86, 4096 * 4096) == x86.sparse_curve[-1][1]
