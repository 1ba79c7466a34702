"""The int8 checks of the ARM path on every int8 kernel: benchmarks/arm/qdq.py and hostcheck.py.

An int8 export's outputs depend on the CPU's int8 kernel only through how it sums
(exact int32, or x86 AVX2/AVX-512BW without VNNI: u8×s8 pairs saturating in int16).
These tests check the numpy model of both sums by hand, that the quantisation bound
holds for any weights, scales and inputs, and then run the real export on this CPU's
own kernel and, under ``qemu-x86_64-static``, on two other x86 kernels:
``-cpu Haswell`` (AVX2, no VNNI: int16 pairs) and ``-cpu SandyBridge`` (no AVX2:
onnxruntime's SSE4.1 kernel, int32). /proc/cpuinfo under qemu-user is the host's,
so those runs name their kernel by the qemu CPU model.

The qemu runs install and download nothing: they need qemu-user-static (the package
the ARM tests install) and skip, naming it, where it is missing; ``ZOR_ARM=0`` skips
them, ``ZOR_ARM=require`` makes a missing qemu a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
ARM = REPO / "benchmarks" / "arm"
sys.path.insert(0, str(ARM))          # hostcheck.py imports parity.py and qdq.py by name


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ARM / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


qdq = _load("qdq")


def _skip(reason: str):
    """Skip with ``reason``, or fail with ZOR_ARM=require; a blank reason is a bug here."""
    if not reason.strip():
        raise AssertionError("a skip without a reason: say what is missing")
    if os.environ.get("ZOR_ARM", "").lower() == "require":
        pytest.fail(f"ZOR_ARM=require but: {reason}")
    pytest.skip(reason)


# ---------------------------------------------------------------------------------------------- the sums by hand
def test_expected_arithmetic_per_isa():
    assert qdq.expected_arithmetic("aarch64", ["neon", "dotprod"]) == "int32"
    assert qdq.expected_arithmetic("x86_64", ["sse4_2", "avx", "avx2", "fma"]) == "int16_pairs"
    assert qdq.expected_arithmetic("x86_64", ["avx2", "avx512f", "avx512bw"]) == "int16_pairs"
    assert qdq.expected_arithmetic("x86_64", ["avx2", "avx512f", "avx512bw", "avx512_vnni"]) == "int32"
    assert qdq.expected_arithmetic("x86_64", ["avx2", "avx_vnni"]) == "int32"
    assert qdq.expected_arithmetic("x86_64", ["sse4_2"]) == "int32"


def _params(w_q, w_scale, a_scale, a_zp, thresholds):
    return {"thresholds": [np.asarray(t, np.float64) for t in thresholds],
            "weights": [np.asarray(w_q, np.int64)], "w_scales": [np.asarray(w_scale, np.float64)],
            "a_scales": [float(a_scale)], "a_zero_points": [int(a_zp)]}


def test_pair_sums_hand_derived():
    # activations 1.0 → q = 127 (scale 1/127, zero point 0) → u8 255; weights 127 and 127:
    # one pair 255·127 + 255·127 = 64770 saturates at 32767; the zero point term (0 + 128)·254 = 32512
    p = _params([[127], [127]], [1.0], 1 / 127, 0, [[-1.0, -1.0], [9.0]])
    x = np.array([[1.0, 1.0]], np.float32)
    exact, pairs = qdq.simulate(p, x, "int32"), qdq.simulate(p, x, "int16_pairs")
    assert exact["charge_1"][0, 0] == pytest.approx(127 * 127 * 2 / 127)             # 254
    assert pairs["charge_1"][0, 0] == pytest.approx((32767 - 32512) / 127)           # 255 / 127 ≈ 2.008
    assert exact["spikes_0"].all() and exact["spikes_1"].all() and not pairs["spikes_1"].any()    # θ_1 = 9
    assert exact["output"][0, 0] == pytest.approx(1.0) and pairs["output"][0, 0] == pytest.approx(1 / (1 + np.exp(-255 / 127)))
    small = _params([[60], [-60]], [1.0], 1 / 127, 0, [[-1.0, -1.0], [9.0]])     # 255·60·2 = 30600: never saturates
    for xs in ([[1.0, 1.0]], [[1.0, -1.0]], [[0.5, 0.25]]):
        a, b = (qdq.simulate(small, np.array(xs, np.float32), k)["charge_1"] for k in qdq.ARITHMETICS)
        assert a == pytest.approx(b)
    with pytest.raises(ValueError, match="expected one of"):
        qdq.simulate(p, x, "int12")


def _float_run(w: list[np.ndarray], thetas: list[np.ndarray], x: np.ndarray) -> dict:
    c = x.astype(np.float64)
    run = {"charge_0": c}
    for j, wj in enumerate(w):
        c = np.where(c > thetas[j], c, 0.0) @ wj
        run[f"charge_{j + 1}"] = c
    run["output"] = 1 / (1 + np.exp(-c))
    return run


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 12), st.integers(1, 10), st.integers(1, 6),
       st.floats(0.3, 1.5), st.floats(0.05, 3.0), st.booleans())
def test_the_bound_holds_for_any_weights_scales_and_inputs(seed, n0, n1, n2, range_share, w_max, signed_zp):
    """|y_int8 − y_float| ≤ envelope for both sums: rounding, clipping at a calibrated range
    narrower or wider than the values, spike flips, saturation (large u8 × large s8)."""
    rng = np.random.default_rng(seed)
    w = [rng.uniform(-w_max, w_max, (n0, n1)), rng.uniform(-w_max, w_max, (n1, n2))]
    thetas = [rng.uniform(-0.2, 0.6, n0), rng.uniform(-1, 1, n1), np.full(n2, -np.inf)]
    x = rng.uniform(0, 1, (5, n0)).astype(np.float32)
    ref = _float_run(w, thetas, x)
    p = {"thresholds": thetas, "weights": [], "w_scales": [], "a_scales": [], "a_zero_points": []}
    for j, wj in enumerate(w):
        s_w = np.abs(wj).max(0) / 127
        p["weights"].append(np.rint(wj / s_w).astype(np.int64))
        p["w_scales"].append(s_w)
        g = np.where(ref[f"charge_{j}"] > thetas[j], ref[f"charge_{j}"], 0.0)
        lo, hi = min(g.min(), 0.0) * range_share, max(g.max(), 1e-3) * range_share       # a calibrated range
        s_a = (hi - lo) / 255
        p["a_scales"].append(s_a)
        p["a_zero_points"].append(int(np.clip(np.rint(-128 - lo / s_a), -128, 127)) if signed_zp else -128)
    for arithmetic in qdq.ARITHMETICS:
        got = qdq.simulate(p, x, arithmetic)["output"].astype(np.float64)
        bound = qdq.envelope(p, ref, arithmetic)
        assert np.all(np.abs(got - ref["output"]) <= bound + 1e-6), arithmetic


# ---------------------------------------------------------------------------------------------- the real export
@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The ARM check's host fixtures (prepare.py: exports, inputs, references, bounds)."""
    work = tmp_path_factory.mktemp("arm-kernels") / "work"
    p = subprocess.run([sys.executable, str(ARM / "prepare.py"), str(work)], capture_output=True, text=True,
                       timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    return work


def _hostcheck(work: Path, out: Path, prefix: tuple = (), args: tuple = ()) -> dict:
    p = subprocess.run([*prefix, sys.executable, str(ARM / "hostcheck.py"), str(work), *args, "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    sys.stdout.write(p.stdout)
    assert out.is_file(), f"hostcheck exit {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    return {**json.loads(out.read_text()), "_rc": p.returncode}


def test_this_cpus_int8_kernel_reproduces_its_arithmetic(prepared, tmp_path):
    manifest = json.loads((prepared / "manifest.json").read_text())["models"]["fewshot-int8"]
    host = manifest["host_kernel"]
    assert host["reproduces"] == [host["expected_arithmetic"]], host
    r = _hostcheck(prepared, tmp_path / "native.json")
    assert r["_rc"] == 0 and r["passed"], r["failures"]
    assert r["kernel"]["arithmetic"] == host["expected_arithmetic"] and r["output_max_abs_vs_reference"] <= 1e-5
    assert r["bit_exact_vs_host_int8"] or r["output_max_abs_vs_host_int8"] <= 1e-5
    assert r["output_over_bound"] == 0.0 and r["metric_drop"] <= manifest["tolerance"]["max_drop"]


@pytest.mark.parametrize("cpu, arithmetic", [("Haswell", "int16_pairs"), ("SandyBridge", "int32")])
def test_other_x86_int8_kernels_under_qemu(prepared, tmp_path, cpu, arithmetic):
    """The same checks on onnxruntime's AVX2 kernel (int16 pairs) and its SSE4.1 kernel (int32)."""
    if os.environ.get("ZOR_ARM", "").lower() in ("0", "off", "no"):
        pytest.skip("emulation tests disabled by ZOR_ARM=0 (this one runs the int8 check under qemu-x86_64-static)")
    if platform.machine() != "x86_64":
        pytest.skip(f"qemu-x86_64 -cpu {cpu} runs x86-64 programs of an x86-64 host, this is {platform.machine()}")
    qemu = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")
    if qemu is None:
        _skip("qemu-x86_64-static is missing (apt-get install qemu-user-static): cannot run another x86 int8 kernel")
    r = _hostcheck(prepared, tmp_path / f"{cpu}.json", prefix=(qemu, "-cpu", cpu),
                   args=("--arithmetic", arithmetic, "--qemu-cpu", cpu))
    assert r["kernel"]["reproduces"] == [arithmetic], r["kernel"]      # onnxruntime took that kernel
    assert r["_rc"] == 0 and r["passed"], r["failures"]
    assert r["output_over_bound"] == 0.0 and r["output_max_abs_vs_reference"] <= 1e-5
