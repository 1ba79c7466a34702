"""50 learning steps on emulated Raspberry Pi cores with the runtime alone, against the host.

Three parts:

- ``prepare WORK`` (host, torch): the learnable export of a fresh 784-64-784 network
  (zor.export.learnable), 50 batches of 16 rows (x = target, values in [0, 1]), and the
  host's reference: the same 50 steps through :class:`zor.runtime.Learner`; the same for a
  784-128-10 classifier (target: the batch's first 10 columns), whose W_0 (100,352 elements)
  is updated in row blocks and held transposed, its co-activity formed on the hidden units
  that spiked (zor.export.learnable_masked; 84 % of them at the first batch, 18 % at the
  last, median 23 %), its 50 steps alternating five by five between the file's two step
  graphs (the masked one and the every-unit one, zor.runtime.learner_forms): its tensors are
  compared as ``sparse.NAME``;
- ``run WORK OUT`` (any machine, runtime only: refuses to run where torch or onnx got
  imported): the 50 steps, then every state tensor and the last output compared with
  the host's, ‖a − b‖₂ / ‖b‖₂ ≤ 1e-4 (output, weights, θ, r) and ≤ 1e-3 (Adam moments),
  the same bound as the export's check against the engine; a JSON report;
- ``emulate WORK`` (host, root): for each core (cortex-a53 / a72 / a76), ``run`` under
  qemu-user in the arm64 root that benchmarks/arm/emulate.sh builds and caches, with the
  emulated CPU's own /proc/cpuinfo (kernel_cpuinfo.py) and CPU list bound over the root's
  in a private mount namespace (as emulate.sh does: onnxruntime's cpuinfo crashes on the
  host's x86 text); the project's runtime sources are copied into WORK/pkg, WORK is bound at the root's /tmp, and put first
  on PYTHONPATH. Exit 77 when the root, qemu or root rights are missing.

Usage:
    python -m benchmarks.arm.learn_check prepare WORK
    python -m benchmarks.arm.learn_check emulate WORK [--cores "cortex-a53 cortex-a72 cortex-a76"]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

STEPS, BATCH, SEED = 50, 16, 0
CORES = ("cortex-a53", "cortex-a72", "cortex-a76")
TOL, MOMENT_TOL = 1e-4, 1e-3
CANNOT = 77
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1] if len(HERE.parents) > 1 else HERE     # (inside the root the script lies in /tmp)


SPARSE = [784, 128, 10]   # the second network: row blocks and the masked co-activity (W_0 > 65,536 elements)


def _steps(work: Path, seconds: Optional[dict] = None) -> dict:
    """The 50 steps of both files; the second file's tensors named ``sparse.NAME``; ``seconds``: file → the
    wall seconds of its load and steps."""
    from zor.runtime import Learner
    xs = np.load(work / "batches.npy")
    got = {}
    for file, prefix in (("learn.onnx", ""), ("sparse.onnx", "sparse.")):
        t = time.perf_counter()
        lr = Learner(work / file, threads=1)
        width = lr.sizes[-1]
        for k, x in enumerate(xs):
            if prefix and lr._forms.twin is not None:   # both step graphs of the masked file, 5 steps each in turn
                lr._forms.form = lr._forms.twin if (k // 5) % 2 else 0
            lr.step(x, x[:, :width])
        got.update({prefix + k: v for k, v in dict(lr.state, output=lr.predict(xs[-1])).items()})
        if seconds is not None:
            seconds[file] = round(time.perf_counter() - t, 2)
    return got


def prepare(work: Path) -> None:
    from zor.export import export_learnable

    from zor import Layer, Zor
    work.mkdir(parents=True, exist_ok=True)
    export_learnable(Zor([Layer(784), Layer(64), Layer(784)], seed=SEED), work / "learn.onnx", batches=20)
    export_learnable(Zor([Layer(n) for n in SPARSE], seed=SEED), work / "sparse.onnx", batches=20)
    np.save(work / "batches.npy", np.random.default_rng(SEED).random((STEPS, BATCH, 784), dtype=np.float32))
    np.savez(work / "host.npz", **_steps(work))


def run(work: Path, out: Path) -> int:
    seconds: dict = {}
    got = _steps(work, seconds)
    leaked = [m for m in ("torch", "onnx") if m in sys.modules]
    with np.load(work / "host.npz", allow_pickle=False) as z:
        want = {k: z[k] for k in z.files}
    rows, failures = {}, []
    for name, ref in want.items():
        a, b = got[name].astype(np.float64), ref.astype(np.float64)
        fin = np.isfinite(b)
        with np.errstate(invalid="ignore"):
            rel = float(np.linalg.norm(np.where(fin, a - b, 0.0))
                        / max(np.linalg.norm(np.where(fin, b, 0.0)), 1e-12))
        bound = MOMENT_TOL if name.split(".")[-1].startswith("adam_") else TOL
        rows[name] = rel
        if not rel <= bound or not np.array_equal(np.isfinite(a), fin):
            failures.append(f"{name}: relative difference {rel:.3g} > {bound:g}")
    if leaked:
        failures.append(f"imported {leaked}: expected the runtime alone")
    import platform
    report = {"machine": platform.machine(), "steps": STEPS, "relative": rows, "failures": failures,
              "passed": not failures, "seconds": seconds}
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps({"machine": report["machine"], "passed": report["passed"], "failures": failures,
                      "seconds": seconds}))
    return 0 if report["passed"] else 1


def _root() -> Path:
    cache = Path(os.environ.get("ZOR_ARM_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                 / "zor-arm")
    roots = sorted((cache / "roots").glob("*/usr/bin/python3"), key=lambda p: p.stat().st_mtime)
    if not roots:
        print(f"learn_check: no arm64 root under {cache / 'roots'}: run benchmarks/arm/emulate.sh once "
              "(it builds and caches it)", file=sys.stderr)
        raise SystemExit(CANNOT)
    return roots[-1].parents[2]


def _package(work: Path) -> None:
    """The runtime's sources as an installed wheel lays them out: zor/, zor/runtime, zor/devices."""
    pkg = work / "pkg" / "zor"
    shutil.rmtree(work / "pkg", ignore_errors=True)
    shutil.copytree(REPO / "zor", pkg, ignore=shutil.ignore_patterns("__pycache__", "engine", "tasks", "train*"))
    for sub in ("runtime", "devices"):
        shutil.copytree(REPO / sub, pkg / sub, ignore=shutil.ignore_patterns("__pycache__"))


def core_script(core: str, check: str) -> str:
    """The bash run in a private mount namespace for one core ($1 WORK, $2 the arm64 root): the core's own
    /proc/cpuinfo and CPU list bound over the root's, WORK over its /tmp, then ``check run /tmp /tmp/CORE.json``."""
    env = " ".join(["env", "-i", "PATH=/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8", f"QEMU_CPU={core}",
                    "OMP_NUM_THREADS=1", "PYTHONPATH=/tmp/pkg:/opt/site"])
    return (f'set -e; mount --bind "$1" "$2/tmp"; '
            f'{env} /usr/sbin/chroot "$2" /usr/bin/python3 /tmp/kernel_cpuinfo.py > "$1/cpuinfo-{core}.txt"; '
            f'n=$(grep -c "^processor" "$1/cpuinfo-{core}.txt"); mkdir -p "$1/sys-{core}/devices/system/cpu"; '
            f'for f in possible present online; do echo "0-$((n - 1))" > "$1/sys-{core}/devices/system/cpu/$f"; '
            f'done; mount --bind -o ro "$1/cpuinfo-{core}.txt" "$2/proc/cpuinfo"; '
            f'mount --bind -o ro "$1/sys-{core}" "$2/sys"; '
            f'exec {env} /usr/sbin/chroot "$2" /usr/bin/python3 /tmp/{check} run /tmp /tmp/{core}.json')


def emulate_check(work: Path, cores: list[str], check: Path) -> int:
    """``check run`` (a script of benchmarks/arm/) under qemu-user for each core in the cached arm64 root, with
    the runtime's sources laid out as an installed wheel in WORK. Exit 77 when root rights, qemu or unshare
    are missing; 1 when a core failed."""
    if os.geteuid() != 0 or not shutil.which("qemu-aarch64-static") or not shutil.which("unshare"):
        print(f"{check.stem}: needs root, qemu-aarch64-static and unshare", file=sys.stderr)
        return CANNOT
    root = _root()
    _package(work)
    shutil.copy(HERE / "kernel_cpuinfo.py", work / "kernel_cpuinfo.py")
    shutil.copy(check, work / check.name)
    failed = 0
    for core in cores:
        t = time.perf_counter()
        p = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c",
                            core_script(core, check.name), "_", str(work), str(root)],
                           capture_output=True, text=True, check=False)
        print(f"{core}: exit {p.returncode} in {time.perf_counter() - t:.1f} s {p.stdout.strip()[-400:]} "
              f"{p.stderr.strip()[-400:]}")
        failed |= p.returncode != 0
    return 1 if failed else 0


def emulate(work: Path, cores: list[str]) -> int:
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
