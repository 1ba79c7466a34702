"""Runtime benchmark: the issue's figures for the torch-free runtime, measured in one run.

    .venv/bin/python benchmarks/runtime_bench.py [--json PATH] [--threads 1] [--repeats 5] [--calls 200]

What it does:

1. trains the seed's few-shot autoencoder (784-128-784, sigmoid output, 10 bundled
   Fashion-MNIST images, 200 steps), saves the checkpoint and exports it with
   ``zor.export`` as float32 and as int8 (the detected profile's recipe);
2. ``import zor.runtime`` time: in-process time of the import, in fresh
   interpreters (median of 7), and a check that neither torch nor onnx was loaded;
3. ``zor.runtime.bench.run_bench`` on both files with the checkpoint as the torch
   reference, on 500 bundled test images: p50/p95 latency at batch 1 and 64,
   throughput, peak RSS (fresh subprocess per model), size, spike rates, synaptic
   ops, ratios to torch (medians of ``--repeats`` interleaved repeats);
4. the installed size of the runtime: every file installed for the base
   dependencies (numpy, onnxruntime and what it pulls in, click) from their
   installed RECORDs, plus the zor-edge package's own files;
5. every profile's int8 verdict next to this machine's measured one;

then prints a table of targets against figures and, with ``--json``, writes them.
Speed figures are ratios measured in the same run; absolute times are this shared
machine's and mean little elsewhere.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def train_and_export(folder: Path) -> tuple[Path, Path, Path, np.ndarray]:
    from zor.export import export

    from zor.engine.presets import seed_autoencoder
    from zor.tasks.datasets import few_shot, load_bundled

    x, y = load_bundled("train")
    test, _ = load_bundled("test")
    net = seed_autoencoder(
        seed=0, device="cpu",
        task={"name": "reconstruct",
              "input": {"shape": [784], "range": [0.0, 1.0], "image": {"height": 28, "width": 28, "channels": 1}},
              "output": {"shape": [784], "range": [0.0, 1.0]}})
    net.fit(x[few_shot(y, 1)], steps=200, batch_size=10, progress=False)
    ckpt = folder / "fewshot.zor"
    net.save(ckpt)
    f32, q8 = folder / "fewshot.onnx", folder / "fewshot-int8.onnx"
    export(ckpt, f32, threads=1)
    export(ckpt, q8, quantize="int8", calibration=x, device="auto", threads=1)
    return ckpt, f32, q8, test


def import_time(runs: int = 7) -> dict:
    code = ("import sys, time; t = time.perf_counter(); import zor.runtime; dt = time.perf_counter() - t; "
            "print(dt, int('torch' in sys.modules), int('onnx' in sys.modules))")
    times, heavy = [], set()
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
        times.append(float(out[0]))
        if out[1] == "1":
            heavy.add("torch")
        if out[2] == "1":
            heavy.add("onnx")
    return {"median_s": statistics.median(times), "runs_s": times, "loaded_heavy": sorted(heavy)}


def _dist_bytes(name: str) -> int:
    total = 0
    for f in md.distribution(name).files or []:
        p = Path(f.locate())
        if p.is_file():
            total += p.stat().st_size
    return total


def _base_requirements(name: str, seen: set) -> None:
    if name.lower() in seen:
        return
    seen.add(name.lower())
    for req in md.requires(name) or []:
        if "extra ==" in req:
            continue
        dep = req.split(";")[0].strip()
        for sep in "<>=!~[ (":
            dep = dep.split(sep)[0]
        try:
            md.distribution(dep)
        except md.PackageNotFoundError:
            continue
        _base_requirements(dep, seen)


def installed_size() -> dict:
    deps: set = set()
    _base_requirements("zor-edge", deps)
    deps.discard("zor-edge")
    per = {d: _dist_bytes(d) for d in sorted(deps)}
    own = {}
    for folder in ("zor", "runtime", "devices", "export"):
        own[folder] = sum(p.stat().st_size for p in (ROOT / folder).rglob("*")
                          if p.is_file() and "__pycache__" not in p.parts)
    runtime_only = own["runtime"] + own["devices"] + sum(
        (ROOT / "zor" / f).stat().st_size for f in ("__init__.py", "errors.py", "format.py", "fileio.py", "metrics.py",
                                                     "datasets.py"))
    return {
        "dependencies_bytes": per,
        "zor_edge_package_bytes": own,
        "runtime_modules_bytes": runtime_only,
        "total_base_install_bytes": sum(per.values()) + sum(own.values()),
        "total_runtime_bytes": sum(per.values()) + runtime_only,
        "note": "installed files per RECORD (including .pyc where installed); zor-edge counted from its sources",
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args(argv)

    from zor.devices import PROFILES, detect
    from zor.runtime.bench import format_table, run_bench

    from zor.common.fileio import write_text_atomic

    with tempfile.TemporaryDirectory() as tmp:
        ckpt, f32, q8, test = train_and_export(Path(tmp))
        imp = import_time()
        report = run_bench([str(f32), str(q8)], device="auto", batch=args.batch, calls=args.calls,
                           repeats=args.repeats, threads=args.threads, checkpoint=str(ckpt), inputs=test,
                           progress=lambda s: print(s, file=sys.stderr))
        report["inputs"] = f"{len(test)} bundled Fashion-MNIST test images"
    size = installed_size()
    det = detect()
    b = args.batch
    f, q = report["models"]["float32"], report["models"]["int8"]
    speed_b = report["int8"][f"speedup_b{b}"]
    vnni = "avx512_vnni" in det.cpu.isa or "avx_vnni" in det.cpu.isa
    targets = [
        ("import zor.runtime (median of 7)", f"{imp['median_s']:.3f} s", "< 0.5 s", imp["median_s"] < 0.5),
        ("import loads torch/onnx", ", ".join(imp["loaded_heavy"]) or "neither", "neither", not imp["loaded_heavy"]),
        ("peak RSS, few-shot float32 run", f"{f['peak_rss_mb']:.1f} MB", "< 80 MB", f["peak_rss_mb"] < 80),
        ("peak RSS, few-shot int8 run", f"{q['peak_rss_mb']:.1f} MB", "< 80 MB", q["peak_rss_mb"] < 80),
        ("float32 b1 latency / torch", f"{f['vs_torch_b1']:.2f}x", "<= 0.7x", f["vs_torch_b1"] <= 0.7),
        (f"int8 speed-up over float32 at b{b}", f"{speed_b:.2f}x",
         ">= 1.8x on AVX-512 VNNI" + ("" if vnni else " (this CPU has no VNNI)"), speed_b >= 1.8 if vnni else None),
        ("installed runtime (deps + runtime modules)", f"{size['total_runtime_bytes'] / 2**20:.1f} MiB", "reported",
         None),
    ]
    lines = [format_table(report), "",
             f"machine: {platform.processor() or platform.machine()}, detected profile {det.profile.name}: {det.reason}",
             "", "target                                      figure       target                             met"]
    for name, fig, want, ok in targets:
        lines.append(f"{name:43} {fig:12} {want:34} {'-' if ok is None else ('yes' if ok else 'NO')}")
    lines += ["", "installed size by distribution (MiB): " + ", ".join(
        f"{k} {v / 2**20:.1f}" for k, v in size["dependencies_bytes"].items())
        + f"; zor-edge sources {sum(size['zor_edge_package_bytes'].values()) / 2**20:.2f} "
          f"(runtime+devices+torch-free zor leaves {size['runtime_modules_bytes'] / 2**20:.2f})",
        "", "int8 verdict per profile (int8_pays; evidence):"]
    for p in PROFILES.values():
        lines.append(f"  {p.name:20} {str(p.int8_pays):5} {p.int8_evidence}")
    lines.append(f"  measured here ({det.profile.name}): {report['int8']['verdict']}")
    print("\n".join(lines))
    if args.json:
        doc = {"bench": report, "import": imp, "installed_size": size, "detected": det.to_dict(),
               "targets": [{"name": n, "figure": fi, "target": w, "met": ok} for n, fi, w, ok in targets],
               "profiles_int8": {p.name: {"int8_pays": p.int8_pays, "evidence": p.int8_evidence}
                                 for p in PROFILES.values()}}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.json, json.dumps(doc, indent=2))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
