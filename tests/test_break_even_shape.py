"""The sparse break-even by connection shape (zor.devices.SparseShape, zor.export.paths.effective_break_even).

A test profile: SparseShape(r_be = 0.3, S₀ = 1000, k = 10, φ = 20, max N = 100,000), and for the N-only rule
(no curve) sparse_break_even 0.4, sparse_min_synapses 20,000. By hand, r* = r_be·(1 − S₀/N − k/n_out)/(1 + φ/n_out):

    100 × 50  (N 5,000):   0.3·(1 − 0.2 − 0.2)/(1 + 0.4)   = 0.18/1.4 = 0.128571...
     50 × 100 (N 5,000):   0.3·(1 − 0.2 − 0.1)/(1 + 0.2)   = 0.21/1.2 = 0.175
    500 × 100 (N 50,000):  0.3·(1 − 0.02 − 0.1)/(1 + 0.2)  = 0.264/1.2 = 0.22
     10 × 10  (N 100):     1 − 10 − 1 < 0                  → 0
    N-only, N 50,000:      0.4·(1 − 20,000/50,000)         = 0.24
    N-only, N 5,000:       0.4·(1 − 4) < 0                 → 0
    1000 × 200 (N 200,000 > max N): the N-only rule, 0.4·(1 − 0.1) = 0.36
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from zor.devices import PROFILES, Profile, SparseShape, get
from zor.export.paths import effective_break_even, plan_paths

from zor import Layer, Zor
from zor.common.errors import ConfigError, DeviceError

SHAPE = SparseShape(break_even=0.3, min_synapses=1000, row_synapses=10, active_row_synapses=20, max_synapses=100_000)
PROFILE = Profile(name="shape-test", description="", arch="any", sparse_break_even=0.4, sparse_min_synapses=20_000,
                  sparse_shape=SHAPE)


def test_shape_rule_hand_derived():
    assert SHAPE.rate(100, 50) == pytest.approx(0.18 / 1.4, abs=1e-12)
    assert effective_break_even(PROFILE, (100, 50)) == pytest.approx(0.18 / 1.4, abs=1e-12)
    assert effective_break_even(PROFILE, (50, 100)) == pytest.approx(0.175, abs=1e-12)
    assert effective_break_even(PROFILE, (500, 100)) == pytest.approx(0.22, abs=1e-12)
    assert effective_break_even(PROFILE, (10, 10)) == 0.0
    assert effective_break_even(PROFILE, (1000, 200)) == pytest.approx(0.36, abs=1e-12)   # above max N: N-only


def test_n_only_call_keeps_the_old_rule():
    assert effective_break_even(PROFILE, 50_000) == pytest.approx(0.24, abs=1e-12)
    assert effective_break_even(PROFILE, 5_000) == 0.0
    assert effective_break_even(PROFILE, (500, 100), "int8") == pytest.approx(0.24, abs=1e-12)  # model is float32


def test_profiles_without_a_shape_model_answer_as_before():
    for p in PROFILES.values():
        if p.sparse_shape is not None:
            continue
        for n_in, n_out in ((784, 128), (128, 10), (256, 256), (4096, 4096), (1, 1)):
            assert effective_break_even(p, (n_in, n_out)) == effective_break_even(p, n_in * n_out)


def test_avx512_profile_shape_model():
    p = get("x86-64-avx512-vnni")
    s = p.sparse_shape
    n = 784 * 128
    want = s.break_even * (1 - s.min_synapses / n - s.row_synapses / 128) / (1 + s.active_row_synapses / 128)
    assert effective_break_even(p, (784, 128)) == pytest.approx(want, abs=1e-12)
    assert 0.0 < effective_break_even(p, (784, 128)) < effective_break_even(p, n)   # narrower than a square layer
    assert effective_break_even(p, (128, 10)) == 0.0 and effective_break_even(p, (128, 128)) == 0.0
    assert effective_break_even(p, (1024, 1024)) == effective_break_even(p, 1024 * 1024)   # above max N: the curve
    assert "sparse_shapes.py" in p.sparse_evidence and "Xeon" in p.sparse_evidence


@pytest.mark.parametrize("bad", [(0, 5), (5, 0), (1, 2, 3), (1.5, 2), (True, 3), (-1, 4), ()])
def test_bad_shape_is_a_config_error(bad):
    with pytest.raises(ConfigError, match=r"\(n_in, n_out\)"):
        effective_break_even(PROFILE, bad)


# --------------------------------------------------------------------------- validation
finite = st.floats(min_value=0.0, max_value=1e9, allow_nan=False)


@given(rb=st.floats(0.0, 1.0), s0=finite, k=finite, phi=finite, top=st.integers(1, 10**12),
       n_in=st.integers(1, 10**5), n_out=st.integers(1, 10**5))
@settings(max_examples=200, deadline=None)
def test_valid_shape_models_give_rates_in_0_1(rb, s0, k, phi, top, n_in, n_out):
    r = SparseShape(rb, s0, k, phi, top).rate(n_in, n_out)
    assert 0.0 <= r <= 1.0 and r <= rb


@given(field=st.sampled_from(["break_even", "min_synapses", "row_synapses", "active_row_synapses"]),
       value=st.one_of(st.floats(max_value=-1e-12), st.just(math.nan), st.just(math.inf), st.just(-math.inf),
                       st.booleans(), st.text(max_size=3), st.none()))
@settings(max_examples=150, deadline=None)
def test_bad_numbers_are_refused(field, value):
    kw = dict(break_even=0.3, min_synapses=1.0, row_synapses=1.0, active_row_synapses=1.0, max_synapses=10)
    kw[field] = value
    with pytest.raises(DeviceError, match=f"SparseShape.{field}"):
        SparseShape(**kw)


@given(value=st.floats(min_value=1.0, exclude_min=True, allow_nan=False, allow_infinity=True))
def test_break_even_above_one_is_refused(value):
    with pytest.raises(DeviceError, match="SparseShape.break_even: expected a rate in"):
        SparseShape(value, 0.0, 0.0, 0.0, 1)


@given(value=st.one_of(st.integers(max_value=0), st.floats(allow_nan=True), st.booleans(), st.text(max_size=3)))
def test_bad_max_synapses_is_refused(value):
    with pytest.raises(DeviceError, match="SparseShape.max_synapses: expected an int ≥ 1"):
        SparseShape(0.3, 0.0, 0.0, 0.0, value)


def test_profile_refuses_a_shape_model_that_is_not_one():
    with pytest.raises(DeviceError, match="sparse_shape expected a SparseShape"):
        Profile(name="x", description="", arch="any", sparse_shape={"break_even": 0.3})


# --------------------------------------------------------------------------- auto plans
def test_zor_auto_follows_the_shape_rule():
    """Two connections of N = 5,000 at the same rate 0.15: 100 → 50 has r* 0.1286 (dense), 50 → 100 has
    0.175 (sparse); the N-only rule would treat both alike."""
    net = Zor([Layer(100), Layer(50), Layer(100), Layer(3)], seed=0)
    plan = plan_paths(net, "auto", PROFILE, rates=[0.15, 0.15, 0.15])
    a, b, c = plan.connections
    assert (a.path, b.path, c.path) == ("dense", "sparse", "dense")
    assert a.break_even == pytest.approx(0.18 / 1.4, abs=1e-12) and b.break_even == pytest.approx(0.175, abs=1e-12)
    assert c.break_even == 0.0                                       # 100 × 3: 1 − 0.0033 − 3.33 < 0
    assert "100x50" in a.reason and "≥ break-even 0.1286" in a.reason and "< break-even 0.1750" in b.reason
    d = plan.to_dict()
    assert d["shape_model"] == dataclasses.asdict(SHAPE) and d["connections"][1]["break_even"] == b.break_even
    union = plan_paths(net, "auto", PROFILE, rates=[0.15] * 3, union_rates=[0.15] * 3, max_batch=4)
    assert [x.path for x in union.connections] == ["dense"] * 3      # union form: N-only, 0.4·(1 − 4) → 0
    assert "shape_model" not in union.to_dict()


def test_zor_export_records_the_shape_break_even(tmp_path):
    from zor.export import export
    from zor.runtime import Model

    net = Zor([Layer(50, threshold=0.5), Layer(100)], seed=0)
    rng = np.random.default_rng(0)
    for k, want in ((5, "sparse"), (10, "dense")):                  # rates 0.10 < 0.175 ≤ 0.20
        x = rng.uniform(0.0, 0.4, (16, 50)).astype(np.float32)
        for row in x:
            row[rng.choice(50, k, replace=False)] = 0.9
        res = export(net, tmp_path / f"m{k}.onnx", path="auto", calibration=x, device=PROFILE)
        conn = res.paths["connections"][0]
        assert conn["path"] == want and conn["break_even"] == pytest.approx(0.175, abs=1e-12)
        assert conn["spike_rate"] == pytest.approx(k / 50, abs=1e-12)
        assert Model(tmp_path / f"m{k}.onnx").metadata.paths["shape_model"]["break_even"] == 0.3


def test_nir_auto_follows_the_shape_rule(tmp_path):
    """Affine a: 64 → 32, b: 32 → 64 (N = 2,048 each). Shape model r_be 0.5, k 8, S₀ = φ = 0:
    a: 0.5·(1 − 8/32) = 0.375, b: 0.5·(1 − 8/64) = 0.4375; the N-only rule (0.1, no S₀) would give 0.1 to both.
    Inputs with exactly 16 of 64 on: a's rate 0.25 < 0.375 → sparse (dense under the N-only rule)."""
    nir = pytest.importorskip("nir", reason="the 'nir' extra reads NIR graphs")
    from zor.export import export_nir

    f = np.float32
    rng = np.random.default_rng(1)

    def lif(n):
        return nir.LIF(tau=np.full(n, 1e-3, f), r=np.ones(n, f), v_leak=np.zeros(n, f), v_threshold=np.ones(n, f),
                       v_reset=np.zeros(n, f))
    graph = nir.NIRGraph(
        nodes={"input": nir.Input(np.array([64])), "a": nir.Affine(rng.normal(0, 1, (32, 64)).astype(f), np.zeros(32, f)),
               "l": lif(32), "b": nir.Affine(rng.normal(0, 1, (64, 32)).astype(f), np.zeros(64, f)), "o": lif(64),
               "output": nir.Output(np.array([64]))},
        edges=[("input", "a"), ("a", "l"), ("l", "b"), ("b", "o"), ("o", "output")])
    prof = Profile(name="nir-shape", description="", arch="any", sparse_break_even=0.1, sparse_min_synapses=0,
                   sparse_shape=SparseShape(0.5, 0.0, 8.0, 0.0, 10**6))
    xs = np.zeros((10, 2, 64), f)
    for t in range(10):
        for r in range(2):
            xs[t, r, rng.choice(64, 16, replace=False)] = 1.0
    p = export_nir(graph, tmp_path / "m.onnx", dt=1e-4, steps=10, path="auto", calibration=xs, device=prof).paths
    a, b = p["connections"]
    assert (a["node"], a["shape"], a["spike_rate"], a["path"]) == ("a", [64, 32], 0.25, "sparse")
    assert a["break_even"] == pytest.approx(0.375, abs=1e-12) and "64x32" in a["reason"]
    assert b["shape"] == [32, 64] and b["break_even"] == pytest.approx(0.4375, abs=1e-12)
    assert b["path"] == ("sparse" if b["spike_rate"] < 0.4375 else "dense")
    assert p["shape_model"] == {"break_even": 0.5, "min_synapses": 0.0, "row_synapses": 8.0,
                                "active_row_synapses": 0.0, "max_synapses": 10**6}
    old = dataclasses.replace(prof, sparse_shape=None)
    p_old = export_nir(graph, tmp_path / "o.onnx", dt=1e-4, steps=10, path="auto", calibration=xs, device=old).paths
    assert p_old["connections"][0]["path"] == "dense" and p_old["connections"][0]["break_even"] == 0.1
    assert "shape_model" not in p_old


# --------------------------------------------------------------------------- the benchmark's fits
def test_line_crossover_hand_derived():
    from benchmarks.sparse_shapes import line_crossover

    got = line_crossover([0.0, 0.1, 0.2], [10.0, 10.0, 10.0], [8.0, 12.0, 16.0])   # sparse = 8 + 40 r
    assert got["break_even_line"] == pytest.approx(2 / 40, abs=1e-12) and got["sparse_per_rate_ms"] == pytest.approx(40)
    assert line_crossover([0.0, 0.5], [10.0, 10.0], [11.0, 11.0])["break_even_line"] == 0.0    # flat, above dense
    assert line_crossover([0.0, 0.5], [10.0, 10.0], [9.0, 9.0])["break_even_line"] == 1.0      # flat, below dense


def test_fits_recover_the_parameters_they_were_made_from():
    from benchmarks.sparse_shapes import fit_costs, fit_crossovers, shape_rate

    p = {"break_even": 0.3, "min_synapses": 1000.0, "row_synapses": 10.0, "active_row_synapses": 20.0}
    shapes = [(100, 50), (50, 100), (500, 100), (200, 200), (1000, 30), (64, 64), (30, 20)]
    assert shape_rate(p, 100, 50) == pytest.approx(0.18 / 1.4, abs=1e-12) and shape_rate(p, 30, 20) == 0.0
    fit = fit_crossovers([(i, o, shape_rate(p, i, o)) for i, o in shapes], np.arange(0.0, 100.0, 1.0))
    for key, want in p.items():
        assert fit[key] == pytest.approx(want, rel=1e-6), key
    assert fit["rms"] < 1e-9
    # timings (µs) from a_d 10, b_d 0.04e-3, a_s 11, c 2e-3, f 16e-3, e 0.15e-3: r_be = b_d/e = 0.2667, S₀ = 25,000,
    # k = 50, φ = 106.67
    rates = [0.0, 0.1, 0.3]
    rows = [{"n_in": i, "n_out": o, "rates": rates,
             "dense_ms": [1e-3 * (10 + 0.04e-3 * i * o)] * 3,
             "sparse_ms": [1e-3 * (11 + 2e-3 * i + r * (16e-3 * i + 0.15e-3 * i * o)) for r in rates]}
            for i, o in shapes]
    c = fit_costs(rows)
    assert c["break_even"] == pytest.approx(0.04 / 0.15, rel=1e-6) and c["min_synapses"] == pytest.approx(25_000, rel=1e-6)
    assert c["row_synapses"] == pytest.approx(50, rel=1e-6) and c["active_row_synapses"] == pytest.approx(16 / 0.15, rel=1e-6)
