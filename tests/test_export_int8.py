"""Threshold-aware int8 (fallback forced by a tiny budget, refusal past --max-drop, recipes) and fp16."""

import dataclasses

import numpy as np
import onnx
import pytest
import torch
from zor.devices import get as get_profile
from zor.export import export, load_model_file

from zor import Layer, Zor
from zor.common import format as fmt
from zor.common.errors import DataError, QuantizationError, ShapeError
from zor.tasks.datasets import few_shot, load_bundled
from zor.tasks.images import FASHION_MNIST


@pytest.fixture(scope="module")
def fewshot(tmp_path_factory):
    """The seed's model, trained briefly on 10 Fashion-MNIST images; a checkpoint and its float export."""
    torch.set_num_threads(1)
    x, y = load_bundled("train")
    net = Zor([Layer(784), Layer(64), Layer(784)], seed=0, device="cpu",
              task={"name": "reconstruct", "data": {"name": FASHION_MNIST}})
    net.fit(x[few_shot(y, 1)], steps=120, progress=False)
    d = tmp_path_factory.mktemp("int8")
    net.save(d / "fewshot.zor")
    res = export(d / "fewshot.zor", d / "float.onnx")
    return d, res


def _init(proto: onnx.ModelProto) -> dict:
    return {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}


def test_int8_reports_agreement_size_and_drop_per_layer(fewshot):
    d, float_res = fewshot
    res = export(d / "fewshot.zor", d / "int8.onnx", quantize="int8")
    q = res.quantization
    assert q["mode"] == "int8" and q["profile"] == "generic" and q["fallback"] == []
    assert q["validation"]["rows"] == 500                          # the bundled test images
    for row in q["layers"][1:]:
        assert row["spike_agreement"] >= 0.99 and row["precision"] == "int8"
        assert row["weight_bytes"] <= 0.3 * row["weight_bytes_float"]
        assert "metric_drop_alone" in row
    assert q["metric"]["metric"] == "seed_accuracy" and q["metric"]["reference"] == "input"
    assert abs(q["metric"]["drop"]) <= 0.5 and "psnr_drop" in q["metric"]
    assert res.bytes <= 0.30 * float_res.bytes                     # the size target
    meta = load_model_file(d / "int8.onnx")
    assert {p.key for p in meta.metadata_props} >= {fmt.KEYS.QUANTIZATION, fmt.KEYS.CALIBRATION}


def test_int8_keeps_thresholds_and_charges_float(fewshot):
    d, _ = fewshot
    export(d / "fewshot.zor", d / "int8b.onnx", quantize="int8")
    proto = onnx.load(str(d / "int8b.onnx"))
    model = Zor.load(d / "fewshot.zor", device="cpu")
    inits = _init(proto)
    for i in range(3):
        assert inits[fmt.threshold(i)].dtype == np.float32
        np.testing.assert_array_equal(inits[fmt.threshold(i)], model.threshold(i).numpy())
    quantized = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert quantized
    for q in quantized:   # a charge is quantized only to feed its gate in integers, Q(c)·int8(s) (export/quantize.py)
        if q.input[0].startswith("charge_"):
            assert [n.op_type for n in proto.graph.node if q.output[0] in n.input] == ["Mul"]
    producers = {o: n.op_type for n in proto.graph.node for o in n.output}
    assert not any(producers[fmt.charge(i)] in ("DequantizeLinear", "QLinearMatMul") for i in range(3))
    assert inits[fmt.weight(0) + "_quantized"].dtype == np.int8   # generic: s8 weights


def test_int8_fallback_forced_by_a_tiny_budget(fewshot):
    """A spike budget of 100 % is missed by layer 1 once W_0 is int8: connection 0 falls back to float."""
    d, _ = fewshot
    res = export(d / "fewshot.zor", d / "fallback.onnx", quantize="int8", spike_budget=1.0)
    q = res.quantization
    assert q["passes"][0]["fallback"] == [] and q["passes"][0]["spike_agreement"][1] < 1.0
    assert q["fallback"] == [0]
    row = q["layers"][1]
    assert row["precision"] == "float" and row["fallback"] and row["spike_agreement"] == 1.0
    assert row["weight_bytes"] == row["weight_bytes_float"]
    proto = onnx.load(str(d / "fallback.onnx"))
    mm = {n.name: n for n in proto.graph.node if n.op_type == "MatMul"}
    assert mm["connection0.matmul"].input[1] == fmt.weight(0)        # the float initializer itself
    assert q["layers"][2]["precision"] == "int8"                     # the other connection stays int8


def test_int8_refused_past_max_drop_and_nothing_written(fewshot, tmp_path):
    """Calibrate on images scaled by 0.01 (even rows), validate on real ones (odd rows): the
    activation ranges are 100× too narrow, outputs saturate, the metric drops far."""
    d, _ = fewshot
    x, _ = load_bundled("test")
    data = np.empty((200, 784), np.float32)
    data[0::2], data[1::2] = 0.01 * x[:100], x[100:200]
    np.save(tmp_path / "bad.npy", data)
    out = tmp_path / "refused.onnx"
    with pytest.raises(QuantizationError, match=r"drops by .* more than --max-drop 0.5.*nothing was written") as err:
        export(d / "fewshot.zor", out, quantize="int8", calibration=tmp_path / "bad.npy", spike_budget=0.0)
    assert err.value.report["metric"]["drop"] > 0.5
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "bad.npy"]


@pytest.mark.parametrize("profile, act, weight", [("rpi4", np.int8, np.int8), ("x86-64-avx2", np.uint8, np.int8)])
def test_int8_recipe_comes_from_the_device_profile(fewshot, profile, act, weight):
    d, _ = fewshot
    res = export(d / "fewshot.zor", d / f"{profile}.onnx", quantize="int8", device=profile)
    assert res.quantization["recipe"] == get_profile(profile).int8.to_dict()
    proto = onnx.load(str(d / f"{profile}.onnx"))
    inits = _init(proto)
    q = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert {inits[n.input[2]].dtype for n in q} == {np.dtype(act)}
    assert inits[fmt.weight(1) + "_quantized"].dtype == weight
    assert inits[fmt.weight(1) + "_scale"].shape == (784,)          # per channel: one scale per output unit


def test_int8_qoperator_recipe(fewshot):
    d, _ = fewshot
    base = get_profile("generic")
    prof = dataclasses.replace(base, name="qop", int8=dataclasses.replace(base.int8, format="QOperator"))
    res = export(d / "fewshot.zor", d / "qop.onnx", quantize="int8", device=prof)
    ops = {n.op_type for n in onnx.load(str(d / "qop.onnx")).graph.node}
    assert "QLinearMatMul" in ops and res.quantization["charges"].startswith("quantized")
    assert all(row["spike_agreement"] >= 0.99 for row in res.quantization["layers"])


def test_int8_stateful_model_with_npy_calibration(tmp_path):
    rng = np.random.default_rng(0)
    net = Zor([Layer(24, decay=0.5), Layer(16, decay=0.8, refractory=0.1, min_charge=0.0),
               Layer(24, activation_function="sigmoid")], seed=0, device="cpu")
    data = rng.random((60, 24), dtype=np.float32)
    net.fit(data, steps=30, progress=False)
    np.save(tmp_path / "cal.npy", data)
    res = export(net, tmp_path / "s8.onnx", quantize="int8", calibration=tmp_path / "cal.npy", steps=10)
    q = res.quantization
    assert q["validation"] == {"rows": 30, "steps": 10, "source": "cal.npy"}
    assert res.calibration["steps"] == 10 and len(res.calibration["layers"]) == 3
    assert all(row["spike_agreement"] >= 0.99 for row in q["layers"]) and q["metric"]["drop"] <= 0.5
    assert {i.name for i in onnx.load(str(tmp_path / "s8.onnx")).graph.input} == {"input", "state_in_0", "state_in_1"}


def test_int8_needs_calibration_data_of_the_right_width(tmp_path):
    net = Zor([Layer(10), Layer(4), Layer(10)], seed=0, device="cpu")
    with pytest.raises(DataError, match=r"pass --calibration DATA, a .npy file of shape \(N, 10\)"):
        export(net, tmp_path / "a.onnx", quantize="int8")
    np.save(tmp_path / "wide.npy", np.zeros((8, 12), np.float32))
    with pytest.raises(ShapeError, match=r"expected shape \(N, 10\) .* got \(8, 12\)"):
        export(net, tmp_path / "a.onnx", quantize="int8", calibration=tmp_path / "wide.npy")
    assert not (tmp_path / "a.onnx").exists()


def test_fp16_halves_weights_and_verifies_against_rounded_engine(fewshot):
    d, float_res = fewshot
    res = export(d / "fewshot.zor", d / "fp16.onnx", quantize="fp16")
    assert res.verification["fp16"]["passed"] and res.verification["fp16"]["mode"] == "fp16"
    assert res.verification["fp16"]["outputs"]["output"]["max_abs_diff"] <= 1e-5
    assert res.quantization["mode"] == "fp16" and abs(res.quantization["metric"]["drop"]) <= 0.05
    inits = _init(onnx.load(str(d / "fp16.onnx")))
    assert inits[fmt.weight(0) + "_fp16"].dtype == np.float16 and inits[fmt.threshold(1)].dtype == np.float32
    assert 0.45 * float_res.bytes < res.bytes < 0.56 * float_res.bytes


def test_fp16_refused_past_max_drop(tmp_path):
    """W = 0.9996·I: float output 0.9996·x (error 0.0004·x); fp16 stores 0.99951172 (error
    0.00048828·x), so the seed metric drops by 100·0.0000883·mean(x) ≈ 0.0044 points."""
    net = Zor([Layer(8), Layer(8)], seed=0, device="cpu", task={"name": "reconstruct"})
    with torch.no_grad():
        net.weights[0].copy_(0.9996 * torch.eye(8))
    x = np.random.default_rng(0).uniform(0.2, 1.0, size=(40, 8)).astype(np.float32)
    with pytest.raises(QuantizationError, match=r"fp16 export refused: .* more than --max-drop 0.001") as err:
        export(net, tmp_path / "h.onnx", quantize="fp16", calibration=x, max_drop=0.001)
    assert err.value.report["metric"]["drop"] == pytest.approx(100 * (0.00048828 - 0.0004) * x[1::2].mean(), rel=0.02)
    assert not (tmp_path / "h.onnx").exists()
    assert export(net, tmp_path / "h.onnx", quantize="fp16", calibration=x, max_drop=0.01).mode == "fp16"
