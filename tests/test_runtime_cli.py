"""zor-run and zor-bench through click's CliRunner."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from test_runtime_support import build_model, quantize_int8
from zor.runtime import Model
from zor.runtime.cli import bench_main, run_main
from zor.runtime.png import read_png, write_png

from zor import Layer, Zor

INF = float("inf")
IMAGE_TASK = {"name": "reconstruct", "input": {"shape": [16], "range": [0, 1], "image": {"height": 4, "width": 4}},
              "output": {"shape": [16], "range": [0, 1]}}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    build_model(d / "recon.onnx", [{"size": 16}, {"size": 8, "activation": "relu"},
                                           {"size": 16, "activation": "sigmoid"}],
                        [rng.normal(size=(16, 8)), rng.normal(size=(8, 16))],
                        [np.full(16, 0.2), np.zeros(8), np.full(16, -INF)], task=IMAGE_TASK)
    build_model(d / "cls.onnx", [{"size": 3}, {"size": 2}],
                      [np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])], [np.zeros(3), np.full(2, -INF)],
                      task={"name": "classify", "labels": ["cat", "dog"]})
    np.save(d / "rows.npy", rng.random((3, 16), dtype=np.float32))
    np.save(d / "one.npy", rng.random(16, dtype=np.float32))
    np.save(d / "cls.npy", np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.0]], np.float32))
    write_png(d / "img.png", (rng.random((4, 4)) * 255).astype(np.uint8))
    (d / "notes.txt").write_text("hello")
    return d


def invoke(cmd, *args):
    return CliRunner().invoke(cmd, [str(a) for a in args])


def test_run_npy_and_png_into_a_folder(files, tmp_path):
    out = tmp_path / "out"
    r = invoke(run_main, files / "recon.onnx", files / "rows.npy", files / "img.png", "-o", out,
               "--device", "generic", "--threads", "1")
    assert r.exit_code == 0, r.output
    m = Model(files / "recon.onnx", device="generic", threads=1)
    np.testing.assert_array_equal(np.load(out / "rows.npy"), m.run(np.load(files / "rows.npy"))["output"])
    pixels = read_png(files / "img.png").astype(np.float32).reshape(1, 16) / 255
    expected = m.run(pixels)["output"]
    np.testing.assert_array_equal(np.load(out / "img.npy"), expected)
    assert read_png(out / "img.png").shape == (4, 4)
    np.testing.assert_array_equal(read_png(out / "img.png"), np.round(expected.reshape(4, 4) * 255).astype(np.uint8))
    assert "2/2" in r.output                                     # the progress bar reached the end


def test_run_one_input_to_a_file(files, tmp_path):
    r = invoke(run_main, files / "recon.onnx", files / "one.npy", "-o", tmp_path / "y.npy", "--device", "generic")
    assert r.exit_code == 0, r.output
    assert np.load(tmp_path / "y.npy").shape == (1, 16)
    r = invoke(run_main, files / "recon.onnx", files / "img.png", "-o", tmp_path / "y.png", "-q")
    assert r.exit_code == 0, r.output
    assert read_png(tmp_path / "y.png").shape == (4, 4)


def test_run_classify_writes_labels(files, tmp_path):
    r = invoke(run_main, files / "cls.onnx", files / "cls.npy", "-o", tmp_path / "c", "--device", "generic")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "c" / "cls.json").read_text())
    assert doc == {"index": [0, 1], "label": ["cat", "dog"]}


@pytest.mark.parametrize("args, text", [
    (["notes.txt"], "expected a .npy or .png input file"),
    (["img.png", "--model", "cls.onnx"], "PNG input needs an image task"),
    (["rows.npy", "--model", "cls.onnx"], "expected shape (B, 3), got (3, 16)"),
    (["rows.npy", "--device", "pi9"], "unknown device profile 'pi9'"),
    (["rows.npy", "--model", "notes.txt"], "not an ONNX model"),
    (["rows.npy", "--out", "y.txt"], ".txt output is for --task translate; this run writes .npy"),
    (["rows.npy", "--out", "y.csv"], "zor-run does not write .csv files; this run writes .npy"),
    (["notes.txt"], "use --task translate"),
    (["rows.npy", "--out", "y.png"], ".png output needs an image model run on a PNG input"),
])
def test_run_usage_errors_exit_2(files, tmp_path, args, text):
    model = files / "recon.onnx"
    out = tmp_path / "o"
    rest = []
    it = iter(args)
    for a in it:
        if a == "--model":
            model = files / next(it)
        elif a == "--out":
            out = tmp_path / next(it)
        elif a == "--device":
            rest += ["--device", next(it)]
        else:
            rest.append(files / a)
    r = invoke(run_main, model, *rest, "-o", out)
    assert r.exit_code == 2, r.output
    assert text in r.output
    assert "Traceback" not in r.output


def test_bench_reports_float32_and_int8_without_torch(tmp_path):
    # zor-bench benches files only: the torch reference is python -m benchmarks.runtime_bench (test_runtime_bench.py)
    net = Zor([Layer(16), Layer(8, activation_function="relu"), Layer(16, activation_function="sigmoid")],
              seed=0, device="cpu")
    from test_runtime_support import from_zor

    f32 = from_zor(net, tmp_path / "m.onnx")
    calib = np.random.default_rng(0).random((32, 16), dtype=np.float32)
    q = quantize_int8(f32, tmp_path / "m8.onnx", calib)
    np.save(tmp_path / "x.npy", calib)
    r = invoke(bench_main, f32, q, "--device", "generic", "--batch", "8", "--calls", "3", "--repeats", "1",
               "--threads", "1", "--no-rss", "--input", tmp_path / "x.npy", "--json", tmp_path / "b.json")
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "b.json").read_text())
    assert set(rep["models"]) == {"float32", "int8"} and rep["references"] == []
    assert "vs_torch_b1" not in rep["models"]["float32"] and "torch" not in r.output
    assert "spike rate per layer" in r.output and "int8" in rep["int8"]["verdict"]
    r = invoke(bench_main, f32, "--checkpoint", tmp_path / "x.npy")
    assert r.exit_code == 2 and "No such option" in r.output


def test_bench_usage_errors(files, tmp_path):
    r = invoke(bench_main, files / "recon.onnx", "--device", "pi9", "--no-rss")
    assert r.exit_code == 2 and "unknown device profile" in r.output
    r = invoke(bench_main, files / "recon.onnx", files / "cls.onnx", "--device", "generic", "--no-rss",
               "--calls", "1", "--repeats", "1")
    assert r.exit_code == 2 and "expected [16, 8, 16]" in r.output
    (tmp_path / "afile").write_text("")                # --json under a file: refused before the benchmark runs
    r = invoke(bench_main, files / "recon.onnx", "--json", tmp_path / "afile" / "b.json")
    assert r.exit_code == 2 and "is a file, not a folder" in r.output and "p50" not in r.output
    r = invoke(bench_main, files / "recon.onnx", "--json", files / "recon.onnx")
    assert r.exit_code == 2 and "same file as the input" in r.output
