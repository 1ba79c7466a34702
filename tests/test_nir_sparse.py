"""--path auto for NIR imports (zor.export.nir.paths): the input rate of each Affine/Linear node measured on the
float graph, the profile's break-even, the plan in zor.paths, and the files the runtime gets.

The graph: Input (512) → Affine "a" (256 × 512) → LIF "l" → Affine "b" (10 × 256) → LIF "o" → Output.
A test profile without a measured curve, r_be = 0.25, S₀ = 65536, so the break-even is r_be·(1 − S₀/N):

    a: N = 512·256 = 131072 → 0.25·(1 − 1/2) = 0.125        b: N = 2560 < S₀ → 0 (never sparse)

Events with exactly 32 of the 512 inputs on in every row and step give a the input rate 32/512 = 0.0625
< 0.125 → sparse; 160 of 512 (0.3125) → dense.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from click.testing import CliRunner

nir = pytest.importorskip("nir", reason="the 'nir' extra reads NIR graphs")

from zor.devices import get  # noqa: E402
from zor.export import export_nir  # noqa: E402
from zor.export.cli import main as export_main  # noqa: E402
from zor.export.nir import load_graph  # noqa: E402
from zor.export.nir.paths import input_rates  # noqa: E402
from zor.runtime import Model  # noqa: E402

DT = 1e-4
PROFILE = dataclasses.replace(get("generic"), name="test-profile", sparse_break_even=0.25,
                              sparse_min_synapses=65536, sparse_curve=())


def graph():
    rng = np.random.default_rng(0)
    f = np.float32

    def lif(n):
        return nir.LIF(tau=np.full(n, 1e-3, f), r=np.ones(n, f), v_leak=np.zeros(n, f), v_threshold=np.ones(n, f),
                       v_reset=np.zeros(n, f))
    return nir.NIRGraph(
        nodes={"input": nir.Input(np.array([512])), "a": nir.Affine(rng.normal(0, 1.0, (256, 512)).astype(f),
                                                                     np.zeros(256, f)),
               "l": lif(256), "b": nir.Affine(rng.normal(0, 1.0, (10, 256)).astype(f), np.zeros(10, f)), "o": lif(10),
               "output": nir.Output(np.array([10]))},
        edges=[("input", "a"), ("a", "l"), ("l", "b"), ("b", "o"), ("o", "output")])


def events(on, steps=20, rows=4, seed=0):
    """(steps, rows, 512): exactly ``on`` inputs on in every row and step."""
    rng = np.random.default_rng(seed)
    xs = np.zeros((steps, rows, 512), np.float32)
    for t in range(steps):
        for r in range(rows):
            xs[t, r, rng.choice(512, on, replace=False)] = 1.0
    return xs


def test_auto_makes_the_sparse_node_the_hand_derivation_names(tmp_path):
    res = export_nir(graph(), tmp_path / "m.onnx", dt=DT, steps=20, path="auto", calibration=events(32),
                     device=PROFILE)
    p = res.paths
    assert p["requested"] == "auto" and p["profile"] == "test-profile" and p["break_even"] == 0.25
    assert p["min_synapses"] == 65536 and p["curve"] == [] and p["form"] == "batch1" and p["max_batch"] == 1
    assert p["rates"]["rows"] == 4 and p["rates"]["steps"] == 20
    a, b = p["connections"]
    assert (a["connection"], a["node"], a["kind"], a["path"], a["synapses"]) == (1, "a", "Affine", "sparse", 131072)
    assert a["spike_rate"] == 0.0625 and a["break_even"] == pytest.approx(0.125, abs=1e-12)
    assert "input rate 0.062 < break-even 0.125" in a["reason"]
    assert (b["node"], b["path"], b["break_even"]) == ("b", "dense", 0.0)
    m = Model(tmp_path / "m.onnx")
    assert m.path_kind == "auto" and m.max_batch == 1
    assert res.verification["nir"]["runs"][0]["batch"] == 1             # the batch-1 form verified at batch 1
    export_nir(graph(), tmp_path / "d.onnx", dt=DT, steps=20)
    xs = events(32, steps=30, rows=1, seed=4)
    got, want = m.stream().run(xs)["output"], Model(tmp_path / "d.onnx").stream().run(xs)["output"]
    assert want.any() and (got == want).mean() >= 0.99      # the same sums in another order: ties at most


def test_auto_stays_dense_above_the_break_even_and_takes_any_batch(tmp_path):
    res = export_nir(graph(), tmp_path / "m.onnx", dt=DT, steps=20, path="auto", calibration=events(160),
                     device=PROFILE)
    assert [(c["node"], c["path"], c["spike_rate"]) for c in res.paths["connections"]][0] == ("a", "dense", 0.3125)
    assert res.paths["max_batch"] is None
    m = Model(tmp_path / "m.onnx")
    assert m.max_batch is None and m.stream().run(events(160, steps=3, rows=5))["output"].shape == (3, 5, 10)


def test_input_rates_of_a_fixture_are_the_share_of_nonzero_inputs():
    g = load_graph(graph())
    xs = events(64, steps=5, rows=3)
    rates = input_rates(g, DT, xs, ["a", "b"])
    assert rates["a"] == 0.125                                           # 64 / 512 exactly
    assert 0.0 <= rates["b"] <= 1.0


def test_auto_with_int8_keeps_sparse_rows_float(tmp_path):
    res = export_nir(graph(), tmp_path / "q.onnx", dt=DT, steps=20, path="auto", quantize="int8",
                     calibration=events(32, rows=6), device=dataclasses.replace(PROFILE, int8=get("x86-64-avx512-vnni").int8),
                     spike_budget=0.0, max_drop=100.0)
    rows = {r["node"]: r for r in res.quantization["connections"]}
    assert rows["a"]["precision"] == "float rows (sparse)" and rows["b"]["precision"] == "int8"
    m = Model(tmp_path / "q.onnx")
    assert m.precision == "int8" and m.max_batch == 1
    assert m.stream().run(events(32, steps=4, rows=1))["output"].shape == (4, 1, 10)


def test_cli_path_auto_prints_the_plan(tmp_path):
    nir.write(str(tmp_path / "g.nir"), graph())
    np.save(tmp_path / "ev.npy", events(32))
    r = CliRunner().invoke(export_main, [str(tmp_path / "g.nir"), "-o", str(tmp_path / "m.onnx"), "--dt", str(DT),
                                         "--steps", "20", "--path", "auto", "--calibration", str(tmp_path / "ev.npy"),
                                         "--device", "generic"])
    assert r.exit_code == 0, r.output
    assert "node 'a': sparse: input rate 0.062 < break-even" in r.output and "node 'b': dense" in r.output
