"""python -m benchmarks.runtime_bench: the torch engine as the reference beside the runtime's files
(--checkpoint) and a checkpoint exported once per path (--paths), moved out of zor-bench so the
runtime stays torch-free. What these tests assert is what the zor-bench tests asserted before."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from test_runtime_support import quantize_int8

from benchmarks import runtime_bench
from zor import Layer, Zor


def invoke(*args):
    return CliRunner().invoke(runtime_bench.main, [str(a) for a in args])


@pytest.fixture(scope="module")
def ckpt(bench_folder):
    return bench_folder


def test_bench_reports_float32_int8_and_torch(tmp_path):
    net = Zor([Layer(16), Layer(8, activation_function="relu"), Layer(16, activation_function="sigmoid")],
              seed=0, device="cpu")
    net.save(tmp_path / "m.zor")
    from test_runtime_support import from_zor

    f32 = from_zor(net, tmp_path / "m.onnx")
    calib = np.random.default_rng(0).random((32, 16), dtype=np.float32)
    q = quantize_int8(f32, tmp_path / "m8.onnx", calib)
    np.save(tmp_path / "x.npy", calib)
    r = invoke(f32, q, "--device", "generic", "--batch", "8", "--calls", "3", "--repeats", "1",
               "--threads", "1", "--checkpoint", tmp_path / "m.zor", "--input", tmp_path / "x.npy",
               "--json", tmp_path / "b.json")
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "b.json").read_text())
    assert set(rep["models"]) == {"float32", "int8", "torch"}
    f = rep["models"]["float32"]
    for key in ("p50_ms_b1", "p95_ms_b1", "p50_ms_b8", "p95_ms_b8", "throughput_per_s", "size_bytes",
                "peak_rss_mb", "spike_rates", "synops_per_inference", "vs_torch_b1", "vs_torch_b8"):
        assert f[key] is not None, key
    assert f["p50_ms_b1"] > 0 and f["p95_ms_b1"] >= f["p50_ms_b1"]
    assert f["max_abs_diff_vs_torch"] < 1e-5
    assert f["dense_macs_per_inference"] == 16 * 8 + 8 * 16
    rates = f["spike_rates"]
    assert f["synops_per_inference"] == pytest.approx(rates[0] * 16 * 8 + rates[1] * 8 * 16)
    assert "pays_here" in rep["int8"] and "int8" in rep["int8"]["verdict"]
    assert "float32" in r.output and "torch" in r.output and "spike rate per layer" in r.output


def test_bench_paths_side_by_side(ckpt, tmp_path):
    r = invoke("--checkpoint", ckpt / "m.zor", "--paths", "dense,sparse,auto", "--calibration", ckpt / "x.npy",
               "--input", ckpt / "x.npy", "--device", "x86-64-avx2", "--batch", "4", "--calls", "3", "--repeats", "1",
               "--threads", "1", "--no-rss", "--json", tmp_path / "b.json")
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "b.json").read_text())
    assert set(rep["models"]) == {"float32", "float32 sparse", "float32 auto", "torch"}
    sparse = rep["models"]["float32 sparse"]
    assert sparse["path"] == "sparse" and sparse["max_batch"] == 1 and sparse["sparse_connections"] == [0, 1]
    assert sparse["p50_ms_b1"] > 0 and sparse["p50_ms_b4"] is None and sparse["throughput_per_s"] is None
    assert sparse["max_abs_diff_vs_torch"] < 1e-5
    p = rep["paths"]
    assert p["float32"]["vs_dense_b1"] is None
    for lab in ("float32 sparse", "float32 auto"):
        assert p[lab]["vs_dense_b1"] > 0 and p[lab]["max_abs_diff_vs_dense"] < 1e-5
    assert "x dense b1" in r.output and "float32 sparse: sparse, sparse connections [0, 1]" in r.output


def test_bench_usage_errors_for_paths(ckpt):
    r = invoke("--paths", "dense,sparse")
    assert r.exit_code == 2 and "pass --checkpoint" in r.output
    r = invoke("--checkpoint", ckpt / "m.zor", "--paths", "dense,fast")
    assert r.exit_code == 2 and "expected a comma-separated subset" in r.output
    r = invoke("--checkpoint", ckpt / "m.zor", "--paths", ",")
    assert r.exit_code == 2 and "at least one" in r.output


