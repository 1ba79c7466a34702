"""zor-bench on NIR imports: a stream of steps carrying the state, spike rates per spiking node, synaptic
operations per edge of the graph (zor.runtime.nirbench, zor.runtime.nirgraph), on tiny hand-written graphs
whose counts are worked out by hand below.

Graph REC (dt = 1; IF neurons: v ← v + x, spike when v > 0.5, reset to 0):

    input (4) → fc1 Affine W1 (3×4) → lif1 IF (3) → fc2 Linear W2 (3×3) → out IF (3) → output
                                      lif1 → fc_rec Linear (3×3, zeros) → lif1         (recurrent edge)
                                      out  → fc_rec                                    (recurrent edge)

    W1 = [[1,0,0,0],[0,1,0,0],[0,0,1,1]]: lif1 spikes = [x0, x1, x2 or x3] (no charge is ever left over)
    W2 = [[1,1,0],[0,0,1],[0,0,0]]:      out spikes  = [s0 or s1, s2, 0]; fc_rec's weights are zero

    events x_t (B = 1): [1,0,0,0], [1,1,1,1], [0,0,0,0], [0,0,1,0]    → active inputs 1, 4, 0, 1   (mean 1.5)
    lif1 spikes:        [1,0,0],   [1,1,1],   [0,0,0],   [0,0,1]      → 1, 3, 0, 1                  (mean 1.25)
    out spikes:         [1,0,0],   [1,1,0],   [0,0,0],   [0,1,0]      → 1, 2, 0, 1
    out one step late (the recurrent edge out → fc_rec, 0 at rest):   → 0, 1, 2, 0                  (mean 0.75)

    spike rates: lif1 5 / (4·3) = 5/12, out 4 / (4·3) = 1/3
    dense per step (every weight): fc1 12, fc2 9, fc_rec 9 (once, though two edges feed it) → 30
    event-driven (active inputs × fan-out, fan-out = n_out = 3 for every node):
        input → fc1 1.5·3 = 4.5, lif1 → fc2 1.25·3 = 3.75, lif1 → fc_rec 3.75, out → fc_rec 0.75·3 = 2.25
        total 4.5 + 3.75 + 3.75 + 2.25 = 14.25
    events ×2 (values 0/2: the same spikes, the input no longer binary): input → fc1 not spike-fed, counted
    dense: total 12 + 3.75 + 6 = 21.75

Graph CONV: input (1, 4, 4) → conv Conv2d 2@3×3 of ones, stride 2, padding 1 → (2, 2, 2) → if1 IF → flat
Flatten → lin Linear (1×8) of ones → if2 IF (1) → output. Along one axis, input position y is read by the
(o, k) with 2·o − 1 + k = y, o ∈ {0, 1}, k ∈ {0, 1, 2}: y = 0: (0, 1); y = 1: (0, 2), (1, 0); y = 2: (1, 1);
y = 3: (1, 2): fan-out [1, 2, 1, 1] per axis, times 2 output channels. Dense: 18 weights × 4 positions = 72
(padding taps included); the fan-outs sum to 2·5·5 = 50 (padding taps fall out).

    t0: one event at (1, 1): fan-out 2·2·2 = 8; it lies in every window: 8 spikes of if1
    t1: events at (0, 0) and (3, 3): 2·1·1 + 2·1·1 = 4; windows (0, 0) and (1, 1): 4 spikes
    conv: event (8 + 4) / 2 = 6 of 72; lin (fed through the Flatten of if1's spikes): (8 + 4) / 2 · 1 = 6 of 8
    spike rates: if1 12 / (2·8) = 0.75, if2 (8 > 0.5 and 4 > 0.5) 1.0; totals dense 80, event-driven 12
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

nir = pytest.importorskip("nir", reason="the 'nir' extra reads NIR graphs")

from zor.export import export_nir  # noqa: E402
from zor.runtime import Model  # noqa: E402
from zor.runtime.cli import bench_main  # noqa: E402
from zor.runtime.nirbench import sequence_stats, time_steps  # noqa: E402
from zor.runtime.nirgraph import axis_fan_out, nir_graph  # noqa: E402

A = np.asarray
EXACT = 1e-9          # counts are sums of 0/1 spikes times integer fan-outs, divided by T·B: exact in float64


def f32(*v):
    return np.array(v, np.float32)


def if_node(n: int):
    return nir.IF(r=np.ones(n, np.float32), v_threshold=np.full(n, 0.5, np.float32), v_reset=np.zeros(n, np.float32))


def rec_graph():
    w1 = f32(1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1).reshape(3, 4)
    w2 = f32(1, 1, 0, 0, 0, 1, 0, 0, 0).reshape(3, 3)
    nodes = {"input": nir.Input(A([4])), "fc1": nir.Affine(w1, np.zeros(3, np.float32)), "lif1": if_node(3),
             "fc2": nir.Linear(w2), "fc_rec": nir.Linear(np.zeros((3, 3), np.float32)), "out": if_node(3),
             "output": nir.Output(A([3]))}
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "out"), ("lif1", "fc_rec"),
             ("fc_rec", "lif1"), ("out", "fc_rec"), ("out", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def conv_graph():
    nodes = {"input": nir.Input(A([1, 4, 4])),
             "conv": nir.Conv2d((4, 4), np.ones((2, 1, 3, 3), np.float32), 2, 1, 1, 1, np.zeros(2, np.float32)),
             "if1": nir.IF(r=np.ones((2, 2, 2), np.float32), v_threshold=np.full((2, 2, 2), 0.5, np.float32),
                           v_reset=np.zeros((2, 2, 2), np.float32)),
             "flat": nir.Flatten(A([2, 2, 2]), 0, -1), "lin": nir.Linear(np.ones((1, 8), np.float32)),
             "if2": if_node(1), "output": nir.Output(A([1]))}
    edges = [("input", "conv"), ("conv", "if1"), ("if1", "flat"), ("flat", "lin"), ("lin", "if2"), ("if2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


REC_EVENTS = f32(1, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0).reshape(4, 4)      # (T, n): one sequence
CONV_EVENTS = np.zeros((2, 1, 4, 4), np.float32)                                      # (T, *input_shape)
CONV_EVENTS[0, 0, 1, 1] = CONV_EVENTS[1, 0, 0, 0] = CONV_EVENTS[1, 0, 3, 3] = 1.0


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nirbench")
    export_nir(rec_graph(), folder / "rec.onnx", dt=1.0, steps=20)
    export_nir(rec_graph(), folder / "rec-sparse.onnx", dt=1.0, steps=20, path="sparse")
    export_nir(conv_graph(), folder / "conv.onnx", dt=1.0, steps=20)
    np.save(folder / "rec-ev.npy", REC_EVENTS)
    np.save(folder / "conv-ev.npy", CONV_EVENTS)
    return folder


def edges_of(stats):
    return {tuple(e["edge"]): e for e in stats["edges"]}


def test_graph_edges_and_dense_counts_from_the_file(files):
    g = nir_graph(Model(files / "rec.onnx"))
    assert g.recurrent == [("fc_rec", "lif1"), ("out", "fc_rec")]
    syn = {(e.src, e.dst): (e.kind, e.recurrent, e.dense, e.fan_out.tolist()) for e in g.synaptic}
    assert syn == {("input", "fc1"): ("Affine", False, 12, [3, 3, 3, 3]),
                   ("lif1", "fc2"): ("Linear", False, 9, [3, 3, 3]),
                   ("lif1", "fc_rec"): ("Linear", False, 9, [3, 3, 3]),
                   ("out", "fc_rec"): ("Linear", True, 9, [3, 3, 3])}


def test_conv_fan_out_reads_stride_and_padding(files):
    (conv, lin) = nir_graph(Model(files / "conv.onnx")).synaptic
    assert (conv.src, conv.dst, conv.dense) == ("input", "conv", 72)
    np.testing.assert_array_equal(conv.fan_out.reshape(4, 4), 2 * np.outer([1, 2, 1, 1], [1, 2, 1, 1]))
    assert conv.fan_out.sum() == 50 and (lin.src, lin.dst, lin.dense) == ("flat", "lin", 8)


def test_recurrent_graph_counts_by_hand(files):
    s = sequence_stats(Model(files / "rec.onnx"), REC_EVENTS[:, None])
    assert s["spike_rates"] == pytest.approx({"lif1": 5 / 12, "out": 1 / 3}, abs=EXACT)
    e = edges_of(s)
    want = {("input", "fc1"): (12, 4.5, 1.5), ("lif1", "fc2"): (9, 3.75, 1.25), ("lif1", "fc_rec"): (9, 3.75, 1.25),
            ("out", "fc_rec"): (9, 2.25, 0.75)}
    for edge, (dense, event, active) in want.items():
        assert e[edge]["spike_fed"] and e[edge]["dense_synops"] == dense
        assert e[edge]["event_synops"] == pytest.approx(event, abs=EXACT)
        assert e[edge]["active_inputs"] == pytest.approx(active, abs=EXACT)
    assert e[("out", "fc_rec")]["recurrent"] and not e[("lif1", "fc_rec")]["recurrent"]
    assert s["dense_synops_per_step"] == 30 and s["event_synops_per_step"] == pytest.approx(14.25, abs=EXACT)


def test_a_silent_row_halves_every_rate_and_count(files):
    xs = np.stack([REC_EVENTS, np.zeros_like(REC_EVENTS)], axis=1)          # (T, 2, 4): row 1 never fires
    s = sequence_stats(Model(files / "rec.onnx"), xs)
    assert s["rows"] == 2 and s["spike_rates"] == pytest.approx({"lif1": 5 / 24, "out": 1 / 6}, abs=EXACT)
    assert s["event_synops_per_step"] == pytest.approx(14.25 / 2, abs=EXACT) and s["dense_synops_per_step"] == 30


def test_non_binary_input_is_counted_dense(files):
    s = sequence_stats(Model(files / "rec.onnx"), 2 * REC_EVENTS[:, None])
    e = edges_of(s)
    assert not e[("input", "fc1")]["spike_fed"] and e[("input", "fc1")]["event_synops"] is None
    assert s["spike_rates"] == pytest.approx({"lif1": 5 / 12, "out": 1 / 3}, abs=EXACT)   # the same spikes
    assert s["event_synops_per_step"] == pytest.approx(21.75, abs=EXACT)


def test_conv_graph_counts_by_hand(files):
    s = sequence_stats(Model(files / "conv.onnx"), CONV_EVENTS[:, None])
    e = edges_of(s)
    assert s["spike_rates"] == pytest.approx({"if1": 0.75, "if2": 1.0}, abs=EXACT)
    assert (e[("input", "conv")]["dense_synops"], e[("flat", "lin")]["dense_synops"]) == (72, 8)
    assert e[("input", "conv")]["event_synops"] == pytest.approx(6.0, abs=EXACT)
    assert e[("flat", "lin")]["spike_fed"] and e[("flat", "lin")]["event_synops"] == pytest.approx(6.0, abs=EXACT)
    assert s["dense_synops_per_step"] == 80 and s["event_synops_per_step"] == pytest.approx(12.0, abs=EXACT)


def test_int8_conv_counts_the_same(files, tmp_path):
    """An int8 file (the conv's weight quantized: 1.0 is exact in int8, so the same spikes) gives the same counts:
    the Conv attributes are found behind the weight's DequantizeLinear."""
    res = export_nir(conv_graph(), tmp_path / "c8.onnx", dt=1.0, steps=20, quantize="int8",
                     calibration=np.stack([CONV_EVENTS[0], CONV_EVENTS[1]] * 4)[:, None])
    assert res.quantization["fallback"] == []                          # no node kept in float: the int8 form is tested
    m = Model(tmp_path / "c8.onnx")
    assert m.precision == "int8"
    conv = nir_graph(m).synaptic[0]
    np.testing.assert_array_equal(conv.fan_out.reshape(4, 4), 2 * np.outer([1, 2, 1, 1], [1, 2, 1, 1]))
    s = sequence_stats(m, CONV_EVENTS[:, None])
    assert s["dense_synops_per_step"] == 80 and s["event_synops_per_step"] == pytest.approx(12.0, abs=EXACT)


def test_stream_steps_carry_the_state(files):
    """time_steps runs one stream: its steps carry the state (a fresh call per step would lose lif1's charge)."""
    m = Model(files / "rec.onnx")
    calls = []
    real = m._call                           # the session call every step goes through: (names, feeds) → arrays

    def spy(names, feeds):
        calls.append({k: v.copy() for k, v in feeds.items()})
        return real(names, feeds)

    m._call = spy
    times = time_steps(m, REC_EVENTS[:, None], calls=5, warmup=3)
    assert len(times) == 5 and all(t > 0 for t in times) and len(calls) == 8
    # the recurrent edge out → fc_rec (j = 1) feeds each step out's spikes of the step before: 0 at rest, then
    # [1, 0, 0] (step 0), [1, 1, 0] (step 1), [0, 0, 0] (step 2); lif1's v is 0 after every step (no charge left)
    for step, want in enumerate(([0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 0, 0])):
        np.testing.assert_array_equal(calls[step]["state_in_edge_1"], [want])


def test_cli_reports_the_hand_counts(files, tmp_path):
    out = tmp_path / "b.json"
    r = CliRunner().invoke(bench_main, [str(files / "rec.onnx"), str(files / "rec-sparse.onnx"), "--input",
                                        str(files / "rec-ev.npy"), "--calls", "6", "--repeats", "2", "--batch", "4",
                                        "--no-rss", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "latency is per stream step" in r.output and "lif1 -> fc2" in r.output
    assert "14.2 event-driven of 30 dense" in r.output     # rows repeated up to --batch: the same rates
    rep = json.loads(out.read_text())
    assert rep["nir"] and set(rep["models"]) == {"float32", "float32 sparse"}
    for label, fig in rep["models"].items():
        assert fig["p50_ms_b1"] > 0 and fig["nir"]["steps"] == 4
        assert fig["nir"]["event_synops_per_step"] == pytest.approx(14.25, abs=EXACT), label
        assert fig["nir"]["spike_rates"] == pytest.approx({"lif1": 5 / 12, "out": 1 / 3}, abs=EXACT), label
    assert rep["models"]["float32"]["p50_ms_b4"] > 0 and rep["models"]["float32 sparse"]["p50_ms_b4"] is None
    sparse = rep["paths"]["float32 sparse"]        # fc1, fc2, fc_rec (positions 1, 3, 4) read only active rows
    assert sparse["sparse_connections"] == [1, 3, 4] and sparse["max_batch"] == 1 and sparse["vs_dense_b1"] > 0
    assert sparse["max_abs_diff_vs_dense"] == 0.0   # IF spikes of sums of 0/1 times 0/1 weights: exact either way
    assert "float32 sparse: sparse, sparse connections [1, 3, 4]" in r.output


def test_cli_conv_events_unflattened(files):
    r = CliRunner().invoke(bench_main, [str(files / "conv.onnx"), "--input", str(files / "conv-ev.npy"), "--calls", "3",
                                        "--repeats", "1", "--batch", "1", "--no-rss"])
    assert r.exit_code == 0, r.output
    assert "12.0 event-driven of 80 dense" in r.output and "if1 0.750" in r.output


def test_cli_random_events_by_default(files):
    r = CliRunner().invoke(bench_main, [str(files / "rec.onnx"), "--calls", "5", "--repeats", "1", "--batch", "2",
                                        "--no-rss"])
    assert r.exit_code == 0, r.output
    assert "random binary events, rate 0.3, 5 steps x 2 rows" in r.output


@pytest.mark.parametrize("bad, message", [
    (np.zeros((3, 2, 5), np.float32), "expected (T, B, 4) or (T, 4)"),
    (np.full((3, 4), np.nan, np.float32), "non-finite"),
    (np.array([["a", "b", "c", "d"]]), "expected numbers"),
])
def test_cli_bad_events_exit_2_naming_what_was_expected(files, tmp_path, bad, message):
    np.save(tmp_path / "bad.npy", bad)
    r = CliRunner().invoke(bench_main, [str(files / "rec.onnx"), "--input", str(tmp_path / "bad.npy"), "--calls", "2",
                                        "--repeats", "1", "--no-rss"])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output


def test_cli_refuses_a_nir_import_beside_another_export(files, bench_folder, tmp_path):
    from zor.export import export

    export(bench_folder / "m.zor", tmp_path / "m.onnx")
    r = CliRunner().invoke(bench_main, [str(files / "rec.onnx"), str(tmp_path / "m.onnx"), "--no-rss"])
    assert r.exit_code == 2 and "layer sizes" in r.output
    from zor.runtime.nirbench import run_nir_bench

    from zor.common.errors import ConfigError

    with pytest.raises(ConfigError, match="expected every MODEL to be a stateful NIR import"):   # same sizes or not
        run_nir_bench([Model(files / "rec.onnx"), Model(tmp_path / "m.onnx")], ["a", "b"], 2, 2, 1, None, None,
                      False, "auto", None, {})


@settings(max_examples=60, deadline=None)
@given(length=st.integers(1, 12), kernel=st.integers(1, 4), stride=st.integers(1, 3), dilation=st.integers(1, 2),
       pad=st.integers(0, 2))
def test_axis_fan_out_counts_every_tap_inside_the_input(length, kernel, stride, dilation, pad):
    """Σ_x f(x) is the number of (o, k) taps that land inside the input; without padding, every tap: L_out · K."""
    out_len = (length + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
    if out_len < 1:
        return
    f = axis_fan_out(length, out_len, kernel, stride, pad, dilation)
    inside = sum(0 <= o * stride - pad + k * dilation < length for o in range(out_len) for k in range(kernel))
    assert f.sum() == inside and (pad or inside == out_len * kernel) and f.min() >= 0
