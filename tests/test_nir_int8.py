"""int8 for NIR imports (zor.export.nir.int8): hand-derived rounding, the spike budget's fallback, the metric's
refusal, the metadata and the runtime, the CLI.

The hand-made graph: Input (2) → Affine "aff" → Threshold "thr" → Output, with events alternating
x = [1, 0] and x = [0, 1]. Affine's weights per output unit u (a column of Wᵀ) are quantized symmetric
per channel with the AVX-512 VNNI profile's recipe (s8 full range): s_u = max_j |W_uj| / 127,
q = round(W/s_u); the events 0/1 are exact in u8 (scale 1/255). (The generic profile reduces the range
to ±64: s = 1/64 and 0.004·64 = 0.256 → q = 0, so 0.004 becomes 0 and nothing flips at θ = 0.006.)

    unit 0: W = [1.0, 0.004]  →  s = 1/127, 0.004·127 = 0.508 → q = 1 → 0.004 becomes 1/127 = 0.007874
    unit 1: W = [0.0, 0.005]  →  s = 0.005/127, exact

With θ = 0.006 for both units: x = [1, 0] gives y = (1.0, 0) → spikes (1, 0) in float and int8;
x = [0, 1] gives float y = (0.004, 0.005) → (0, 0) but int8 y = (0.007874, 0.005) → (1, 0). So int8
flips unit 0 in every second step: agreement 1 − 1/4 = 0.75 over both units, and the predicted class
(argmax of the spike counts over T = 20 steps): float unit 0 (10 vs 0), int8 unit 0 (20 vs 0): equal.
With θ = (0.006, 0.0045): float counts (10, 10) → class 0 (first of a tie); int8 (20, 10) → class 0: equal;
with events x = [0, 1] only: float (0, 20) → 1, int8 (20, 20) → 0: every row's class flips.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

nir = pytest.importorskip("nir", reason="the 'nir' extra reads NIR graphs")

from zor.export import export_nir  # noqa: E402
from zor.export.cli import main as export_main  # noqa: E402
from zor.export.nir.int8 import connection_nodes, split_events  # noqa: E402
from zor.runtime import Model  # noqa: E402

from zor.common.errors import QuantizationError  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "nir"
FF = FIXTURES / "ff_lif.nir"           # snnTorch: Affine → LIF → Affine → LIF, 196 → 10
VNNI = "x86-64-avx512-vnni"            # s8 weights, full range (reduce_range off)
DT = 1e-4
W = np.array([[1.0, 0.004], [0.0, 0.005]], np.float32)      # (n_out, n_in)


def graph(theta=(0.006, 0.006)):
    A = np.array
    return nir.NIRGraph(
        nodes={"input": nir.Input(A([2])), "aff": nir.Affine(W, np.zeros(2, np.float32)),
               "thr": nir.Threshold(np.asarray(theta, np.float32)), "output": nir.Output(A([2]))},
        edges=[("input", "aff"), ("aff", "thr"), ("thr", "output")])


def alternating(steps=20, rows=4):
    xs = np.zeros((steps, rows, 2), np.float32)
    xs[0::2, :, 0] = 1.0
    xs[1::2, :, 1] = 1.0
    return xs


def test_rounding_flips_what_the_hand_derivation_says(tmp_path):
    """spike_budget 0: no fallback; the measured agreement is the hand-derived 0.75, the class unchanged."""
    res = export_nir(graph(), tmp_path / "q.onnx", dt=DT, steps=20, quantize="int8", calibration=alternating(),
                     spike_budget=0.0, device=VNNI)
    q = res.quantization
    assert res.mode == "int8" and q["fallback"] == [] and q["spike_budget"] == 0.0
    assert q["spikes"] == [{"node": "thr", "index": 2, "spike_agreement": 0.75, "meets_budget": True}]
    assert q["metric"]["drop"] == 0.0 and q["connections"][0]["precision"] == "int8"
    m = Model(tmp_path / "q.onnx")
    assert m.precision == "int8"
    got = np.stack([m.run({"input": x})["output"] for x in alternating(4, 1)])
    np.testing.assert_array_equal(got[:, 0], [[1, 0], [1, 0], [1, 0], [1, 0]])     # int8: unit 0 fires on [0, 1]
    generic = export_nir(graph(), tmp_path / "g.onnx", dt=DT, steps=20, quantize="int8", calibration=alternating(),
                         spike_budget=0.0, device="generic").quantization
    assert generic["recipe"]["reduce_range"] is True and generic["spikes"][0]["spike_agreement"] == 1.0
    meta = m.metadata
    assert meta.quantization["mode"] == "int8" and meta.verification["int8"]["spike_agreement"] == {"thr": 0.75}
    assert meta.calibration["nodes"] == [{"node": "thr", "index": 2, "spike_rate": 0.25}]   # float: 1 of 4 per 2 steps


def test_budget_falls_back_to_float_and_reports_weight_bytes(tmp_path):
    res = export_nir(graph(), tmp_path / "q.onnx", dt=DT, steps=20, quantize="int8", calibration=alternating(),
                     device=VNNI)
    q = res.quantization
    assert q["fallback"] == ["aff"] and [p["fallback"] for p in q["passes"]] == [[], [1]]
    assert q["passes"][0]["spike_agreement"] == {"2": 0.75} and q["spikes"][0]["spike_agreement"] == 1.0
    row = q["connections"][0]
    assert row == {"node": "aff", "index": 1, "kind": "Affine", "precision": "float", "fallback": True,
                   "weight_bytes_float": 16, "weight_bytes": 16}
    assert q["layers"] == [
        {"layer": 0, "node": "input", "precision": "-", "spike_agreement": None, "weight_bytes": None,
         "weight_bytes_float": None},
        {"layer": 1, "node": "aff", "precision": "float", "spike_agreement": None, "weight_bytes": 16,
         "weight_bytes_float": 16},
        {"layer": 2, "node": "thr", "precision": "-", "spike_agreement": 1.0, "weight_bytes": None,
         "weight_bytes_float": None},
        {"layer": 3, "node": "output", "precision": "-", "spike_agreement": None, "weight_bytes": None,
         "weight_bytes_float": None}]
    shown = CliRunner().invoke(export_main, ["inspect", str(tmp_path / "q.onnx")])
    assert shown.exit_code == 0 and "fallback connections ['aff']" in shown.output
    assert any(line.split()[:2] == ["1", "float"] and "16" in line for line in shown.output.splitlines())
    low = export_nir(graph(), tmp_path / "q0.onnx", dt=DT, steps=20, quantize="int8", calibration=alternating(),
                     spike_budget=0.0, device=VNNI).quantization["connections"][0]
    assert low["weight_bytes_float"] == 16 and low["weight_bytes"] == 4 + 2 * 4 + 2   # int8 W, 2 scales, 2 zero points
    xs = alternating(6, 1)
    a = np.stack([Model(tmp_path / "q.onnx").run({"input": x})["output"] for x in xs])
    np.testing.assert_array_equal(a[:, 0], (xs[:, 0] @ W.T > 0.006).astype(np.float32))   # float again: exact


def test_class_flip_past_max_drop_is_refused_and_nothing_written(tmp_path):
    ones = np.zeros((20, 4, 2), np.float32)
    ones[:, :, 1] = 1.0                               # x = [0, 1] every step: float class 1, int8 class 0
    out = tmp_path / "q.onnx"
    with pytest.raises(QuantizationError, match="agrees with the float graph's on 0.00 %") as err:
        export_nir(graph((0.006, 0.0045)), out, dt=DT, steps=20, quantize="int8", calibration=ones, spike_budget=0.0,
                   device=VNNI)
    assert not out.exists() and err.value.report["metric"]["drop"] == 100.0
    assert err.value.exit_code == 1
    ok = export_nir(graph((0.006, 0.0045)), out, dt=DT, steps=20, quantize="int8", calibration=ones, device=VNNI)
    assert ok.quantization["fallback"] == ["aff"] and ok.quantization["metric"]["drop"] == 0.0


def test_split_and_connection_names():
    xs = np.arange(2 * 5 * 1, dtype=np.float32).reshape(2, 5, 1)
    cal, val = split_events(xs)
    assert cal[:, :, 0].tolist() == [[0, 2, 4], [5, 7, 9]] and val[:, :, 0].tolist() == [[1, 3], [6, 8]]
    one = xs[:, :1]
    assert split_events(one)[0] is one and split_events(one)[1] is one
    from zor.export.nir import load_graph
    from zor.export.nir.onnxgraph import build_onnx

    proto = build_onnx(load_graph(FF), DT)
    assert {k: [n.split("_")[-1] for n in v] for k, v in connection_nodes(proto).items()} == {1: ["MatMul"],
                                                                                              3: ["MatMul"]}


def test_cli_int8_on_a_fixture_runs_on_the_runtime(tmp_path):
    xs = (np.random.default_rng(3).random((40, 16, 196)) < 0.2).astype(np.float32)
    np.save(tmp_path / "ev.npy", xs)
    out = tmp_path / "q.onnx"
    r = CliRunner().invoke(export_main, [str(FF), "-o", str(out), "--dt", str(DT), "--steps", "40", "--quantize",
                                         "int8", "--calibration", str(tmp_path / "ev.npy"), "--spike-budget", "0.95",
                                         "--max-drop", "100", "--device", "x86-64-avx2"])
    assert r.exit_code == 0, r.output
    assert "int8 (x86-64-avx2): class agreement with float" in r.output and ", int8, " in r.output
    m = Model(out)
    q = m.metadata.quantization
    assert q["profile"] == "x86-64-avx2" and q["recipe"]["format"] == "QDQ"
    assert q["validation"]["rows"] == 8 and q["validation"]["steps"] == 40
    assert all(s["meets_budget"] or not any(c["precision"] == "int8" and c["index"] < s["index"]
                                            for c in q["connections"]) for s in q["spikes"])
    export_nir(FF, tmp_path / "f.onnx", dt=DT, steps=40)
    y = m.stream().run(xs[:, 1::2])["output"]                     # the validation rows, free-running
    want = Model(tmp_path / "f.onnx").stream().run(xs[:, 1::2])["output"]
    assert y.shape == (40, 8, 10) and set(np.unique(y)) <= {0.0, 1.0}
    out_row = next(s for s in q["spikes"] if s["node"] == "3")    # the runtime sees what the exporter measured
    assert (y == want).mean() == pytest.approx(out_row["spike_agreement"], abs=1e-12)
    assert json.loads(m.metadata.raw["zor.verification"])["int8"]["fallback"] == q["fallback"]


def test_cli_refusal_exits_1_with_the_message(tmp_path):
    ones = np.zeros((20, 4, 2), np.float32)
    ones[:, :, 1] = 1.0
    nir.write(str(tmp_path / "g.nir"), graph((0.006, 0.0045)))
    np.save(tmp_path / "ev.npy", ones)
    r = CliRunner().invoke(export_main, [str(tmp_path / "g.nir"), "-o", str(tmp_path / "q.onnx"), "--dt", str(DT),
                                         "--steps", "20", "--quantize", "int8", "--calibration",
                                         str(tmp_path / "ev.npy"), "--spike-budget", "0", "--device", VNNI])
    assert r.exit_code == 1 and "int8 export refused" in r.output and not (tmp_path / "q.onnx").exists()


def test_int8_file_adds_its_bias_as_a_subtraction_of_its_negation(tmp_path):
    """MatMul + Add would be fused into a float Gemm before onnxruntime looks for its int8 pattern; the int8 file
    writes y − (−b) instead, the same value: its outputs equal the float file's where the weights are exact."""
    import onnx

    g = nir.NIRGraph(nodes={"input": nir.Input(np.array([2])), "aff": nir.Affine(np.array([[1.0, -1.0]], np.float32),
                                                                                   np.array([0.25], np.float32)),
                            "output": nir.Output(np.array([1]))},
                     edges=[("input", "aff"), ("aff", "output")])
    xs = alternating(10, 2)
    res = export_nir(g, tmp_path / "q.onnx", dt=DT, steps=10, quantize="int8", calibration=xs, device=VNNI,
                     spike_budget=0.0)
    proto = onnx.load(tmp_path / "q.onnx")
    ops = [n.op_type for n in proto.graph.node if n.name.startswith("node1.")]
    assert ops == ["MatMul", "Sub", "Greater"] and res.quantization["connections"][0]["precision"] == "int8"
    neg = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}["aff.bias_neg"]
    np.testing.assert_array_equal(neg, [-0.25])
    m = Model(tmp_path / "q.onnx")
    got = np.stack([m.run({"input": x})["output"] for x in xs[:2, :1]])
    # ±1.0 are ±127 · (1/127) in s8 and the events 255 · (1/255) in u8: exact up to the float32 rounding of the two
    # scales and their product (a few ulp of 1)
    np.testing.assert_allclose(got[:, 0, 0], [1.25, -0.75], rtol=0, atol=1e-6)


@pytest.mark.parametrize("kw", [{"spike_budget": 1.5}, {"spike_budget": -0.1}, {"spike_budget": float("nan")},
                                {"max_drop": -1.0}, {"max_drop": "1"}, {"spike_budget": True}])
def test_bad_budgets_are_refused_before_anything_runs(tmp_path, kw):
    from zor.common.errors import ConfigError

    with pytest.raises(ConfigError, match="expected a number in"):
        export_nir(graph(), tmp_path / "q.onnx", dt=DT, quantize="int8", **kw)
    assert not (tmp_path / "q.onnx").exists()
