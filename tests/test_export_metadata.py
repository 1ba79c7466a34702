"""Metadata (the zor.* keys), the weights hash, atomic writes, and input validation properties."""

import hashlib
import json

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from zor.export import export, to_onnx
from zor.export.calibration import load_calibration
from zor.export.metadata import dumps, jsonable, read_metadata, weights_sha256
from zor.export.registry import REGISTRY

from zor import Layer, Zor
from zor.common import format as fmt
from zor.common.errors import (
    DataError,
    ExportError,
    OutputPathError,
    ShapeError,
    VerificationError,
)


def _strict(text: str):
    def bad(const):
        raise ValueError(f"non-strict JSON constant {const}")

    return json.loads(text, parse_constant=bad)


def _net(**kw):
    return Zor([Layer(4, decay=0.5, refractory=0.1), Layer(3, activation_function="relu"),
                Layer(4, activation_function="sigmoid")], seed=0, device="cpu", **kw)


def test_every_metadata_key_is_present_and_strict_json(tmp_path):
    net = _net(task={"name": "reconstruct", "input": {"range": [0, 1], "preprocessing": "pixels / 255"}})
    res = export(net, tmp_path / "m.onnx", steps=3)
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    keys = [v for k, v in vars(fmt.KEYS).items() if not k.startswith("_")]
    assert set(keys) <= set(props)
    for key in (fmt.KEYS.LAYERS, fmt.KEYS.TASK, fmt.KEYS.STATE, fmt.KEYS.QUANTIZATION, fmt.KEYS.CALIBRATION,
                fmt.KEYS.VERIFICATION):
        _strict(props[key])
    assert props[fmt.KEYS.FORMAT] == "zor-onnx" and props[fmt.KEYS.FORMAT_VERSION] == "1"
    assert props[fmt.KEYS.STATEFUL] == "true"
    layers = _strict(props[fmt.KEYS.LAYERS])
    assert [row["size"] for row in layers] == [4, 3, 4]
    assert [row["activation"] for row in layers] == ["identity", "relu", "sigmoid"]
    assert layers[2]["threshold"] == {"min": "-inf", "max": "-inf", "mean": "-inf"}
    assert layers[0]["decay"] == 0.5 and layers[0]["stateful"] is True and layers[1]["stateful"] is False
    task = _strict(props[fmt.KEYS.TASK])
    assert task["name"] == "reconstruct" and task["input"]["preprocessing"] == "pixels / 255"
    assert task["input"]["shape"] == ["batch", 4] and task["output"]["range"] == [0.0, 1.0]   # from the sigmoid
    assert _strict(props[fmt.KEYS.STATE]) == [{"layer": 0, "size": 4, "input": "state_in_0", "output": "state_out_0",
                                              "initial": 0.0, "meaning": "charge carried to the next step (after reset)"}]
    ver = _strict(props[fmt.KEYS.VERIFICATION])
    assert ver["passed"] is True and ver["float32"] == res.verification["float32"]
    assert _strict(props[fmt.KEYS.QUANTIZATION]) == {"mode": "none"}


def test_weights_hash_is_sha256_of_thresholds_and_weights_in_layer_order():
    net = _net()
    h = hashlib.sha256()
    for i in range(3):
        h.update(net.threshold(i).numpy().astype("<f4").tobytes())
        if i < 2:
            h.update(net.weights[i].detach().numpy().astype("<f4").tobytes())
    assert weights_sha256(net) == h.hexdigest()
    assert read_metadata(to_onnx(net))[fmt.KEYS.WEIGHTS_SHA256] == h.hexdigest()


@settings(max_examples=25, deadline=None)
@given(i=st.integers(0, 1), r=st.integers(0, 3), c=st.integers(0, 2), delta=st.sampled_from([1e-7, -0.5, 3.0]))
def test_any_weight_change_changes_the_hash(i, r, c, delta):
    net = _net()
    before = weights_sha256(net)
    rows, cols = net.weights[i].shape
    with torch.no_grad():
        net.weights[i][r % rows, c % cols] += delta
    assert weights_sha256(net) != before


@settings(max_examples=50, deadline=None)
@given(st.recursive(st.floats(allow_nan=True, allow_infinity=True) | st.integers() | st.text(max_size=3),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=3), kids, max_size=3),
                    max_leaves=10))
def test_metadata_json_is_always_strict(value):
    _strict(dumps(value))
    assert jsonable(float("nan")) == "nan" and jsonable(-float("inf")) == "-inf"


@settings(max_examples=40, deadline=None)
@given(width=st.integers(1, 40), rows=st.integers(2, 30), model_width=st.integers(1, 40))
def test_calibration_width_must_match(width, rows, model_width):
    x = np.zeros((rows, width), np.float32)
    if width == model_width:
        cal = load_calibration(x, model_width)
        assert cal.calibrate.shape[1] == model_width and len(cal.calibrate) + (len(cal.validate) if rows >= 20 else 0) == rows
    else:
        with pytest.raises(ShapeError, match=rf"expected shape \(N, {model_width}\)"):
            load_calibration(x, model_width)


@settings(max_examples=40, deadline=None)
@given(pos=st.tuples(st.integers(0, 9), st.integers(0, 4)), bad=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_calibration_with_non_finite_values_is_rejected(pos, bad):
    x = np.ones((10, 5), np.float32)
    x[pos] = bad
    with pytest.raises(DataError, match="expected finite values, got 1 NaN/inf"):
        load_calibration(x, 5)


@pytest.mark.parametrize("bad, error, message", [
    (np.zeros((5, 3), np.int64), DataError, "expected floating-point values, got dtype int64"),
    (np.zeros((1, 3), np.float32), DataError, "expected at least 2 rows, got 1"),
    (np.zeros(3, np.float32), ShapeError, r"expected shape \(N, 3\) .* got \(3,\)"),
])
def test_calibration_dtype_rows_and_rank(bad, error, message):
    with pytest.raises(error, match=message):
        load_calibration(bad, 3)


@pytest.mark.parametrize("where", ["threshold", "weight"])
def test_nan_in_an_in_memory_model_is_an_export_error(tmp_path, where):
    net = _net()
    with torch.no_grad():
        if where == "threshold":
            net.threshold(1)[0] = float("nan")
        else:
            net.weights[1][0, 0] = float("inf")
    with pytest.raises(ExportError, match=r"NaN" if where == "threshold" else r"W_1 .* NaN/inf"):
        export(net, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_failed_export_leaves_an_existing_file_untouched_and_no_temp_files(tmp_path, monkeypatch):
    from zor.export import converters

    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous model")

    def broken(ctx):
        ctx.threshold = ctx.threshold + np.float32(1.0)
        return converters.convert_dense(ctx)

    monkeypatch.setitem(REGISTRY, "dense", broken)
    with pytest.raises(VerificationError):
        export(_net(), out, steps=3)
    assert out.read_bytes() == b"previous model" and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_a_write_that_fails_midway_leaves_nothing(tmp_path, monkeypatch):
    import zor.export.api as api

    def failing_write(path, data):
        from zor.common.fileio import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_bytes(data[: len(data) // 2])
            raise OSError("disk full")

    monkeypatch.setattr(api, "write_bytes_atomic", failing_write)
    with pytest.raises(OSError, match="disk full"):
        export(_net(), tmp_path / "m.onnx", steps=3)
    assert list(tmp_path.iterdir()) == []


def test_output_folder_is_checked_before_any_work(tmp_path):
    with pytest.raises(OutputPathError, match="does not exist"):
        export(_net(), tmp_path / "missing" / "m.onnx")
    with pytest.raises(OutputPathError, match="it is a folder"):
        export(_net(), tmp_path)
