"""The auto-vs-dense sweep of ``python -m benchmarks.nir_fashion`` (issue 24's sparse figure): the NIR
Fashion-MNIST classifier exported ``--path auto`` at lower and lower input rates, against the dense file.

At each intensity scale, auto decides per Affine/Linear node from its input rate r on the calibration
images and the profile's break-even for the node's shape (n_in, n_out):

    sparse  ⇔  r < r*(n_in, n_out) = r_be · (1 − S₀/N − k/n_out) / (1 + φ/n_out)

(:func:`zor.export.paths.effective_break_even`); the figure is met where a node went sparse and the file is
ahead of dense (dense/auto > 1, paired per round), and elsewhere auto is the dense graph. A second session of
the dense file, timed in the same rounds, gives the noise (dense/dense).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.common import format_table, paired_ratio
from benchmarks.nir_fashion import DT, HIDDEN, spikes, stream_spikes

__all__ = ["SCALES", "alternating", "sparse_sweep", "sweep_report"]


def _median_timed(fn: Callable[[np.ndarray], Any], xs: list[np.ndarray]) -> Callable[[], float]:
    """A measurement: the median over the samples ``xs`` of the seconds ``fn`` takes for one (a sample that
    another process interrupted does not move it, as it moves a mean)."""
    def run() -> float:
        times = []
        for sample in xs:
            start = time.perf_counter()
            fn(sample)
            times.append(time.perf_counter() - start)
        return float(np.median(times))
    return run


def alternating(measures: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """:func:`benchmarks.common.interleave` with the order reversed every other round, so that whatever the
    first or second place in a round costs (caches, frequency) falls on every measurement alike."""
    names = list(measures)
    out: dict[str, list[float]] = {k: [] for k in names}
    for k in range(rounds):
        for name in (names if k % 2 == 0 else names[::-1]):
            out[name].append(measures[name]())
    return out


SCALES = (0.03, 0.06, 0.09, 0.15, 0.35, 0.7, 1.0)   # intensity factors: first-node input rates ≈ 0.007 ... 0.24


def sparse_sweep(graph: Path, folder: Path, dense: Any, x: np.ndarray, xc: np.ndarray, steps: int, rounds: int,
                 scales: tuple = SCALES, samples: int = 32) -> list[dict]:
    """--path auto against dense as the input rate varies: pixel intensities × scale (the first Affine's input
    rate about 0.24 × scale); per scale an auto export calibrated on training images at that scale (a node goes
    sparse where its measured input rate is under the profile's break-even for its shape), then the per-sample
    Stream.run time of both files at batch 1 on ``samples`` test images at that scale (the median over the
    samples), in turns (the order reversed every other round), ``rounds`` rounds; dense/auto is the median of
    the per-round ratios. ``met``: where a node went sparse, auto is ahead
    of dense (dense/auto > 1); where none did, auto is the dense graph. The noise: the dense file in a second
    session, timed in the same rounds (dense/dense: 1 but for the machine and the two sessions' memory);
    ``beyond_noise``: a sparse plan's dense/auto above both 1 and dense/dense. A scale whose auto export the
    exporter refuses (e.g. its verification on the calibration events) is a row with ``refused`` (the error)
    and nothing timed."""
    from zor.export import export_nir
    from zor.runtime import Model

    from zor.common.errors import ZorError

    rows: list[dict] = []
    for scale in scales:
        out = folder / f"{graph.stem}-auto-x{scale:g}.onnx"
        try:
            res = export_nir(graph, out, dt=DT, steps=steps, path="auto", device="auto",
                             calibration=spikes(np.clip(xc[:200] * scale, 0, 1), steps, 7))
        except ZorError as exc:
            rows.append({"scale": scale, "plan": "export refused", "refused": f"{type(exc).__name__}: {exc}"})
            continue
        auto, twin = Model(out, threads=1), Model(dense.path, threads=1)
        xs = [spikes(np.clip(x[i:i + 1] * scale, 0, 1), steps, 1000 + i) for i in range(samples)]
        sd, sa, st = dense.stream(), auto.stream(), twin.stream()
        times = alternating({"dense": _median_timed(lambda s: stream_spikes(sd, s), xs),
                             "auto": _median_timed(lambda s: stream_spikes(sa, s), xs),
                             "dense again": _median_timed(lambda s: stream_spikes(st, s), xs)}, rounds)
        conns = res.paths.get("connections", [])
        ratio, noise = paired_ratio(times["dense"], times["auto"]), paired_ratio(times["dense"], times["dense again"])
        sparse = any(c["path"] == "sparse" for c in conns)
        rows.append({"scale": scale, "input_rate": float(np.mean([v.mean() for v in xs])),
                     "calibration_rate": conns[0].get("spike_rate") if conns else None,
                     "plan": " ".join(f"{c['node']}:{c['path']}" for c in conns),
                     "break_even": conns[0].get("break_even") if conns else None,
                     "break_even_out": conns[-1].get("break_even") if len(conns) > 1 else None,
                     "dense_ms": 1e3 * float(np.median(times["dense"])), "auto_ms": 1e3 * float(np.median(times["auto"])),
                     "dense_over_auto": ratio, "dense_over_dense": noise,
                     "auto_ahead_rounds": float(np.mean(np.asarray(times["dense"]) > np.asarray(times["auto"]))),
                     "met": bool(ratio > 1.0) if sparse else True,
                     "beyond_noise": bool(ratio > max(1.0, noise)) if sparse else None})
    return rows


def sweep_report(sweep: list[dict], hidden: int = HIDDEN) -> dict[str, Any]:
    """Print the auto-vs-dense sweep with the profile's break-even for each node's shape (784×``hidden``,
    ``hidden``×10); its JSON part."""
    from zor.devices import detect
    from zor.export.paths import effective_break_even

    profile = detect().profile
    be, be_out = effective_break_even(profile, (784, hidden)), effective_break_even(profile, (hidden, 10))
    print(f"--path auto against dense at batch 1 (profile {profile.name}: break-even {be:.3f} for the 784x{hidden} "
          f"node, {be_out:.3f} for the {hidden}x10 node, by their shapes)")
    print(format_table(sweep, ["scale", "input_rate", "calibration_rate", "plan", "break_even", "dense_ms", "auto_ms",
                               "dense_over_auto", "dense_over_dense", "auto_ahead_rounds", "met"],
                       digits={"input_rate": 3, "calibration_rate": 3, "break_even": 3, "dense_ms": 3, "auto_ms": 3,
                               "dense_over_auto": 3, "dense_over_dense": 3}))
    for r in sweep:
        if "refused" in r:
            print(f"scale {r['scale']:g}: not measured: {r['refused']}")
    timed = [r for r in sweep if "refused" not in r]
    met = all(r["met"] for r in timed) if timed else None
    clear = all(r["beyond_noise"] for r in timed if r["beyond_noise"] is not None) if timed else None
    print(f"sparse ahead of dense where the rate is under the break-even, auto dense above it: {met}; "
          f"sparse's lead larger than dense/dense (two sessions of the dense file): {clear}")
    return {"sparse_sweep": sweep, "sparse_figure_met": met, "sweep_scales_refused": len(sweep) - len(timed), "sparse_lead_beyond_noise": clear,
            "profile": {"name": profile.name, f"break_even_784x{hidden}": be, f"break_even_{hidden}x10": be_out}}
