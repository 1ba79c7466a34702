"""Sparse row tensors read into huge pages: the initializer scan, the buffers, and the Model's use of them."""

import dataclasses
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from zor.export import export
from zor.runtime import Model, hugepages
from zor.runtime.onnxmeta import RawTensor, ScanError, find_initializers

from zor import Layer, Zor
from zor.common import format as fmt
from zor.common.errors import ModelFileError, WeightFileError


def _file(tmp_path, tensors, name="m.onnx"):
    """A one-node ONNX file (Identity of its input) carrying ``tensors`` as initializers."""
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], tensors)
    path = tmp_path / name
    onnx.save(helper.make_model(graph), path)
    return path


def _read(path, raw):
    with open(path, "rb") as f:
        f.seek(raw.offset)
        return np.frombuffer(f.read(raw.nbytes), raw.dtype).reshape(raw.shape)


def test_find_initializers_locates_raw_data(tmp_path):
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    q = np.array([[-3, 7]], dtype=np.int8)
    path = _file(tmp_path, [numpy_helper.from_array(w, "w"), numpy_helper.from_array(q, "q")])
    found = find_initializers(path, ["w", "q", "absent"])
    assert set(found) == {"w", "q"}
    assert found["w"] == RawTensor("w", "float32", (3, 4), found["w"].offset, 48)
    assert found["q"].dtype == "int8" and found["q"].shape == (1, 2) and found["q"].nbytes == 2
    np.testing.assert_array_equal(_read(path, found["w"]), w)
    np.testing.assert_array_equal(_read(path, found["q"]), q)


def test_find_initializers_skips_typed_and_external_data(tmp_path):
    typed = helper.make_tensor("typed", TensorProto.FLOAT, [2], [1.0, 2.0])        # float_data, no raw_data
    ext = numpy_helper.from_array(np.ones(4, np.float32), "ext")
    ext.data_location = TensorProto.EXTERNAL
    ext.ClearField("raw_data")
    ext.external_data.add(key="location", value="elsewhere.bin")
    raw = numpy_helper.from_array(np.ones(2, np.float32), "raw")
    path = _file(tmp_path, [typed, ext, raw])
    assert set(find_initializers(path, ["typed", "ext", "raw"])) == {"raw"}


def test_find_initializers_refuses_truncated_and_foreign_files(tmp_path):
    path = _file(tmp_path, [numpy_helper.from_array(np.ones((64, 64), np.float32), "w")])
    data = path.read_bytes()
    short = tmp_path / "short.onnx"
    short.write_bytes(data[: len(data) // 2])
    with pytest.raises(ScanError):
        find_initializers(short, ["w"])
    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes(b"\xff" * 64)
    with pytest.raises(ScanError):
        find_initializers(foreign, ["w"])


def test_advised_buffer_is_aligned_and_writable():
    buf = hugepages.advised_buffer(hugepages.HUGE_PAGE + 123)
    assert buf.dtype == np.uint8 and buf.nbytes == hugepages.HUGE_PAGE + 123 and buf.flags.writeable
    if hugepages.SUPPORTED:
        assert buf.ctypes.data % hugepages.HUGE_PAGE == 0
    buf[:] = 7
    assert int(buf[-1]) == 7
    assert hugepages.advised_buffer(0).nbytes == 0
    with pytest.raises(ValueError):
        hugepages.advised_buffer(-1)


def test_read_tensor_checks_sizes(tmp_path):
    w = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    path = _file(tmp_path, [numpy_helper.from_array(w, "w")])
    raw = find_initializers(path, ["w"])["w"]
    got = hugepages.read_tensor(path, raw)
    assert got.dtype == np.float32 and got.shape == (5, 7)
    np.testing.assert_array_equal(got, w)
    with pytest.raises(ScanError, match="expected 140"):
        hugepages.read_tensor(path, dataclasses.replace(raw, nbytes=139))
    with pytest.raises(ScanError, match="ends"):
        hugepages.read_tensor(path, dataclasses.replace(raw, offset=os.path.getsize(path) - 10))


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A sparse export whose first connection (1024 × 1024 float32, 4 MiB) is worth huge pages."""
    folder = tmp_path_factory.mktemp("wide")
    net = Zor([Layer(1024, threshold=0.5), Layer(1024, threshold=0.0), Layer(8)], seed=0, device="cpu")
    rng = np.random.default_rng(0)
    calib = (rng.random((16, 1024)) * (rng.random((16, 1024)) < 0.1)).astype(np.float32)
    export(net, folder / "s.onnx", path="sparse", calibration=calib)
    export(net, folder / "d.onnx", path="dense")
    return folder, calib


def test_model_reads_sparse_rows_into_huge_pages_with_identical_outputs(wide):
    folder, x = wide
    on = Model(folder / "s.onnx", device="generic", threads=1)
    off = Model(folder / "s.onnx", device=dataclasses.replace(on.profile, huge_pages=False), threads=1)
    dense = Model(folder / "d.onnx", device="generic", threads=1)
    assert on.metadata.sparse_connections == [0, 1]
    if hugepages.SUPPORTED:
        # W_0 (4 MiB) is read into huge pages; W_1 (1024 × 8 floats) is too small to be worth it
        assert any("huge pages: weight_0 (4.0 MiB)" in n for n in on.notes), on.notes
    else:
        assert not any("huge pages" in n for n in on.notes)
    assert not any("huge pages" in n for n in off.notes + dense.notes)
    for row in range(len(x)):
        a, b = on.run(x[row:row + 1], spikes=True), off.run(x[row:row + 1], spikes=True)
        np.testing.assert_array_equal(a["output"], b["output"])
        np.testing.assert_allclose(a["output"], dense.run(x[row:row + 1])["output"], rtol=0, atol=1e-5)
        for i in range(3):
            np.testing.assert_array_equal(a[fmt.spikes(i)], b[fmt.spikes(i)])


def test_a_truncated_sparse_file_is_still_a_model_file_error(wide, tmp_path):
    folder, _ = wide
    data = (folder / "s.onnx").read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ModelFileError, match="truncated|ONNX"):
        Model(cut, device="generic", threads=1)


def test_scan_of_an_in_memory_model_matches_onnx(wide):
    folder, _ = wide
    path = folder / "s.onnx"
    model = onnx.load(str(path))
    want = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    found = find_initializers(path, list(want))
    assert fmt.weight(0) in found and found[fmt.weight(0)].nbytes == 1024 * 1024 * 4
    for name, raw in found.items():
        np.testing.assert_array_equal(_read(path, raw), want[name])


@pytest.fixture(scope="module")
def external(wide):
    """The same wide net exported sparse with --external-weights."""
    folder, calib = wide
    net = Zor([Layer(1024, threshold=0.5), Layer(1024, threshold=0.0), Layer(8)], seed=0, device="cpu")
    export(net, folder / "e.onnx", path="sparse", calibration=calib, external_weights=True)
    return folder / "e.onnx", calib


def test_external_weights_loaded_whole_use_huge_pages_too(external):
    path, x = external
    on = Model(path, device="generic", threads=1, weights="load")
    off = Model(path, device=dataclasses.replace(on.profile, huge_pages=False), threads=1, weights="load")
    assert on.weights_mode == "load"
    assert any("huge pages: weight_0" in n for n in on.notes) == hugepages.SUPPORTED, on.notes
    for row in range(len(x)):
        np.testing.assert_array_equal(on.run(x[row:row + 1])["output"], off.run(x[row:row + 1])["output"])


@pytest.mark.skipif(not hugepages.SUPPORTED, reason="no transparent huge pages on this platform")
def test_external_rows_read_into_huge_pages_are_checked(external, tmp_path):
    # one flipped byte inside W_0 (the tensor read into huge pages): refused by its SHA-256, never a wrong answer
    path, _ = external
    model = Model(path, device="generic", threads=1, weights="load")
    weights = path.with_suffix(".weights")
    entry = model._weightfile.entries[fmt.weight(0)]
    copy_model, copy_weights = tmp_path / path.name, tmp_path / weights.name
    copy_model.write_bytes(path.read_bytes())
    data = bytearray(weights.read_bytes())
    data[entry.offset + 100] ^= 0xFF
    copy_weights.write_bytes(bytes(data))
    with pytest.raises(WeightFileError, match="SHA-256"):
        Model(copy_model, device="generic", threads=1, weights="load", verify_weights=False)


@pytest.mark.parametrize("failure", [MemoryError(), OSError(12, "Cannot allocate memory")])
def test_no_memory_for_huge_pages_leaves_loading_to_onnxruntime(external, wide, monkeypatch, failure):
    # under a tight address-space limit the mapping fails: the model loads as before, or fails with
    # onnxruntime's own "not enough memory" advice, never with an error about huge pages
    def refuse(nbytes):
        raise failure

    monkeypatch.setattr(hugepages, "advised_buffer", refuse)
    for path, kw in ((external[0], {"weights": "load"}), (wide[0] / "s.onnx", {})):
        m = Model(path, device="generic", threads=1, **kw)
        assert not any("huge pages" in n for n in m.notes)
        assert m.run(wide[1][:1])["output"].shape == (1, 8)
