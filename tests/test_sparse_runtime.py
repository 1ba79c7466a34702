"""Runtime on sparse and external-weight exports: parity, rows mode, metadata without onnx, torch-free."""

import io
import subprocess
import sys
import zlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from zor.export import export, to_onnx
from zor.export.external import ALIGNMENT, row_crc32
from zor.export.session import Stepper
from zor.runtime import Model, weightfile
from zor.runtime.onnxmeta import ScanError, _scan, read_metadata_props

from zor import Conv, Layer, Zor
from zor.common import format as fmt
from zor.common.errors import ConfigError, ModelFileError


def _net(act="identity", stateful=False, seed=0, n=(48, 32, 6)):
    kw = dict(decay=0.5, refractory=0.1, min_charge=0.05) if stateful else {}
    return Zor([Layer(n[0], threshold=0.7, **kw), Layer(n[1], threshold=0.3, activation_function=act, **kw),
                Layer(n[2], activation_function="sigmoid")], seed=seed, device="cpu")


def _x(n, rows, seed=1):
    return np.random.default_rng(seed).random((rows, n), dtype=np.float32)


@pytest.mark.parametrize("act", ["identity", "sigmoid"])
@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_rows_mode_matches_the_loaded_model(tmp_path, act, quantize):
    net = _net(act)
    calib = _x(48, 40, seed=5)
    export(net, tmp_path / "m.onnx", path="sparse", max_batch=4, external_weights=True, quantize=quantize,
           calibration=calib, max_drop=50.0, spike_budget=0.0)
    loaded = Model(tmp_path / "m.onnx", device="generic", threads=1, weights="load")
    rows = Model(tmp_path / "m.onnx", device="generic", threads=1, weights="rows")
    assert loaded.weights_mode == "load" and rows.weights_mode == "rows" and rows.providers == ["rows (numpy)"]
    x = _x(48, 4)
    a, b = loaded.run(x, spikes=True), rows.run(x, spikes=True)
    np.testing.assert_allclose(b["output"], a["output"], rtol=0, atol=1e-5)
    for i in range(3):
        assert np.array_equal(a[fmt.spikes(i)], b[fmt.spikes(i)])
    np.testing.assert_allclose(b["spike_rates"], a["spike_rates"])
    # rows mode has no batch limit of its own (it takes the union of the batch itself)
    assert rows.max_batch is None and rows.run(_x(48, 9))["output"].shape == (9, 6)


def test_rows_mode_reads_only_the_rows_of_units_that_spiked(tmp_path):
    # hand-made input: units 3 and 10 of 48 above θ = 0.7 → two rows of W_0 (32 float32 each) are read;
    # thresholds, crc tables and the hidden layer's rows are counted apart
    net = _net()
    export(net, tmp_path / "m.onnx", path="sparse", external_weights=True)
    m = Model(tmp_path / "m.onnx", device="generic", weights="rows")
    x = np.zeros((1, 48), np.float32)
    x[0, [3, 10]] = 0.9
    before = m.weights_bytes_read
    out = m.run(x, spikes=True)
    hidden = int(out[fmt.spikes(1)].sum())
    read = m.weights_bytes_read - before
    # first call also reads the CRC-32 tables of W_0 (48 × 4 B) and of W_1 when a hidden unit spiked (32 × 4 B)
    want = 2 * 32 * 4 + 48 * 4 + (hidden * 6 * 4 + 32 * 4 if hidden else 0)
    assert read == want
    ref = Stepper(to_onnx(net))
    ref.reset(1)
    np.testing.assert_allclose(out["output"], ref.step(x)["output"], atol=1e-6)


def test_rows_mode_on_a_dense_external_file_uses_the_stored_rest_bias(tmp_path):
    # a dense-path file of a sigmoid hidden layer: the weights file carries sparse_bias_1 outside the graph,
    # so rows mode still reads only active rows
    net = _net("sigmoid")
    res = export(net, tmp_path / "d.onnx", path="dense", external_weights=True)
    extra = {t["name"]: t for t in res.weights["tensors"] if not t["in_graph"]}
    assert fmt.sparse_bias(1) in extra and fmt.row_crc32(0) in extra and fmt.row_crc32(1) in extra
    loaded = Model(tmp_path / "d.onnx", device="generic", weights="load")
    rows = Model(tmp_path / "d.onnx", device="generic", weights="rows")
    x = _x(48, 3)
    np.testing.assert_allclose(rows(x), loaded(x), atol=1e-5)


def test_rows_mode_stream_on_a_stateful_model(tmp_path):
    net = _net("relu", stateful=True)
    export(net, tmp_path / "s.onnx", path="sparse", external_weights=True, steps=5)
    loaded, rows = (Model(tmp_path / "s.onnx", device="generic", weights=w) for w in ("load", "rows"))
    s1, s2 = loaded.stream(), rows.stream()
    x = _x(48, 1)
    for _ in range(6):
        np.testing.assert_allclose(s2.step(x)["output"], s1.step(x)["output"], atol=1e-5)
    np.testing.assert_allclose(s2.state["state_in_1"], s1.state["state_in_1"], atol=1e-5)


def test_external_files_are_plain_onnx_external_data(tmp_path):
    net = _net()
    res = export(net, tmp_path / "m.onnx", path="sparse", external_weights=True)
    spec = res.weights
    assert spec["location"] == "m.weights" and (tmp_path / "m.weights").stat().st_size == spec["bytes"]
    assert all(t["offset"] % ALIGNMENT == 0 for t in spec["tensors"])
    # any onnxruntime loads the pair
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = _x(48, 1)
    ref = Stepper(to_onnx(net))
    ref.reset(1)
    np.testing.assert_allclose(sess.run(["output"], {"input": x})[0], ref.step(x)["output"], atol=1e-6)
    # the stored CRC-32 of row 5 of W_0 is zlib's CRC of its 32 little-endian float32 values
    w0 = net.weights[0].detach().numpy().astype("<f4")
    crc = {t["name"]: t for t in spec["tensors"]}[fmt.row_crc32(0)]
    raw = (tmp_path / "m.weights").read_bytes()[crc["offset"]:crc["offset"] + crc["length"]]
    assert np.frombuffer(raw, "<u4")[5] == zlib.crc32(w0[5].tobytes())
    assert row_crc32(w0)[5] == zlib.crc32(w0[5].tobytes())


def test_rows_mode_needs_external_weights_and_known_options(tmp_path):
    net = _net()
    export(net, tmp_path / "in.onnx", path="sparse")
    with pytest.raises(ConfigError, match="weights='rows' needs a model exported with --external-weights"):
        Model(tmp_path / "in.onnx", device="generic", weights="rows")
    with pytest.raises(ConfigError, match="weights: expected"):
        Model(tmp_path / "in.onnx", device="generic", weights="disk")
    with pytest.raises(ConfigError, match="weights_backend"):
        Model(tmp_path / "in.onnx", device="generic", weights_backend="fuse")


def test_rows_mode_refuses_conv_models(tmp_path):
    net = Zor([Layer(2 * 6 * 6, shape=(2, 6, 6)), Conv(3, kernel_size=3, stride=2, padding=1), Layer(4)],
              seed=1, device="cpu")
    export(net, tmp_path / "c.onnx", external_weights=True)
    with pytest.raises(ModelFileError, match="only dense connections can be read row by row"):
        Model(tmp_path / "c.onnx", device="generic", weights="rows")
    m = Model(tmp_path / "c.onnx", device="generic", weights="load")        # loading works
    assert m.run(np.zeros((2, 72), np.float32))["output"].shape == (2, 4)


def test_mmap_backend_matches_pread(tmp_path):
    net = _net("tanh")
    export(net, tmp_path / "m.onnx", path="sparse", max_batch=2, external_weights=True)
    a = Model(tmp_path / "m.onnx", device="generic", weights="rows", weights_backend="pread")
    b = Model(tmp_path / "m.onnx", device="generic", weights="rows", weights_backend="mmap")
    x = _x(48, 5)
    assert np.array_equal(a(x), b(x))


def test_auto_weights_mode_follows_the_memory_budget(tmp_path, monkeypatch):
    net = _net()
    export(net, tmp_path / "m.onnx", path="sparse", external_weights=True)
    size = (tmp_path / "m.weights").stat().st_size
    monkeypatch.setattr(weightfile, "memory_budget", lambda: 2 * size - 1)
    assert Model(tmp_path / "m.onnx", device="generic").weights_mode == "rows"
    monkeypatch.setattr(weightfile, "memory_budget", lambda: 2 * size)
    assert Model(tmp_path / "m.onnx", device="generic").weights_mode == "load"
    monkeypatch.setattr(weightfile, "memory_budget", lambda: None)
    assert weightfile.choose_mode(10**15)[0] == "load"
    with pytest.raises(ConfigError):
        weightfile.choose_mode(1, "swap")


def test_metadata_scan_without_onnx(tmp_path):
    net = _net()
    export(net, tmp_path / "m.onnx", path="auto", external_weights=True)
    props = read_metadata_props(tmp_path / "m.onnx")
    want = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx"), load_external_data=False).metadata_props}
    assert props == want
    # hand-built: ir_version 8 (field 1 varint), then one metadata entry {"k": "v"} (field 14)
    entry = b"\x0a\x01k\x12\x01v"
    data = b"\x08\x08" + b"\x72" + bytes([len(entry)]) + entry
    assert _scan(io.BytesIO(data), len(data)) == {"k": "v"}
    for bad in (data[:-2], b"\x72\x7f", b"\x0b\x01", b"\x08"):
        with pytest.raises(ScanError):
            _scan(io.BytesIO(bad), len(bad))


def test_rows_mode_loads_neither_torch_nor_onnx(tmp_path):
    net = _net("sigmoid")
    export(net, tmp_path / "m.onnx", path="sparse", external_weights=True)
    code = ("import sys, numpy as np; from zor.runtime import Model; "
            f"m = Model({str(tmp_path / 'm.onnx')!r}, device='generic', weights='rows'); "
            "m.run(np.ones((2, 48), np.float32)); "
            "sys.exit(1 if 'torch' in sys.modules or 'onnx' in sys.modules else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_engine_reference_for_the_rows_path(tmp_path):
    # the torch engine (dense) and the rows path agree on a wider layer at ~10 % activity
    net = Zor([Layer(256, threshold=0.9), Layer(128, threshold=0.0), Layer(16)], seed=4, device="cpu")
    export(net, tmp_path / "w.onnx", path="sparse", external_weights=True)
    m = Model(tmp_path / "w.onnx", device="generic", weights="rows")
    x = _x(256, 6, seed=9)
    ref, _ = net.run(torch.from_numpy(x))
    np.testing.assert_allclose(m(x), ref.numpy(), rtol=0, atol=1e-5)


def test_zor_run_chunks_a_sparse_export_and_reads_rows(tmp_path):
    from click.testing import CliRunner
    from zor.runtime.cli import run_main

    net = _net("sigmoid")
    export(net, tmp_path / "m.onnx", path="sparse", external_weights=True)      # batch-1 form
    x = _x(48, 5)
    np.save(tmp_path / "x.npy", x)
    ref = Stepper(to_onnx(net))
    ref.reset(5)
    want = ref.step(x)["output"]
    for mode in ("load", "rows"):
        r = CliRunner().invoke(run_main, [str(tmp_path / "m.onnx"), str(tmp_path / "x.npy"), "-o",
                                          str(tmp_path / f"{mode}.npy"), "--device", "generic", "--weights", mode])
        assert r.exit_code == 0, r.output
        np.testing.assert_allclose(np.load(tmp_path / f"{mode}.npy"), want, atol=1e-5)
    r = CliRunner().invoke(run_main, [str(tmp_path / "m.onnx"), str(tmp_path / "x.npy"), "-o",
                                      str(tmp_path / "z.npy"), "--weights", "swap"])
    assert r.exit_code == 2
