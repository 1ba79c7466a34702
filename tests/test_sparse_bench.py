"""zor-bench labels and chunked runs of sparse exports, and the helpers of benchmarks/sparse_inference.py."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from zor.export import export
from zor.runtime import Model
from zor.runtime.bench import label_of, run_chunked
from zor.runtime.cli import bench_main

from benchmarks import common
from benchmarks import sparse_inference as sb


def _invoke(*args):
    return CliRunner().invoke(bench_main, [str(a) for a in args])


@pytest.fixture(scope="module")
def ckpt(bench_folder):
    return bench_folder


def test_bench_needs_model_files():
    # --checkpoint/--paths moved to python -m benchmarks.runtime_bench (tests/test_runtime_bench.py)
    r = _invoke("--device", "generic")
    assert r.exit_code == 2 and "Missing argument 'MODEL...'" in r.output


def test_labels_and_chunked_runs(ckpt, tmp_path):
    export(ckpt / "m.zor", tmp_path / "s.onnx", path="sparse", max_batch=3)
    export(ckpt / "m.zor", tmp_path / "d.onnx")
    s, d = Model(tmp_path / "s.onnx", device="generic"), Model(tmp_path / "d.onnx", device="generic")
    assert (label_of(s), label_of(d)) == ("float32 sparse", "float32")
    x = np.load(ckpt / "x.npy")[:8]
    a, b = run_chunked(s, x, spikes=True), d.run(x, spikes=True)
    np.testing.assert_allclose(a["output"], b["output"], atol=1e-5)
    np.testing.assert_allclose(a["spike_rates"], b["spike_rates"])


def test_inputs_at_has_exactly_the_asked_activity():
    x = sb.inputs_at(200, 0.05, 7, seed=1)
    assert x.shape == (7, 200) and x.dtype == np.float32
    assert ((x > sb.THETA).sum(axis=1) == 10).all()
    assert ((sb.inputs_at(50, 0.0, 3) > sb.THETA).sum() == 0) and (sb.inputs_at(50, 1.0, 3) > sb.THETA).all()


def test_crossover_hand_derived():
    # log(sparse/dense) = ln .5, 0, ln 2 at 0.1, 0.2, 0.3: the sign changes between 0.1 and 0.2, and the
    # interpolation lands where the log ratio is 0: 0.1 + 0.1 · (0.693 / 0.693) = 0.2
    assert sb.crossover([0.1, 0.2, 0.3], [1, 1, 1], [0.5, 1.0, 2.0]) == pytest.approx(0.2)
    # ln(0.5) at 0.1 and ln(1.5) at 0.3: 0.1 + 0.2 · ln 2 / (ln 2 + ln 1.5)
    want = 0.1 + 0.2 * math.log(2) / (math.log(2) + math.log(1.5))
    assert sb.crossover([0.1, 0.3], [2, 2], [1, 3]) == pytest.approx(want)
    assert sb.crossover([0.1, 0.2], [1, 1], [2, 2]) is None                  # sparse never faster
    assert sb.crossover([0.1, 0.2], [1, 1], [0.5, 0.5]) == 0.2               # always faster: the last rate


def test_fit_min_synapses_hand_derived():
    # r_be = 0.4: (1000, 0.2) → 1000·(1 − 0.5) = 500; (2000, 0.3) → 2000·0.25 = 500; (100, never) → 100
    assert sb.fit_min_synapses(0.4, [(1000, 0.2), (2000, 0.3), (100, None)]) == 500
    assert sb.fit_min_synapses(0.4, []) is None


def test_floor_hand_derived():
    # 0.05 ms + 410 rows × 16 KiB / 8 GB/s = 0.05 + 6,717,440 B / 8e9 B/s = 0.05 + 0.83968 ms
    assert sb.floor_ms(0.05, 410, 4096 * 4, 8.0) == pytest.approx(0.05 + 410 * 16384 / 8e9 * 1e3)


def test_paired_ratio_hand_derived():
    # rounds (dense, sparse): (5, 0.5), (6, 0.5), (4, 0.5) → ratios 10, 12, 8 → median 10
    assert common.paired_ratio([5.0, 6.0, 4.0], [0.5, 0.5, 0.5]) == pytest.approx(10.0)
    # a round where both slowed together counts as the ratio it had, not as two outliers:
    # medians 5 / 0.5 would say 10 too, but (5, 0.5), (10, 1.0), (5, 0.55) → 10, 10, 9.09 → 10
    assert common.paired_ratio([5.0, 10.0, 5.0], [0.5, 1.0, 0.55]) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="equally long"):
        common.paired_ratio([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="non-empty"):
        common.paired_ratio([], [])


def test_p50_repeats_keeps_every_round():
    calls = []
    rounds = sb.p50_repeats({"a": lambda x: calls.append("a"), "b": lambda x: calls.append("b")},
                            np.zeros((4, 3), np.float32), calls=5, repeats=3, warmup=1)
    assert {k: len(v) for k, v in rounds.items()} == {"a": 3, "b": 3}
    assert all(t >= 0 for v in rounds.values() for t in v)
    # one warm-up call each, then the runners take turns round by round, 5 calls at a time
    assert calls[2:] == (["a"] * 5 + ["b"] * 5) * 3


def test_targets_read_the_sweep():
    rows = [{"rate": 0.05, "speedup_sparse": 12.0, "auto_vs_best": 1.02, "auto_choice_vs_best": 1.0,
             "sparse_vs_floor": 1.1, "max_abs_diff_sparse": 2e-7},
            {"rate": 0.1, "speedup_sparse": 4.0, "auto_vs_best": 1.2, "auto_choice_vs_best": 1.15,
             "sparse_vs_floor": 1.5, "max_abs_diff_sparse": 3e-7}]
    t = sb.targets({"layer_sweep": {"rows": rows}})
    assert t["sparse >= 10x dense at 5 %"]["met"] and not t["sparse >= 5x dense at 10 %"]["met"]
    assert not t["auto's choice <= 1.10x the better of dense/sparse, 1-100 %"]["met"]
    assert t["auto's choice <= 1.10x the better of dense/sparse, 1-100 %"]["value"] == 1.15
    assert t["sparse latency <= 2x floor (rates <= 20 %)"]["met"]
    # int8 sparse is judged against int8 dense (like with like), beside the float32 goals
    rows[0].update(int8_dense_ms=0.7, speedup_int8_sparse=3.9)
    rows[1].update(int8_dense_ms=0.7, speedup_int8_sparse=5.5)
    t = sb.targets({"layer_sweep": {"rows": rows}})
    assert t["(int8 sparse against int8 dense at 10%, goal of float32: 5x)"] == {"value": 5.5, "met": True}
    assert t["(int8 sparse against int8 dense at 5%, goal of float32: 10x)"] == {"value": 3.9, "met": False}


def test_quick_benchmark_runs(tmp_path):
    r = CliRunner().invoke(sb.main, ["--quick", "--skip-quality", "--json", str(tmp_path / "s.json"),
                                     "--png", str(tmp_path / "s.png")])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "s.json").read_text())
    sweep = rep["layer_sweep"]
    assert [row["rate"] for row in sweep["rows"]] == list(sb.QUICK_RATES)
    assert all(row["max_abs_diff_sparse"] <= 1e-5 for row in sweep["rows"])
    assert {"numpy_sum_256MiB", "dense_gemv", "used"} <= set(sweep["bandwidth_gbs"])
    assert rep["batch_sweep"] and "targets" in rep
    assert all(row["int8_dense_ms"] > 0 and row["speedup_int8_sparse"] > 0 for row in sweep["rows"])
    assert [w["width"] for w in rep["width_break_even_int8"]["widths"]] == [128, 256]
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
