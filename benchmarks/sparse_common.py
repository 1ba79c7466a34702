"""Helpers of the sparse-inference benchmark (``python -m benchmarks.sparse_inference``): inputs at a chosen
activity, batch-1 latency taken in turns, the break-even fits, and exports and runtime models for this machine."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from benchmarks import common

__all__ = ["THETA", "inputs_at", "p50_ms", "p50_repeats", "p50_interleaved", "crossover", "fit_min_synapses",
           "floor_ms", "read_bandwidth", "medians", "export_here", "effective_break_even", "runtime_model", "memory_demo"]

THETA = 0.5


def inputs_at(n: int, rate: float, count: int, seed: int = 0, theta: float = THETA) -> np.ndarray:
    """``count`` rows of width n, each with exactly round(rate·n) values above ``theta`` (the rest below it)."""
    rng = np.random.default_rng(seed)
    k = int(round(rate * n))
    x = rng.uniform(0.0, theta * 0.9, size=(count, n)).astype(np.float32)
    for row in x:
        idx = rng.choice(n, size=k, replace=False)
        row[idx] = rng.uniform(theta + 0.1, theta + 1.0, size=k)
    return x


def p50_ms(fn: Callable[[np.ndarray], Any], inputs: Sequence[np.ndarray], calls: int) -> float:
    """Median latency (ms) of ``calls`` calls of ``fn``, cycling through ``inputs``."""
    ts = []
    for c in range(calls):
        x = inputs[c % len(inputs)]
        t = time.perf_counter()
        fn(x)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e3


def p50_repeats(runners: dict[str, Callable[[np.ndarray], Any]], xs: np.ndarray, calls: int, repeats: int,
                warmup: int = 3) -> dict[str, list[float]]:
    """Each runner's p50 latency (ms) over ``calls`` batch-1 calls cycling through the rows of ``xs``, in every
    one of ``repeats`` rounds; within a round the runners take turns (:func:`benchmarks.common.interleave`), so
    round k's figures were taken within a fraction of a second of each other."""
    for fn in runners.values():
        for i in range(warmup):
            fn(xs[i % len(xs)][None])
    rows = xs[:, None]
    return common.interleave({name: (lambda fn=fn: p50_ms(fn, rows, calls)) for name, fn in runners.items()},
                             repeats)


def p50_interleaved(runners: dict[str, Callable[[np.ndarray], Any]], xs: np.ndarray, calls: int, repeats: int,
                    warmup: int = 3) -> dict[str, float]:
    """Median over repeats of each runner's p50 latency (ms) over ``calls`` calls cycling through ``xs``."""
    return medians(p50_repeats(runners, xs, calls, repeats, warmup))


def medians(rounds: dict[str, list[float]]) -> dict[str, float]:
    """Each runner's median over its rounds."""
    return {k: float(np.median(v)) for k, v in rounds.items()}


def crossover(rates: list[float], dense_ms: list[float], sparse_ms: list[float]) -> Optional[float]:
    """The rate where sparse and dense cost the same: linear interpolation of log(sparse/dense) between the
    last rate where sparse is faster and the next one (None when sparse is never faster)."""
    ratio = [math.log(s / d) for s, d in zip(sparse_ms, dense_ms)]
    for i in range(len(rates) - 1):
        if ratio[i] < 0 <= ratio[i + 1]:
            r0, r1, a, b = rates[i], rates[i + 1], ratio[i], ratio[i + 1]
            return r0 + (r1 - r0) * (-a) / (b - a)
    if all(r < 0 for r in ratio):
        return rates[-1]
    return None


def fit_min_synapses(r_be: float, points: list[tuple[int, Optional[float]]]) -> Optional[int]:
    """S₀ from r*(N) = r_be (1 − S₀/N): the median of N (1 − r*/r_be) over (N, r*) points (r* None: sparse never
    paid, so S₀ ≥ N)."""
    est = []
    for n, r in points:
        est.append(n if r is None else n * max(0.0, 1.0 - r / r_be))
    return int(np.median(est)) if est else None


def floor_ms(overhead_ms: float, active_rows: int, row_bytes: int, bandwidth_gbs: float) -> float:
    """Per-call overhead + bytes of the active rows / bandwidth, in ms."""
    return overhead_ms + active_rows * row_bytes / (bandwidth_gbs * 1e9) * 1e3


def read_bandwidth(mib: int = 256, repeats: int = 5) -> float:
    """Single-thread read bandwidth (GB/s) of numpy summing a ``mib`` MiB float32 array (best of ``repeats``)."""
    a = np.ones((mib << 20) // 4, dtype=np.float32)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a.sum()
        best = min(best, time.perf_counter() - t)
    return a.nbytes / best / 1e9


def export_here(net: Any, out: Path, **kw: Any) -> Path:
    """Export with this machine's detected profile (its break-even decides ``auto``), one thread."""
    from zor.export import export

    kw.setdefault("device", "auto")
    export(net, out, threads=1, **kw)
    return out


def effective_break_even(profile: Any, synapses: Union[int, tuple[int, int]]) -> float:
    """The spike rate below which the sparse form pays on ``profile`` for a connection of shape (n_in, n_out), or
    of N synapses (:func:`zor.export.paths.effective_break_even`)."""
    from zor.export.paths import effective_break_even as rule

    return rule(profile, synapses)


def runtime_model(path: Path, threads: int, **kw: Any) -> Any:
    """The file as a :class:`zor.runtime.Model` on this machine's profile."""
    from zor.runtime import Model

    return Model(path, device="auto", threads=threads, **kw)


# --------------------------------------------------------------------------- the memory-limit demonstration
_CHILD = r'''
import json, resource, sys, time
limit = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmPeak:", "VmHWM:", "VmSize:", "VmRSS:")):
                out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out


try:
    import numpy as np
    from zor.runtime import Model
    x = np.load(sys.argv[2])
    m = Model(sys.argv[1], device="generic", threads=1, weights=sys.argv[4])
    outs, rates, times = [], [], []
    for i in range(len(x)):
        t = time.perf_counter()
        r = m.run(x[i:i + 1], spikes=True)
        times.append(time.perf_counter() - t)
        outs.append(r["output"])
        rates.append(r["spike_rates"].tolist())
    np.save(sys.argv[5], np.concatenate(outs))
    print(json.dumps({"ok": True, "mode": m.weights_mode, "rates": rates, "bytes_read": m.weights_bytes_read,
                      "ms_per_call": [1e3 * t for t in times], **status()}))
except Exception as exc:
    print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"[:400], **status()}))
'''


def memory_demo(folder: Path, limit_mib: int, hidden: int, calls: int, rate: float = 0.1) -> dict[str, Any]:
    """The memory-limit demonstration (see the module docstring, part 5)."""
    import torch
    from zor.export.graph import to_onnx
    from zor.export.session import Stepper

    from zor import Layer, Zor

    n = 4096
    net = Zor([Layer(n, threshold=THETA), Layer(hidden), Layer(n)], seed=0, device="cpu")
    calib = inputs_at(n, rate, 64, seed=5)
    with torch.no_grad():
        a0 = torch.where(torch.from_numpy(calib) > THETA, torch.from_numpy(calib), torch.zeros(()))
        h1 = (a0 @ net.weights[0]).flatten()
        theta1 = float(torch.quantile(h1[torch.randperm(len(h1))[:1_000_000]], 1.0 - rate))
        net.threshold(1).fill_(theta1)                  # ≈ rate of the hidden units spike on such inputs
    xs = inputs_at(n, rate, calls, seed=11)
    ref_engine, _ = net.run(torch.from_numpy(xs))
    ref_engine = ref_engine.numpy()
    dense = to_onnx(net, metadata={})
    st = Stepper(dense)
    st.reset(len(xs))
    ref_dense = st.step(xs)["output"]
    del st, dense
    path = folder / "big.onnx"
    t0 = time.perf_counter()
    export_here(net, path, path="sparse", external_weights=True, verify_model=False, calibration=calib)
    export_s = time.perf_counter() - t0
    del net
    weights_bytes = (folder / "big.weights").stat().st_size
    np.save(folder / "big-x.npy", xs)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MALLOC_ARENA_MAX="2")
    limit = limit_mib << 20
    runs = {}
    for mode in ("rows", "load"):
        out_npy = folder / f"big-out-{mode}.npy"
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(folder / "big-x.npy"), str(limit), mode,
                               str(out_npy)], capture_output=True, text=True, env=env, timeout=900)
        line = (proc.stdout.strip().splitlines() or [""])[-1]
        try:
            res = json.loads(line)
        except json.JSONDecodeError:
            res = {"ok": False, "error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-300:]}"}
        res["returncode"] = proc.returncode
        if "error" in res:                               # no path of this machine in the report
            res["error"] = res["error"].replace(str(folder) + os.sep, "")
        if res.get("ok"):
            got = np.load(out_npy)
            res["max_abs_diff_vs_dense_onnx"] = float(np.abs(got - ref_dense).max())
            res["max_abs_diff_vs_engine"] = float(np.abs(got - ref_engine).max())
        runs[mode] = res
    rows = runs["rows"]
    return {"limit_bytes": limit, "limit_mib": limit_mib, "limit_kind": "RLIMIT_AS (address space) in the child",
            "weights_bytes": weights_bytes, "weights_over_limit": weights_bytes / limit,
            "sizes": [n, hidden, n], "hidden_threshold": theta1, "target_rate": rate, "export_s": export_s,
            "rows": rows, "load": runs["load"],
            "peak_rss_under_limit": bool(rows.get("ok") and rows["VmHWM"] < limit),
            "outputs_within_1e-5": bool(rows.get("ok") and rows["max_abs_diff_vs_dense_onnx"] <= 1e-5)}
