"""A changed model file never runs: tampered inline tensors, metadata and graph; external-data
entries pointed elsewhere; weights edited in place with their mtime restored; foreign operators.
``check_weights=False`` is the opt-out of the hashing only (the graph checks stay)."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from zor.devices import get
from zor.export import export
from zor.runtime import Model

from zor import Layer, Zor
from zor.common import format as fmt
from zor.common.errors import ModelFileError, WeightFileError


def _net() -> Zor:
    return Zor([Layer(16, threshold=0.3), Layer(16, threshold=0.2), Layer(16, activation_function="sigmoid")],
               seed=3, device="cpu")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tamper")
    net = _net()
    x = np.random.default_rng(0).random((4, 16), dtype=np.float32)
    export(net, d / "inline.onnx")
    export(net, d / "ext.onnx", external_weights=True, path="sparse", max_batch=4, calibration=x)
    return d, x


def _load(path, **kw):
    return Model(path, device="generic", threads=1, **kw)


def _edited(src, dst, edit):
    proto = onnx.load(str(src), load_external_data=False)
    edit(proto)
    onnx.save(proto, str(dst))
    return dst


def _negate(name):
    def edit(proto):
        for init in proto.graph.initializer:
            if init.name == name:
                init.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(init), name))
    return edit


def _set_meta(key, value):
    def edit(proto):
        for p in proto.metadata_props:
            if p.key == key:
                p.value = value
    return edit


def test_tampered_inline_weights_never_run(files, tmp_path):
    d, x = files
    ref = _load(d / "inline.onnx")(x)
    bad = _edited(d / "inline.onnx", tmp_path / "neg.onnx", _negate(fmt.weight(0)))
    with pytest.raises(WeightFileError, match="tensor weight_0 does not match its SHA-256 in zor.integrity"):
        _load(bad)
    # the explicit opt-out runs it (and shows why the check matters)
    assert np.abs(_load(bad, check_weights=False)(x) - ref).max() > 1e-3
    with pytest.warns(DeprecationWarning, match="check_weights"):
        _load(bad, verify_weights=False)


@pytest.mark.parametrize("key, value, match", [
    (fmt.KEYS.WEIGHTS_SHA256, "0" * 64, "the metadata does not match"),
    (fmt.KEYS.INTEGRITY, "{}", "zor.integrity is not a record"),
    (fmt.KEYS.INTEGRITY, "[" * 100000, "zor.integrity is not a record"),
])
def test_edited_metadata_never_runs(files, tmp_path, key, value, match):
    d, _ = files
    with pytest.raises(ModelFileError, match=match):
        _load(_edited(d / "inline.onnx", tmp_path / "m.onnx", _set_meta(key, value)))


def test_a_threshold_changed_is_named(files, tmp_path):
    d, _ = files
    bad = _edited(d / "inline.onnx", tmp_path / "neg.onnx", _negate(fmt.threshold(1)))
    with pytest.raises(WeightFileError, match="tensor threshold_1"):
        _load(bad)


def test_edited_graph_never_runs(files, tmp_path):
    d, _ = files

    def rename_output(proto):
        proto.graph.output[0].doc_string = "edited"
    with pytest.raises(ModelFileError, match="graph's nodes, inputs or outputs do not match"):
        _load(_edited(d / "inline.onnx", tmp_path / "g.onnx", rename_output))


def test_a_file_without_a_record_loads_with_a_note(files, tmp_path):
    d, x = files

    def strip(proto):
        keep = [(p.key, p.value) for p in proto.metadata_props if p.key != fmt.KEYS.INTEGRITY]
        del proto.metadata_props[:]
        for k, v in keep:
            proto.metadata_props.add(key=k, value=v)
    m = _load(_edited(d / "inline.onnx", tmp_path / "old.onnx", strip))
    assert any("zor.integrity missing" in n for n in m.notes)
    np.testing.assert_array_equal(m(x), _load(d / "inline.onnx")(x))


# ---------------------------------------------------------------- external weights
def _external_copy(files, tmp_path, edit=None):
    d, _ = files
    props = {p.key: p.value for p in onnx.load(str(d / "ext.onnx"), load_external_data=False).metadata_props}
    spec = json.loads(props[fmt.KEYS.WEIGHTS])
    (tmp_path / spec["location"]).write_bytes((d / spec["location"]).read_bytes())
    path = _edited(d / "ext.onnx", tmp_path / "ext.onnx", edit or (lambda p: None))
    return path, tmp_path / spec["location"], {t["name"]: t for t in spec["tensors"]}


def _entry(proto, name, key, value):
    for init in proto.graph.initializer:
        if init.name == name:
            for kv in init.external_data:
                if kv.key == key:
                    kv.value = value


@pytest.mark.parametrize("check", [True, False])
def test_external_entries_pointing_at_another_file_are_refused(files, tmp_path, check):
    path, weights, _ = _external_copy(files, tmp_path)
    (tmp_path / "other.weights").write_bytes(weights.read_bytes())
    bad = _edited(path, tmp_path / "o.onnx", lambda p: _entry(p, fmt.weight(0), "location", "other.weights"))
    with pytest.raises(WeightFileError, match="graph tensor weight_0 reads 'other.weights'"):
        _load(bad, weights="load", check_weights=check)


@pytest.mark.parametrize("check", [True, False])
def test_swapped_external_offsets_are_refused(files, tmp_path, check):
    path, _, tensors = _external_copy(files, tmp_path)
    a, b = fmt.threshold(0), fmt.threshold(1)                 # the same length: a swap reads valid bytes

    def swap(proto):
        _entry(proto, a, "offset", str(tensors[b]["offset"]))
        _entry(proto, b, "offset", str(tensors[a]["offset"]))
    bad = _edited(path, tmp_path / "s.onnx", swap)
    for mode in ("load", "rows"):
        with pytest.raises(WeightFileError, match=f"graph tensor {a} reads .* expected"):
            _load(bad, weights=mode, check_weights=check)


def _edit_in_place(weights, offset):
    st = os.stat(weights)
    with open(weights, "r+b") as f:
        f.seek(offset)
        b = f.read(4)
        f.seek(offset)
        f.write(bytes(v ^ 0x40 for v in b))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(weights).st_mtime_ns == st.st_mtime_ns


def test_in_place_edit_with_mtime_restored_is_caught(files, tmp_path):
    _, x = files
    path, weights, tensors = _external_copy(files, tmp_path)
    ref = _load(path, weights="load")(x)
    loaded = _load(path, weights="load")
    rows = _load(path, weights="rows")
    np.testing.assert_allclose(rows(x), ref, atol=1e-5)       # every row of W_0 read once, and checked
    active = np.ones((1, 16), np.float32)                      # every unit spikes: every row is read
    w0 = tensors[fmt.weight(0)]
    _edit_in_place(weights, w0["offset"] + 5 * 16 * 4)         # row 5 of W_0, after the rows were first read
    for model in (loaded, rows):                               # rows checked at first read: the stamp catches it
        with pytest.raises(WeightFileError, match="changed under the model .inode change time"):
            model(active)
    for mode in ("load", "rows", "auto"):                      # loaded again: SHA-256, or CRC at first read
        with pytest.raises(WeightFileError, match="weight_0"):
            m = _load(path, weights=mode)
            m(active)


# ---------------------------------------------------------------- foreign graphs
def _add_nodes(nodes, inits=(), outputs=()):
    def edit(proto):
        proto.graph.node.extend(nodes)
        proto.graph.initializer.extend(inits)
        proto.graph.output.extend(outputs)
    return edit


def _loop():
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, [])])
    trips = numpy_helper.from_array(np.array(10 ** 15, np.int64), "trips")
    cond = numpy_helper.from_array(np.array(True), "cond")
    return [helper.make_node("Loop", ["trips", "cond"], [], body=body, name="forever")], [trips, cond]


_HUGE = numpy_helper.from_array(np.array([100000, 100000], np.int64), "huge_shape")
_WIDE = numpy_helper.from_array(np.ones((100000, 1), np.float32), "wide")
FOREIGN = {
    "Loop": (*_loop(), "ai.onnx:Loop is not one a Zor export uses"),
    "ConstantOfShape": ([helper.make_node("ConstantOfShape", ["huge_shape"], ["big"], name="bomb")], [_HUGE],
                        "node 'bomb': operator ai.onnx:ConstantOfShape is not one a Zor export uses"),
    "domain": ([helper.make_node("Relu", ["input"], ["r"], domain="com.example", name="r")], [],
               "operator com.example:Relu is not one"),
    "constant-only": ([helper.make_node("MatMul", ["wide", "wide2"], ["sq"], name="fold")],
                      [_WIDE, numpy_helper.from_array(np.ones((1, 100000), np.float32), "wide2")],
                      "computes on constants alone"),
    "broadcast": ([helper.make_node("Add", ["input", "wide"], ["b"], name="bcast")], [_WIDE],
                  "broadcasts the constant 'wide'"),
}


@pytest.mark.parametrize("case", sorted(FOREIGN))
@pytest.mark.parametrize("check", [True, False])
def test_foreign_operators_are_refused_before_onnxruntime(files, tmp_path, case, check):
    d, _ = files
    nodes, inits, match = FOREIGN[case]
    bad = _edited(d / "inline.onnx", tmp_path / "f.onnx", _add_nodes(nodes, inits))
    with pytest.raises(ModelFileError, match=match):
        _load(bad, check_weights=check)


def test_model_local_functions_are_refused(files, tmp_path):
    d, _ = files

    def add_function(proto):
        proto.functions.append(helper.make_function("com.example", "f", ["a"], ["b"],
                                                    [helper.make_node("Identity", ["a"], ["b"])],
                                                    [helper.make_opsetid("", 17)]))
    with pytest.raises(ModelFileError, match="model-local functions"):
        _load(_edited(d / "inline.onnx", tmp_path / "fn.onnx", add_function))


def _ops(path):
    proto = onnx.load(str(path), load_external_data=False)
    return {(n.domain, n.op_type) for n in proto.graph.node}


@pytest.mark.parametrize("kw", [{}, {"quantize": "int8"}, {"quantize": "int8", "device": "qop"}, {"quantize": "fp16"},
                                {"path": "sparse"}, {"path": "sparse", "max_batch": 4},
                                {"path": "sparse", "quantize": "int8", "spike_budget": 0.0}])
def test_every_exported_form_passes_the_allowlist(tmp_path, kw):
    kw = dict(kw)
    if kw.get("device") == "qop":
        base = get("generic")
        kw["device"] = dataclasses.replace(base, name="qop", int8=dataclasses.replace(base.int8, format="QOperator"))
    x = np.random.default_rng(1).random((40, 16), dtype=np.float32)
    export(_net(), tmp_path / "m.onnx", calibration=x, max_drop=100.0, **kw)
    assert {op for dom, op in _ops(tmp_path / "m.onnx")} <= fmt.OPERATORS
    m = _load(tmp_path / "m.onnx")
    assert not any("integrity" in n for n in m.notes) and m(x[:1]).shape == (1, 16)
