"""Runtime benchmark: the torch-free runtime beside the torch engine, measured in one run.

    python -m benchmarks.runtime_bench [--json PATH] [--threads 1] [--repeats 5] [--calls 200]
    python -m benchmarks.runtime_bench MODEL... --checkpoint CKPT [--input X.npy] [--json PATH]
    python -m benchmarks.runtime_bench --checkpoint CKPT --paths dense,sparse,auto
                                       [--calibration X.npy] [--max-batch 1] [MODEL...]

``zor-bench`` benches model files only (:mod:`zor.runtime.bench`, torch-free). This
benchmark adds what needs the engine and the exporter:

- ``--checkpoint``: the torch engine's ``Zor.run`` on the checkpoint as a reference,
  timed in the same interleaved loop as the files (``run_bench(references=...)``), and
  each file's latency as a ratio of it, with the largest output difference;
- ``--paths``: the checkpoint exported once per path (dense, sparse, auto) into a
  temporary folder, the files benched side by side.

Without MODEL or ``--checkpoint`` it measures the runtime's own targets:

1. trains the seed's few-shot autoencoder (784-128-784, sigmoid output, 10 bundled
   Fashion-MNIST images, 200 steps), saves the checkpoint and exports it with
   ``zor.export`` as float32 and as int8 (the detected profile's recipe);
2. ``import zor.runtime`` time: in-process time of the import, in fresh
   interpreters (median of 7), and a check that neither torch nor onnx was loaded;
3. ``run_bench`` on both files with the torch engine as the reference, on 500 bundled
   test images: p50/p95 latency at batch 1 and 64, throughput, peak RSS (fresh
   subprocess per model), size, spike rates, synaptic ops, ratios to torch (medians of
   ``--repeats`` interleaved repeats);
4. the installed size of the runtime: every file installed for the base
   dependencies (numpy, onnxruntime and what it pulls in, click) from their
   installed RECORDs, plus the zor-edge package's own files;
5. every profile's int8 verdict next to this machine's measured one;

then prints a table of targets against figures and, with ``--json``, writes them.
Speed figures are ratios measured in the same run; absolute times are this shared
machine's and mean little elsewhere.
Where the int8 call's microseconds go, node by node, and what each int8 product form
costs at batch 1 and 64: ``benchmarks/int8_profile.py`` (docs/notes/int8-vnni.md).
"""

from __future__ import annotations

import importlib.metadata as md
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import click
import numpy as np
import torch
from zor.devices import PROFILES, detect
from zor.export import export
from zor.runtime import Model
from zor.runtime.bench import format_table, run_bench
from zor.runtime.cli import load_input

from benchmarks import common
from benchmarks.arm.report import record_size
from zor.common import format as fmt
from zor.engine.checkpoint import load
from zor.engine.presets import seed_autoencoder
from zor.tasks.datasets import few_shot, load_bundled

__all__ = ["torch_reference", "export_paths", "bench_files", "train_and_export", "import_time", "installed_size",
           "main"]

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- the engine and the exporter
def torch_reference(checkpoint: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """A function running the torch engine on ``checkpoint`` (float32 rows in, output rows out)."""
    torch.set_num_threads(max(1, threads))
    net = load(checkpoint, device="cpu")

    def run(x: np.ndarray) -> np.ndarray:
        out, _ = net.run(torch.from_numpy(x))
        return out.numpy()

    return run


def export_paths(checkpoint: str, folder: str, paths: Sequence[str] = ("dense", "sparse", "auto"),
                 device: str = "auto", calibration: Optional[str] = None, max_batch: int = 1,
                 quantize: str = "none") -> list[str]:
    """Export ``checkpoint`` once per path into ``folder``; the files' paths."""
    files = []
    for path in paths:
        out = Path(folder) / f"{Path(checkpoint).stem}-{quantize if quantize != 'none' else 'float32'}-{path}.onnx"
        export(checkpoint, out, device=device, quantize=quantize, calibration=calibration, path=path,
               max_batch=max_batch)
        files.append(str(out))
    return files


def bench_files(files: Sequence[str], checkpoint: Optional[str] = None, **options: Any) -> dict[str, Any]:
    """:func:`zor.runtime.bench.run_bench` on ``files``, with the torch engine on ``checkpoint`` as the
    reference "torch" when one is given (threads: ``options["threads"]``, else the profile's)."""
    refs = {}
    if checkpoint is not None:
        threads = options.get("threads") or Model(files[0], device=options.get("device", "auto")).profile.intra_op_threads
        refs["torch"] = torch_reference(checkpoint, threads or 1)
    return run_bench(files, references=refs, **options)


# --------------------------------------------------------------------------- the runtime's own targets
def train_and_export(folder: Path) -> tuple[Path, Path, Path, np.ndarray]:
    """The seed's few-shot autoencoder trained, saved and exported as float32 and int8; the bundled test images."""
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


def import_time(runs: int = 7) -> dict[str, Any]:
    """Seconds ``import zor.runtime`` takes in fresh interpreters, and whether it loaded torch or onnx."""
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
    """Bytes of the files the installed distribution's RECORD lists (``record_size``; 0 without a RECORD)."""
    record = next((f for f in md.distribution(name).files or ()
                   if f.name == "RECORD" and f.parent.name.endswith(".dist-info")), None)
    return record_size(Path(record.locate()).parent)["bytes"] if record is not None else 0


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


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def installed_size() -> dict[str, Any]:
    """Bytes installed for the base dependencies (per RECORD) and of the zor-edge sources; the runtime's share."""
    deps: set = set()
    _base_requirements("zor-edge", deps)
    deps.discard("zor-edge")
    per = {d: _dist_bytes(d) for d in sorted(deps)}
    own = {folder: _folder_bytes(ROOT / folder) for folder in ("zor", "runtime", "devices", "export")}
    runtime_only = (own["runtime"] + own["devices"] + _folder_bytes(ROOT / "zor" / "common")
                    + (ROOT / "zor" / "__init__.py").stat().st_size)
    return {
        "dependencies_bytes": per,
        "zor_edge_package_bytes": own,
        "runtime_modules_bytes": runtime_only,
        "total_base_install_bytes": sum(per.values()) + sum(own.values()),
        "total_runtime_bytes": sum(per.values()) + runtime_only,
        "note": "installed files per RECORD (including .pyc where installed); zor-edge counted from its sources "
                "(the runtime: runtime/, devices/, zor/common/ and zor/__init__.py)",
    }


def lean_call(files: Sequence[str], x: np.ndarray, calls: int, repeats: int, threads: int) -> dict[str, Any]:
    """What ``Model.run(x)`` adds to onnxruntime fetching ``output`` alone, per file (µs per call, medians):

    - ``bare``: a bare session opened on the same file; rounds of ``calls`` calls of each by turns, the median
      of each and of the per-round differences (Model − bare);
    - ``own``: the Model's own session called directly; the two called by turns one call at a time (which
      goes first alternates), the median of the per-pair differences. Same session, same weights in cache:
      only the runtime's own work differs, and a busy machine disturbs single pairs far less than rounds.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    x = np.ascontiguousarray(x, dtype=np.float32)
    clock, feeds, out = time.perf_counter, {fmt.INPUT: x}, {}
    for f in files:
        model, bare = Model(f, threads=threads), ort.InferenceSession(f, opts, providers=["CPUExecutionProvider"])
        own = model._session
        calls3 = {"model": lambda: model.run(x), "bare": lambda: bare.run([fmt.OUTPUT], feeds),
                  "own": lambda: own.run([fmt.OUTPUT], feeds)}
        rounds: dict[str, list[float]] = {k: [] for k in calls3}
        pairs: tuple[list[float], list[float]] = ([], [])
        for r in range(repeats):
            for kind in ("model", "bare"):
                for _ in range(10):
                    calls3[kind]()
                start = clock()
                for _ in range(calls):
                    calls3[kind]()
                rounds[kind].append((clock() - start) / calls * 1e6)
            for k in range(calls):
                for which in ((0, 1) if k % 2 == 0 else (1, 0)):
                    start = clock()
                    calls3[("model", "own")[which]]()
                    pairs[which].append((clock() - start) * 1e6)
        out[Path(f).name] = {
            "batch": len(x), "model_us": statistics.median(rounds["model"]), "bare_us": statistics.median(rounds["bare"]),
            "difference_us": statistics.median(m - b for m, b in zip(rounds["model"], rounds["bare"])),
            "own_pairs": len(pairs[0]), "own_model_us": statistics.median(pairs[0]),
            "own_us": statistics.median(pairs[1]), "own_difference_us": statistics.median(m - b for m, b in zip(*pairs))}
    return out


def targets(report: dict[str, Any], imp: dict[str, Any], size: dict[str, Any], vnni: bool) -> list[dict[str, Any]]:
    """The runtime's targets, each with its figure and whether it is met (None: reported only)."""
    b = report["batch"]
    f, q = report["models"]["float32"], report["models"]["int8"]
    speed_b = report["int8"][f"speedup_b{b}"]
    rows = [
        ("import zor.runtime (median of 7)", f"{imp['median_s']:.3f} s", "< 0.5 s", imp["median_s"] < 0.5),
        ("import loads torch/onnx", ", ".join(imp["loaded_heavy"]) or "neither", "neither", not imp["loaded_heavy"]),
        ("peak RSS, few-shot float32 run", f"{f['peak_rss_mb']:.1f} MB", "< 80 MB", f["peak_rss_mb"] < 80),
        ("peak RSS, few-shot int8 run", f"{q['peak_rss_mb']:.1f} MB", "< 80 MB", q["peak_rss_mb"] < 80),
        ("float32 b1 latency / torch", f"{f['vs_torch_b1']:.2f}x", "<= 0.7x", f["vs_torch_b1"] <= 0.7),
        (f"int8 speed-up over float32 at b{b}", f"{speed_b:.2f}x",
         ">= 1.8x on AVX-512 VNNI" + ("" if vnni else " (this CPU has no VNNI)"), speed_b >= 1.8 if vnni else None),
        ("int8 speed-up over float32 at b1", f"{report['int8'].get('speedup_b1', float('nan')):.2f}x",
         ">= 1.3x on AVX-512 VNNI" + ("" if vnni else " (this CPU has no VNNI)"),
         report["int8"].get("speedup_b1", 0) >= 1.3 if vnni else None),
        *[(f"Model.run - its own session, b1, {name} (pairs)", f"{lean['own_difference_us']:+.1f} us", "<= 5 us",
           lean["own_difference_us"] <= 5) for name, lean in report.get("lean_call", {}).items()],
        *[(f"Model.run - bare session, b1, {name} (rounds)", f"{lean['difference_us']:+.1f} us", "reported",
           None) for name, lean in report.get("lean_call", {}).items()],
        ("installed runtime (deps + runtime modules)", f"{size['total_runtime_bytes'] / 2**20:.1f} MiB", "reported",
         None),
    ]
    return [{"name": n, "figure": fi, "target": w, "met": ok} for n, fi, w, ok in rows]


def _targets_text(report: dict[str, Any], rows: list[dict[str, Any]], size: dict[str, Any], det: Any) -> str:
    shown = [{**r, "met": "-" if r["met"] is None else ("yes" if r["met"] else "NO")} for r in rows]
    lines = [format_table(report), "",
             f"machine: {platform.processor() or platform.machine()}, detected profile {det.profile.name}: {det.reason}",
             "", common.format_table(shown, ["name", "figure", "target", "met"], ["target", "figure", "wanted", "met"]),
             "", "installed size by distribution (MiB): " + ", ".join(
                 f"{k} {v / 2**20:.1f}" for k, v in size["dependencies_bytes"].items())
             + f"; zor-edge sources {sum(size['zor_edge_package_bytes'].values()) / 2**20:.2f} "
               f"(runtime+devices+torch-free zor leaves {size['runtime_modules_bytes'] / 2**20:.2f})",
             "", "int8 verdict per profile (int8_pays; evidence):"]
    lines += [f"  {p.name:20} {str(p.int8_pays):5} {p.int8_evidence}" for p in PROFILES.values()]
    lines.append(f"  measured here ({det.profile.name}): {report['int8']['verdict']}")
    return "\n".join(lines)


def runtime_targets(batch: int, calls: int, repeats: int, threads: int) -> tuple[str, dict[str, Any]]:
    """Steps 1-5 of the module docstring: (the text to print, the JSON document)."""
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, f32, q8, test = train_and_export(Path(tmp))
        imp = import_time()
        report = bench_files([str(f32), str(q8)], checkpoint=str(ckpt), device="auto", batch=batch, calls=calls,
                             repeats=repeats, threads=threads, inputs=test,
                             progress=lambda s: click.echo(s, err=True))
        report["inputs"] = f"{len(test)} bundled Fashion-MNIST test images"
        report["lean_call"] = lean_call([str(f32), str(q8)], test[:1], calls, repeats, threads)
    size = installed_size()
    det = detect()
    rows = targets(report, imp, size, "avx512_vnni" in det.cpu.isa or "avx_vnni" in det.cpu.isa)
    doc = {"bench": report, "import": imp, "installed_size": size, "detected": det.to_dict(), "targets": rows,
           "profiles_int8": {p.name: {"int8_pays": p.int8_pays, "evidence": p.int8_evidence}
                             for p in PROFILES.values()}}
    return _targets_text(report, rows, size, det), doc


# --------------------------------------------------------------------------- command line
def _wanted_paths(paths: Optional[str], checkpoint: Optional[str]) -> list[str]:
    """The --paths list, checked (usage errors name what was expected)."""
    wanted = [p.strip() for p in paths.split(",") if p.strip()] if paths else []
    bad = [p for p in wanted if p not in fmt.PATHS]
    if bad:
        raise click.UsageError(f"--paths: expected a comma-separated subset of {', '.join(fmt.PATHS)}, got {bad}")
    if paths is not None and not wanted:
        raise click.UsageError("--paths: expected at least one of dense, sparse, auto")
    if wanted and checkpoint is None:
        raise click.UsageError("--paths exports a checkpoint: pass --checkpoint CKPT")
    return wanted


@common.command
@click.argument("models", metavar="[MODEL]...", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Zor checkpoint of the same model: the torch engine as the reference.")
@click.option("--paths", "paths", default=None,
              help="Comma-separated paths (dense,sparse,auto): export --checkpoint once per path and bench the files.")
@click.option("--calibration", type=click.Path(exists=True, dir_okay=False), default=None,
              help="With --paths: the .npy rows the exporter measures spike rates on (for auto).")
@click.option("--max-batch", type=click.IntRange(min=1), default=1, help="With --paths: the sparse exports' batch limit.")
@click.option("--input", "input_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Representative rows (.npy, (N, n_0)) for timing and spike rates.")
@click.option("--device", default="auto", help="Device profile name (zor-devices list) or auto.")
@click.option("--batch", type=click.IntRange(min=1), default=64, help="The larger batch size.")
@click.option("--calls", type=click.IntRange(min=1), default=200, help="Timed calls per measurement.")
@click.option("--repeats", type=click.IntRange(min=1), default=5, help="Measurements per figure (the median).")
@click.option("--threads", type=click.IntRange(min=1), default=1, help="onnxruntime and torch threads.")
@click.option("--no-rss", is_flag=True, help="Skip the peak-RSS subprocesses.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the figures as JSON.")
def main(models: tuple, checkpoint: Optional[str], paths: Optional[str], calibration: Optional[str], max_batch: int,
         input_path: Optional[Path], device: str, batch: int, calls: int, repeats: int, threads: int, no_rss: bool,
         json_path: Optional[Path]) -> None:
    """The torch-free runtime beside the torch engine: model files, a checkpoint's paths, or the runtime's targets."""
    common.check_json_folder(json_path)
    wanted = _wanted_paths(paths, checkpoint)
    if not models and checkpoint is None:
        text, doc = runtime_targets(batch, calls, repeats, threads)
    else:
        if not models and not wanted:
            raise click.UsageError("a --checkpoint alone has no files to bench: pass MODEL files or --paths")
        with tempfile.TemporaryDirectory(prefix="zor-bench-") as tmp:
            files = [str(m) for m in models]
            files += export_paths(checkpoint, tmp, wanted, device=device, calibration=calibration,
                                  max_batch=max_batch) if wanted else []
            data = load_input(input_path, Model(files[0], device=device, threads=threads))[0] if input_path else None
            doc = bench_files(files, checkpoint, device=device, batch=batch, calls=calls, repeats=repeats,
                              threads=threads, inputs=data, rss=not no_rss,
                              progress=lambda s: click.echo(s, err=True))
        text = format_table(doc)
    click.echo(text)
    if json_path is not None:
        common.write_json(json_path, doc)
        click.echo(f"wrote {json_path}", err=True)


if __name__ == "__main__":
    main()
