"""The int8 export's arithmetic in numpy, per int8 kernel, and the output bound it implies.

An int8 (QDQ) export of a dense, stateless Zor network computes, per connection j,

    c_{j+1} = s_a·s_w,k · Σ_m (q_a,m − z_a)(q_w,mk)      q_a = sat8(round(g_j / s_a) + z_a)

where g_j is layer j's gated value (its charge where it spikes, else 0), q_w the
stored int8 weights (symmetric, per output column k, scale s_w,k) and (s_a, z_a) the
calibrated activation scale and zero point. How onnxruntime sums Σ depends on the
CPU's int8 kernel, and that is the only thing that does:

    "int32"        exact int32 sums: aarch64 (s8×s8: SDOT, or SMULL/SADALP), x86-64
                   with AVX-512 VNNI or AVX-VNNI, x86-64 with SSE4.1 only
    "int16_pairs"  x86-64 with AVX2 (or AVX-512BW) but no VNNI: the s8 activations
                   are shifted to u8 (+128) and VPMADDUBSW adds each pair of
                   u8×s8 products (k, k+1) into an int16 that saturates at ±32767/−32768

:func:`simulate` computes a graph's outputs, spikes and charges under either sum (so an
int8 run can be checked against the arithmetic of its own kernel within float rounding),
:func:`envelope` a per-element bound on |y_int8 − y_float32| derived from the scales
alone: rounding (half a step of s_a and s_w), clipping at the calibrated range,
every spike flip the charge bound allows upstream, and for "int16_pairs" the worst
saturation the inputs' possible range allows. No measured int8 figure enters it.

Numpy only, except :func:`read_params` (onnx, host side).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = ["ARITHMETICS", "expected_arithmetic", "read_params", "simulate", "envelope"]

ARITHMETICS = ("int32", "int16_pairs")
# the gate g = c·Cast(c > θ) (Cast, Mul; Where in exports made before it) is the same value either way
_OPS = ["Identity", "DequantizeLinear", "Greater", "Where", "Cast", "Mul", "QuantizeLinear", "MatMul", "Sigmoid"]


def expected_arithmetic(machine: str, isa: tuple | list) -> str:
    """The sum onnxruntime's int8 MatMul uses on a CPU (``machine`` as platform.machine(),
    ``isa`` as zor.devices.detect().cpu.isa); see the module docstring."""
    isa = set(isa)
    if machine in ("x86_64", "AMD64") and isa & {"avx2", "avx512bw"} and not isa & {"avx512_vnni", "avx_vnni"}:
        return "int16_pairs"
    return "int32"


def read_params(path) -> dict[str, Any]:
    """Thresholds, int8 weights and scales of a dense QDQ export (raises ValueError for any
    other graph: the numpy model covers identity-gated layers and a sigmoid output only)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    ops = sorted({n.op_type for n in proto.graph.node})
    if not set(ops) <= set(_OPS) or any(i.name.startswith("state_in") for i in proto.graph.input):
        raise ValueError(f"{path}: not a dense, stateless QDQ graph with a sigmoid output (ops {ops})")
    init = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    n_conn = sum(1 for k in init if k.startswith("weight_") and k.endswith("_quantized"))
    p: dict[str, Any] = {"thresholds": [init[f"threshold_{i}"].astype(np.float64) for i in range(n_conn + 1)],
                         "weights": [], "w_scales": [], "a_scales": [], "a_zero_points": []}
    for j in range(n_conn):
        if np.any(init[f"weight_{j}_zero_point"] != 0):
            raise ValueError(f"{path}: weight_{j} is not symmetric (zero point ≠ 0)")
        p["weights"].append(init[f"weight_{j}_quantized"].astype(np.int64))
        p["w_scales"].append(init[f"weight_{j}_scale"].astype(np.float64))
        p["a_scales"].append(float(init[f"gated_{j}_scale"]))
        p["a_zero_points"].append(int(init[f"gated_{j}_zero_point"]))
    return p


def _quantize(g: np.ndarray, s: float, z: int) -> np.ndarray:
    return np.clip(np.rint(g / s) + z, -128, 127)


def _pair_sums(qa: np.ndarray, z: int, w: np.ndarray, saturate: bool) -> np.ndarray:
    """Σ_m (qa_m − z) w_mk, rows × columns; ``saturate``: the u8×s8 int16 pair sums."""
    if not saturate:
        return (qa - z) @ w
    u = np.pad(qa + 128, ((0, 0), (0, qa.shape[1] % 2)))
    wp = np.pad(w, ((0, w.shape[0] % 2), (0, 0)))
    acc = np.empty((qa.shape[0], w.shape[1]))
    for r in range(qa.shape[0]):            # row by row: pairs × columns stay small
        pairs = u[r, 0::2, None] * wp[None, 0::2, :] + u[r, 1::2, None] * wp[None, 1::2, :]
        acc[r] = np.clip(pairs[0], -32768, 32767).sum(0)
    return acc - (z + 128) * w.sum(0)


def simulate(p: Mapping[str, Any], x: np.ndarray, arithmetic: str) -> dict[str, np.ndarray]:
    """``output``, ``spikes_{i}``, ``charge_{i}`` and ``threshold_{i}`` of the int8 graph on
    ``x`` with the given sum (float64 inside; float32 out, as a run returns them)."""
    if arithmetic not in ARITHMETICS:
        raise ValueError(f"arithmetic: expected one of {ARITHMETICS}, got {arithmetic!r}")
    theta = p["thresholds"]
    c = np.asarray(x, np.float64)
    out: dict[str, np.ndarray] = {}
    for i in range(len(theta)):
        spikes = c > theta[i]
        out[f"charge_{i}"], out[f"spikes_{i}"] = c.astype(np.float32), spikes
        out[f"threshold_{i}"] = theta[i].astype(np.float32)
        if i == len(theta) - 1:
            break
        s, z = p["a_scales"][i], p["a_zero_points"][i]
        qa = _quantize(np.where(spikes, c, 0.0), s, z)
        c = _pair_sums(qa, z, p["weights"][i], arithmetic == "int16_pairs") * s * p["w_scales"][i]
    out["output"] = (1.0 / (1.0 + np.exp(-c))).astype(np.float32)
    return out


def _saturation_bound(q_lo: np.ndarray, q_hi: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per row and column, the largest Σ_pairs |p − sat16(p)| over activations in [q_lo, q_hi]
    (|p − sat(p)| is convex in p and p is linear in the pair: its corners bound it)."""
    lo, hi = (np.pad(a + 128, ((0, 0), (0, a.shape[1] % 2))) for a in (q_lo, q_hi))
    wp = np.pad(w, ((0, w.shape[0] % 2), (0, 0)))
    w0, w1 = wp[None, 0::2, :], wp[None, 1::2, :]
    out = np.empty((q_lo.shape[0], w.shape[1]))
    for r in range(q_lo.shape[0]):
        worst = np.zeros((lo.shape[1] // 2, w.shape[1]))
        for a0 in (lo[r, 0::2], hi[r, 0::2]):
            for a1 in (lo[r, 1::2], hi[r, 1::2]):
                pair = (a0[:, None] * w0 + a1[:, None] * w1)[0]
                worst = np.maximum(worst, np.maximum(pair - 32767, -32768 - pair).clip(0))
        out[r] = worst.sum(0)
    return out


def envelope(p: Mapping[str, Any], ref: Mapping[str, np.ndarray], arithmetic: str,
             rel: float = 1e-5) -> np.ndarray:
    """Per element, a bound on |y_int8 − y_float32| for the float32 run ``ref`` (its
    ``charge_{i}``, ``output``) under ``arithmetic`` (see the module docstring).

    Per connection j with D_m ≥ |g_int8,m − g_float,m| (0 for the input layer):
    |ĝ_m − g_float,m| ≤ s_a/2 + clip_m + D_m, and the charge error
    B_k = Σ_m (s_a/2 + clip_m + D_m)|ŵ_mk| + Σ_m |g_float,m| s_w,k/2 (+ saturation, + ``rel``
    of Σ|g||ŵ| for float rounding). Layer j+1 may flip where |c − θ| ≤ B; there
    D = |c| + B, where it spikes D = B, else 0. The output bound is sigmoid's change over ±B.
    """
    theta = p["thresholds"]
    c = np.asarray(ref["charge_0"], np.float64)
    d = np.zeros_like(c)
    for j in range(len(theta) - 1):
        s, z, w = p["a_scales"][j], p["a_zero_points"][j], p["weights"][j]
        w_hat = np.abs(w) * p["w_scales"][j]
        g = np.where(c > theta[j], c, 0.0)
        lo_val, hi_val = (-128 - z) * s, (127 - z) * s
        clip = np.maximum.reduce([np.zeros_like(g), g + d - hi_val, lo_val - (g - d)])
        b = (s / 2 + clip + d) @ w_hat + np.abs(g) @ (np.ones_like(w_hat) * p["w_scales"][j] / 2)
        b += rel * (np.abs(g) + d) @ w_hat + rel
        if arithmetic == "int16_pairs":
            q_lo = np.clip(_quantize(g - d, s, z) - 1, -128, 127)      # ±1 step: float32 rounding ties
            q_hi = np.clip(_quantize(g + d, s, z) + 1, -128, 127)
            b += _saturation_bound(q_lo, q_hi, w) * s * p["w_scales"][j]
        c = np.asarray(ref[f"charge_{j + 1}"], np.float64)
        if j + 1 < len(theta) - 1:
            spikes, may_flip = c > theta[j + 1], np.abs(c - theta[j + 1]) <= b
            d = np.where(may_flip, np.abs(c) + b, np.where(spikes, b, 0.0))
    sig = (lambda v: 1.0 / (1.0 + np.exp(-v)))
    return np.maximum(sig(c + b) - sig(c), sig(c) - sig(c - b))
