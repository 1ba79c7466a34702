"""Bad input and bad files: each a ZorError subclass saying expected and given."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from test_runtime_support import build_model, set_metadata
from zor.runtime import Model

from zor.common.errors import (
    ConfigError,
    DeviceError,
    DTypeError,
    ModelFileError,
    NonFiniteError,
    ShapeError,
    StateError,
    ZorError,
)

INF = float("inf")


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("e") / "good.onnx"
    rng = np.random.default_rng(0)
    return build_model(path, [{"size": 4}, {"size": 3, "decay": 0.5}, {"size": 2, "activation": "sigmoid"}],
                       [rng.normal(size=(4, 3)), rng.normal(size=(3, 2))],
                       [np.zeros(4), np.zeros(3), np.full(2, -INF)])


@pytest.fixture(scope="module")
def model(good):
    return Model(good, device="generic", threads=1)


@pytest.mark.parametrize("x, err, text", [
    (np.zeros((2, 5), np.float32), ShapeError, "expected shape (B, 4), got (2, 5)"),
    (np.zeros(4, np.float32), ShapeError, "add a batch axis"),
    (np.zeros((2, 2, 2), np.float32), ShapeError, "flatten them"),
    (np.zeros((0, 4), np.float32), ShapeError, "expected at least one row"),
    (np.zeros((2, 4), np.int64), DTypeError, "expected a floating-point array (float32), got dtype int64"),
    (np.zeros((2, 4), np.uint8), DTypeError, "scale integer images"),
    (np.zeros((2, 4), bool), DTypeError, "got dtype bool"),
    (np.zeros((2, 4), np.complex64), DTypeError, "got dtype complex64"),
    (np.array([["a"] * 4]), DTypeError, "got dtype <U1"),
    ("text", DTypeError, "got str"),
    (None, DTypeError, "got NoneType"),
    (np.array([[0.0, np.nan, 0.0, np.inf]], np.float32), NonFiniteError, "got 1 NaN and 1 inf entries"),
    (np.array([[1e300, 0, 0, 0]]), NonFiniteError, "overflows to inf"),
    ({"inptu": np.zeros((1, 4), np.float32)}, ShapeError, "unknown input name(s) 'inptu'"),
    ({"state_in_1": np.zeros((1, 3), np.float32)}, ShapeError, "missing input 'input'"),
    ({"input": np.zeros((2, 4), np.float32), "state_in_1": np.zeros((3, 3), np.float32)}, ShapeError,
     "expected shape (2, 3) to match the input's batch, got (3, 3)"),
])
def test_bad_input(model, x, err, text):
    with pytest.raises(err) as info:
        model.run(x)
    assert isinstance(info.value, ZorError)
    assert text in str(info.value)
    assert "expected" in str(info.value)


def test_unknown_output_name(model):
    with pytest.raises(ShapeError, match="unknown output name 'spikes_9': expected one of"):
        model.run(np.zeros((1, 4), np.float32), outputs=["spikes_9"])


def test_ragged_list_is_a_shape_error(model):
    with pytest.raises(ShapeError, match="numpy cannot make an array"):
        model.run([[0.0, 1.0], [1.0]])


def test_unknown_device_and_bad_threads(good):
    with pytest.raises(DeviceError, match="unknown device profile 'pi9': expected one of"):
        Model(good, device="pi9")
    with pytest.raises(ConfigError, match="threads: expected a positive int"):
        Model(good, device="generic", threads=0)


def _model_error(path, text):
    with pytest.raises(ModelFileError) as info:
        Model(path, device="generic", threads=1)
    msg = str(info.value)
    assert text in msg, msg
    assert "expected" in msg
    assert "Traceback" not in msg
    return msg


def test_missing_empty_and_folder(tmp_path):
    _model_error(tmp_path / "nope.onnx", "does not exist")
    (tmp_path / "empty.onnx").write_bytes(b"")
    _model_error(tmp_path / "empty.onnx", "is empty (0 bytes)")
    _model_error(tmp_path, "is a folder")


def test_not_onnx(tmp_path):
    (tmp_path / "a.onnx").write_text('{"not": "onnx"}')
    _model_error(tmp_path / "a.onnx", "is not an ONNX model")
    (tmp_path / "b.onnx").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _model_error(tmp_path / "b.onnx", "not an ONNX model")


def test_truncated(good, tmp_path):
    data = good.read_bytes()
    for cut in (len(data) // 2, len(data) - 7, 40):
        (tmp_path / "t.onnx").write_bytes(data[:cut])
        _model_error(tmp_path / "t.onnx", "not an ONNX model, or a truncated one")


def test_onnx_but_not_a_zor_export(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "relu.onnx"))
    msg = _model_error(tmp_path / "relu.onnx", "is ONNX but not a Zor export")
    assert "expected metadata zor.format = 'zor-onnx', got None" in msg


def _with_meta(good, tmp_path, **changes):
    m = onnx.load(str(good))
    meta = {p.key: p.value for p in m.metadata_props}
    meta.update(changes)
    set_metadata(m, meta)
    path = tmp_path / "changed.onnx"
    onnx.save(m, str(path))
    return path


def test_newer_format_version(good, tmp_path):
    _model_error(_with_meta(good, tmp_path, **{"zor.format_version": "7"}), "Zor format version 7 is not readable")


def test_malformed_metadata(good, tmp_path):
    _model_error(_with_meta(good, tmp_path, **{"zor.layers": "[{"}), "metadata zor.layers is not valid JSON")
    _model_error(_with_meta(good, tmp_path, **{"zor.layers": json.dumps([{"size": 0}])}), "positive integer sizes")
    _model_error(_with_meta(good, tmp_path, **{"zor.stateful": "maybe"}), "expected 'true' or 'false'")
    _model_error(_with_meta(good, tmp_path, **{"zor.task": "[]"}), "metadata zor.task: expected a JSON dict")


def test_metadata_that_contradicts_the_graph(good, tmp_path):
    sizes = json.dumps([{"size": 5}, {"size": 3}, {"size": 2}])
    _model_error(_with_meta(good, tmp_path, **{"zor.layers": sizes}), "expected (B, 5)")
    _model_error(_with_meta(good, tmp_path, **{"zor.state": "[]", "zor.stateful": "false"}),
                 "graph inputs ['input', 'state_in_1'] do not match the metadata")


def test_stream_on_stateless_model(tmp_path):
    path = build_model(tmp_path / "sl.onnx", [{"size": 2}, {"size": 1}], [np.ones((2, 1))],
                       [np.zeros(2), np.array([-INF])])
    with pytest.raises(StateError) as info:
        Model(path, device="generic", threads=1).stream()
    assert "expected a stateful model for stream()" in str(info.value)
    assert "zor.stateful = false" in str(info.value)
