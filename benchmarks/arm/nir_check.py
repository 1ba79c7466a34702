"""Imported NIR models streamed on emulated Raspberry Pi cores with the runtime alone, against the host.

Three parts, as benchmarks/arm/learn_check.py:

- ``prepare WORK`` (host, torch and nir): each model of MODELS, a framework's own NIR file from
  tests/fixtures/nir/, imported with ``zor.export.export_nir`` at its dt (verified there against the reference
  simulation), its fixture's rate-coded Fashion-MNIST events (T = 100 steps × 16 rows) saved beside it, and
  the host's reference: ``Model(path).stream()`` over the T steps from the fresh state, every node's spikes
  ``spikes_{k}`` and every state tensor (``state_in_{k}_{v|i}``, ``state_in_edge_{j}``) after each step;
- ``run WORK OUT`` (any machine, runtime only: refuses to run where torch or onnx got imported): the same
  streams, compared step by step with the host's: spikes equal (every node, every step), each state element
  within the export's own tolerance |a − b| ≤ 1e-5 + 1e-5·|b| (docs/nir.md, "What is verified"); a JSON report;
- ``emulate WORK`` (host, root): ``run`` under qemu-user for each core (cortex-a53 / a72 / a76) in the arm64
  root that benchmarks/arm/emulate.sh builds and caches, as learn_check.emulate does (the core's own
  /proc/cpuinfo and CPU list bound in a private mount namespace, WORK at the root's /tmp, the runtime's
  sources first on PYTHONPATH). Exit 77 when the root, qemu or root rights are missing.

The streams run free from the fresh state (what a device does): the host's state is never fed back, so a
spike that differs would carry on into the later steps and show.

Usage:
    python -m benchmarks.arm.nir_check prepare WORK
    python -m benchmarks.arm.nir_check run WORK OUT.json
    python -m benchmarks.arm.nir_check emulate WORK [--cores "cortex-a53 cortex-a72 cortex-a76"]
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

MODELS = {"rsyn_cuba": 1e-4, "conv_lif": 1e-4}   # fixture → import dt (docs/nir-frameworks.md): recurrent CuBa-LIF, conv LIF
STEPS = 100
ABS_TOL = REL_TOL = 1e-5                          # the export's own check (zor.export.nir.verify)
CORES = ("cortex-a53", "cortex-a72", "cortex-a76")
CANNOT = 77
HERE = Path(__file__).resolve().parent


def _stream(work: Path, name: str) -> dict[str, np.ndarray]:
    """The stream of model ``name`` over its events: spikes_{k} and every state, (T, B, n) each."""
    from zor.runtime import Model

    m = Model(work / f"{name}.onnx", threads=1)
    xs = np.load(work / f"{name}-events.npy", allow_pickle=False).astype(np.float32)   # (T, B, *input_shape)
    stream, rec = m.stream(), {}
    for x in xs:
        out = stream.step(x, spikes=True)
        for key, value in [(k, v) for k, v in out.items() if k.startswith("spikes_")] + list(stream.state.items()):
            rec.setdefault(key, []).append(np.asarray(value))
    return {k: np.stack(v) for k, v in rec.items()}


def prepare(work: Path) -> None:
    from zor.export import export_nir

    fixtures = HERE.parents[1] / "tests" / "fixtures" / "nir"
    work.mkdir(parents=True, exist_ok=True)
    for name, dt in MODELS.items():
        with np.load(fixtures / f"{name}.npz", allow_pickle=False) as z:
            np.save(work / f"{name}-events.npy", z["inputs"][:STEPS])
        export_nir(fixtures / f"{name}.nir", work / f"{name}.onnx", dt=dt, steps=STEPS)
        np.savez(work / f"{name}-host.npz", **_stream(work, name))


def _compare(got: dict[str, np.ndarray], want: dict[str, np.ndarray], name: str) -> tuple[dict, list[str]]:
    rows, failures = {}, []
    if set(got) != set(want):
        failures.append(f"{name}: tensors {sorted(got)}: expected {sorted(want)}")
    for key in sorted(set(got) & set(want)):
        a, b = got[key], want[key]
        if a.shape != b.shape:
            failures.append(f"{name} {key}: shape {a.shape}, expected {b.shape}")
        elif key.startswith("spikes_"):
            flips = int((a != b).sum())
            rows[key] = {"differing": flips, "first_step": int(np.argmax((a != b).reshape(len(a), -1).any(1)))
                         if flips else None}
            if flips:
                failures.append(f"{name} {key}: {flips} spike(s) differ from the host, first at step "
                                f"{rows[key]['first_step']}")
        else:
            diff = np.abs(a.astype(np.float64) - b)
            excess = float(np.max(diff - (ABS_TOL + REL_TOL * np.abs(b))))
            rows[key] = {"max_abs_diff": float(diff.max()), "excess": excess}
            if not excess <= 0:
                failures.append(f"{name} {key}: max |Δ| {diff.max():.3g} beyond 1e-5 + 1e-5·|host|")
    return rows, failures


def run(work: Path, out: Path) -> int:
    start = time.perf_counter()
    models, failures = {}, []
    for name in MODELS:
        got = _stream(work, name)
        with np.load(work / f"{name}-host.npz", allow_pickle=False) as z:
            want = {k: z[k] for k in z.files}
        rows, bad = _compare(got, want, name)
        models[name] = {"steps": int(len(next(iter(want.values())))), "tensors": rows}
        failures += bad
    leaked = [m for m in ("torch", "onnx") if m in sys.modules]
    if leaked:
        failures.append(f"imported {leaked}: expected the runtime alone")
    report = {"machine": platform.machine(), "models": models, "failures": failures, "passed": not failures,
              "seconds": time.perf_counter() - start}
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps({"machine": report["machine"], "passed": report["passed"], "failures": failures[:5],
                      "seconds": round(report["seconds"], 1)}))
    return 0 if report["passed"] else 1


def emulate(work: Path, cores: list[str]) -> int:
    # the cached arm64 root, the runtime's sources as an installed wheel, and this script, per core
    from benchmarks.arm.learn_check import emulate_check

    return emulate_check(work, cores, Path(__file__))


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "prepare":
        prepare(Path(argv[1]))
        return 0
    if len(argv) >= 3 and argv[0] == "run":
        return run(Path(argv[1]), Path(argv[2]))
    if len(argv) >= 2 and argv[0] == "emulate":
        cores = argv[3].split() if len(argv) >= 4 and argv[2] == "--cores" else list(CORES)
        return emulate(Path(argv[1]), cores)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
