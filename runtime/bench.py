"""``zor-bench`` measurements: latency, throughput, memory, size, spikes, synaptic ops.

For each model file (label from its ``zor.quantization`` mode: float32, int8, ...):

- latency per ``Model.run`` call at batch 1 and batch B: p50 and p95 over ``calls``
  calls, repeated ``repeats`` times with the models interleaved (so a noisy
  neighbour slows all of them alike); the figures are the medians over repeats.
- throughput: B / p50(batch B), samples per second.
- peak RSS: ``VmHWM`` (``ru_maxrss`` off Linux) of a fresh subprocess that imports the runtime, loads
  the model and runs batch B (one subprocess per model, so figures never mix);
  also the RSS after the import alone, before the model is loaded.
- model size: bytes of the file.
- spike rate per layer r_i (share of units with c > θ, over the bench inputs) and
  synaptic operations per inference: Σ_{i<L} r_i · M_i with M_i the connection's
  multiply-accumulates at full activity (n_i · n_{i+1} dense: each spike of layer i
  drives n_{i+1} synapses; C_i · k² · n_{i+1} for a convolution), next to the dense
  multiply-accumulates
  Σ_{i<L} n_i · n_{i+1}.
- with a checkpoint and torch importable: the torch engine's ``Zor.run`` timed in
  the same loop, and each model's latency as a ratio of it (torch is imported
  lazily, inside this function only).
- dense vs sparse vs auto side by side: each file is labelled by precision and path
  (``float32``, ``float32 sparse``, ``float32 auto``, ``int8 sparse``, ...; a dense
  file keeps its plain precision label); ``paths`` gives per file the sparse
  connections, the batch limit, the speed-up over the dense file of the same precision
  at batch 1 (p50 dense / p50 file) and the largest output difference from it. A
  sparse file that takes fewer rows than ``batch`` per call is timed at batch 1 only
  (its batch figures are None) and runs the spike-rate and RSS measurements in chunks
  of its limit. :func:`export_paths` makes the three exports of one checkpoint.

Example:
    >>> tuple(round(v, 6) for v in percentiles([1.0, 2.0, 3.0, 4.0]))   # (p50, p95) in ms of seconds
    (2500.0, 3850.0)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from zor.common import format as fmt
from zor.common.errors import ConfigError

from .model import Model

__all__ = ["percentiles", "time_calls", "spike_stats", "peak_rss", "torch_reference", "run_bench", "format_table",
           "run_chunked", "label_of", "export_paths"]


def percentiles(seconds: Sequence[float]) -> tuple[float, float]:
    """(p50, p95) of per-call times, in milliseconds."""
    a = np.asarray(seconds, np.float64) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 95))


def time_calls(fn: Callable[[], Any], calls: int, warmup: int = 3) -> list[float]:
    """Per-call wall times (seconds) of ``calls`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def run_chunked(model: Model, x: np.ndarray, spikes: bool = False) -> dict[str, np.ndarray]:
    """``model.run(x)`` in chunks of the model's batch limit (a sparse export), outputs concatenated."""
    limit = model.max_batch
    if limit is None or len(x) <= limit:
        return model.run(x, spikes=spikes)
    parts = [model.run(x[a:a + limit], spikes=spikes) for a in range(0, len(x), limit)]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "spike_rates"}
    if spikes:
        n = len(model.sizes)
        out["spike_rates"] = np.array([float(np.mean(out[fmt.spikes(i)])) for i in range(n)])
    return out


def label_of(model: Model) -> str:
    """``float32`` / ``int8`` for dense files, ``float32 sparse``, ``int8 auto``, ... otherwise."""
    path = model.path_kind
    return model.precision if path == "dense" else f"{model.precision} {path}"


def connection_macs(model: Model) -> list[int]:
    """Multiply-accumulates of each connection at full activity: n_i·n_{i+1} for a dense
    one; C_i·k²·n_{i+1} for a convolution into layer i+1 (each output unit reads a
    k×k patch of every input channel)."""
    sizes, layers = model.sizes, model.metadata.layers
    macs = []
    for i in range(len(sizes) - 1):
        post = layers[i + 1] if i + 1 < len(layers) else {}
        if post.get("kind") == "conv":
            c_in = (layers[i].get("shape") or [1])[0]
            macs.append(int(c_in * post["kernel_size"] ** 2 * sizes[i + 1]))
        else:
            macs.append(int(sizes[i] * sizes[i + 1]))
    return macs


def spike_stats(model: Model, x: np.ndarray) -> dict[str, Any]:
    """Per-layer spike rates on ``x`` and synaptic operations per inference (see module doc)."""
    rates = run_chunked(model, x, spikes=True)["spike_rates"]
    macs = connection_macs(model)
    synops = float(sum(rates[i] * macs[i] for i in range(len(macs))))
    dense = int(sum(macs))
    return {"spike_rates": [float(r) for r in rates], "synops_per_inference": synops,
            "dense_macs_per_inference": dense, "synops_share": synops / dense if dense else 0.0}


_RSS_CHILD = r"""
import json, sys


def hwm_mb():
    # VmHWM (Linux) is this process image's own peak: ru_maxrss would carry over the
    # parent's peak across fork+exec and report the benchmark's own memory.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss     # bytes on macOS, KiB elsewhere
    return r / 2**20 if sys.platform == "darwin" else r / 1024.0


import numpy as np
from zor.runtime import Model
base = hwm_mb()
path, device, threads, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
weights = sys.argv[5] if len(sys.argv) > 5 else "auto"
m = Model(path, device=device, threads=threads or None, weights=weights)
if m.max_batch is not None:
    batch = min(batch, m.max_batch)
x = np.random.default_rng(0).random((batch, m.sizes[0]), dtype=np.float32)
for _ in range(20):
    m.run(x)
print(json.dumps({"peak_rss_mb": hwm_mb(), "import_rss_mb": base}))
"""


def peak_rss(path: str, device: str, threads: Optional[int], batch: int,
             weights: str = "auto") -> dict[str, Optional[float]]:
    """Peak RSS (MiB) of a fresh process running ``path`` at ``batch`` (at most the file's batch limit);
    None figures where unmeasurable."""
    if not Path("/proc/self/status").exists():
        try:
            import resource  # noqa: F401  (Unix only)
        except ImportError:
            return {"peak_rss_mb": None, "import_rss_mb": None}
    proc = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(path), device, str(threads or 0), str(batch), weights],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        return {"peak_rss_mb": None, "import_rss_mb": None, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def torch_reference(checkpoint: str, threads: int) -> Optional[Callable[[np.ndarray], np.ndarray]]:
    """A function running the torch engine on a checkpoint, or None when torch is missing."""
    try:
        import torch

        from zor.engine.checkpoint import load
    except ImportError:
        return None
    torch.set_num_threads(max(1, threads))
    net = load(checkpoint, device="cpu")

    def run(x: np.ndarray) -> np.ndarray:
        out, _ = net.run(torch.from_numpy(x))
        return out.numpy()

    return run


def _median(values: list) -> Optional[float]:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def run_bench(
    paths: Sequence[str],
    device: str = "auto",
    batch: int = 64,
    calls: int = 100,
    repeats: int = 5,
    threads: Optional[int] = None,
    checkpoint: Optional[str] = None,
    inputs: Optional[np.ndarray] = None,
    rss: bool = True,
    progress: Optional[Callable[[str], None]] = None,
    weights: str = "auto",
) -> dict[str, Any]:
    """Measure every model in ``paths`` (see the module docstring); returns the report dict."""
    if batch < 1 or calls < 1 or repeats < 1:
        raise ConfigError(f"batch, calls and repeats must be ≥ 1, got {batch}, {calls}, {repeats}")
    models = [Model(p, device=device, threads=threads, weights=weights) for p in paths]
    sizes = models[0].sizes
    for m in models[1:]:
        if m.sizes != sizes:
            raise ConfigError(f"{m.path.name} has layer sizes {m.sizes}: expected {sizes} like {models[0].path.name} "
                              "(compare exports of one model)")
    rng = np.random.default_rng(0)
    if inputs is None:
        data = rng.random((max(batch, 64), sizes[0]), dtype=np.float32)
        data_note = "random uniform [0, 1) rows (pass --input for real data: spike rates depend on it)"
    else:
        data = np.asarray(inputs, np.float32)
        data_note = f"{len(data)} rows from --input"
        if len(data) < batch:
            data = np.concatenate([data] * (batch // len(data) + 1))
    x1, xb = data[:1], data[:batch]
    eff_threads = threads or models[0].profile.intra_op_threads or os.cpu_count() or 1
    ref = torch_reference(checkpoint, eff_threads) if checkpoint else None
    labels = []
    for m in models:
        label = label_of(m)
        while label in labels:
            label += "'"
        labels.append(label)
    runners: dict[str, Callable[[np.ndarray], Any]] = {lab: m.run for lab, m in zip(labels, models)}
    limits = {lab: m.max_batch for lab, m in zip(labels, models)}
    if ref is not None:
        runners["torch"] = ref
    samples: dict[str, dict[int, list]] = {k: {1: [], batch: []} for k in runners}
    for r in range(repeats):
        for name, fn in runners.items():
            for b, x in ((1, x1), (batch, xb)):
                if limits.get(name) is not None and b > limits[name]:
                    continue                    # a sparse file that takes fewer rows per call
                samples[name][b].append(percentiles(time_calls(lambda: fn(x), calls)))
        if progress:
            progress(f"repeat {r + 1}/{repeats}")
    report: dict[str, Any] = {
        "device": models[0].profile.name,
        "detected": models[0].detection.reason if models[0].detection else None,
        "providers": models[0].providers,
        "threads": eff_threads,
        "batch": batch, "calls": calls, "repeats": repeats, "inputs": data_note,
        "sizes": sizes, "models": {},
    }
    for name in runners:
        fig = {}
        for b, tag in ((1, "b1"), (batch, f"b{batch}")):
            fig[f"p50_ms_{tag}"] = _median([p for p, _ in samples[name][b]])
            fig[f"p95_ms_{tag}"] = _median([q for _, q in samples[name][b]])
        pb = fig[f"p50_ms_b{batch}"]
        fig["throughput_per_s"] = batch / (pb / 1e3) if pb else None
        report["models"][name] = fig
    for lab, m in zip(labels, models):
        fig = report["models"][lab]
        fig["file"] = m.path.name
        fig["size_bytes"] = m.path.stat().st_size + _weights_bytes(m)
        fig["path"] = m.path_kind
        fig["sparse_connections"] = m.metadata.sparse_connections
        fig["max_batch"] = m.max_batch
        fig["weights"] = m.weights_mode
        fig.update(spike_stats(m, data))
        if rss:
            fig.update(peak_rss(str(m.path), m.profile.name, threads, batch, weights))
        if ref is not None:
            tfig = report["models"]["torch"]
            fig["vs_torch_b1"] = fig["p50_ms_b1"] / tfig["p50_ms_b1"]
            pb = fig[f"p50_ms_b{batch}"]
            fig[f"vs_torch_b{batch}"] = pb / tfig[f"p50_ms_b{batch}"] if pb else None
            fig["max_abs_diff_vs_torch"] = float(np.max(np.abs(run_chunked(m, xb)[fmt.OUTPUT] - ref(xb))))
    report["paths"] = _paths_report(labels, models, report["models"], xb)
    if "float32" in report["models"] and "int8" in report["models"]:
        f, q = report["models"]["float32"], report["models"]["int8"]
        s1, sb = f["p50_ms_b1"] / q["p50_ms_b1"], f[f"p50_ms_b{batch}"] / q[f"p50_ms_b{batch}"]
        expected = models[0].profile.int8_pays
        report["int8"] = {
            "speedup_b1": s1, f"speedup_b{batch}": sb,
            "pays_here": bool(sb >= 1.05),
            "profile_verdict": expected,
            "verdict": (f"int8 {'pays' if sb >= 1.05 else 'does not pay'} here: {sb:.2f}x float32 speed at batch "
                        f"{batch}, {s1:.2f}x at batch 1 (profile {models[0].profile.name} says "
                        f"{ {True: 'it pays', False: 'it does not pay', None: 'unknown'}[expected] })"),
        }
    return report


def _weights_bytes(m: Model) -> int:
    spec = m.metadata.weights
    return int(spec.get("bytes", 0)) if spec else 0


def _paths_report(labels: list[str], models: list[Model], figs: dict[str, Any], x: np.ndarray) -> dict[str, Any]:
    """Per file: path, sparse connections, batch limit, speed-up over the dense file of its precision, max |Δ|."""
    dense = {m.precision: (lab, m) for lab, m in zip(labels, models) if m.path_kind == "dense"
             and not m.metadata.sparse_connections}
    out: dict[str, Any] = {}
    for lab, m in zip(labels, models):
        row: dict[str, Any] = {"path": m.path_kind, "sparse_connections": m.metadata.sparse_connections,
                               "form": m.metadata.paths.get("form"), "max_batch": m.max_batch,
                               "vs_dense_b1": None, "max_abs_diff_vs_dense": None}
        if m.precision in dense and dense[m.precision][0] != lab:
            dlab, dm = dense[m.precision]
            row["vs_dense_b1"] = figs[dlab]["p50_ms_b1"] / figs[lab]["p50_ms_b1"]
            row["max_abs_diff_vs_dense"] = float(np.max(np.abs(run_chunked(m, x)[fmt.OUTPUT]
                                                               - run_chunked(dm, x)[fmt.OUTPUT])))
        out[lab] = row
    return out


def translation_speed(paths: Sequence[str], texts: Sequence[str], device: str, threads: Optional[int],
                      batch: int, repeats: int = 3) -> dict[str, Any]:
    """ms per sentence and target tokens per second of translation models, at batch 1 and ``batch``
    (greedy decoding; :func:`zor.runtime.tasks.translate.speed`). Models that are not translation
    models are left out."""
    from .tasks.translate import speed

    out: dict[str, Any] = {}
    for path in paths:
        model = Model(path, device=device, threads=threads)
        if model.task != "translate":
            continue
        label = f"{Path(path).name} ({label_of(model)})"
        out[label] = {f"batch{b}": speed(model, texts, batch_size=b, beam=1, repeats=repeats)
                      for b in sorted({1, batch})}
    return out


def format_translation(figs: dict[str, Any]) -> str:
    rows = [["model", "batch", "ms/sentence", "tokens/s", "model calls/pass"]]
    for label, per_batch in figs.items():
        for key, f in per_batch.items():
            rows.append([label, key.removeprefix("batch"), _fmt(f["ms_per_sentence"]),
                         _fmt(f["tokens_per_s"], ".0f"), str(f["calls_per_pass"])])
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def export_paths(checkpoint: str, folder: str, paths: Sequence[str] = ("dense", "sparse", "auto"),
                 device: str = "auto", calibration: Optional[str] = None, max_batch: int = 1,
                 quantize: str = "none") -> list[str]:
    """Export ``checkpoint`` once per path into ``folder`` (needs torch and onnx: imported here only)."""
    try:
        from zor.export import export
    except ImportError as exc:
        raise ConfigError(f"--paths exports the checkpoint, which needs the training extras (torch, onnx): {exc}") from None
    files = []
    for path in paths:
        out = Path(folder) / f"{Path(checkpoint).stem}-{quantize if quantize != 'none' else 'float32'}-{path}.onnx"
        export(checkpoint, out, device=device, quantize=quantize, calibration=calibration, path=path,
               max_batch=max_batch)
        files.append(str(out))
    return files


def _fmt(v: Any, spec: str = ".3f") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table."""
    b = report["batch"]
    lines = [f"device {report['device']} ({', '.join(report['providers'])}), {report['threads']} thread(s), "
             f"sizes {report['sizes']}, medians of {report['repeats']} repeats x {report['calls']} calls",
             f"inputs: {report['inputs']}"]
    head = ["model", "p50 b1 ms", "p95 b1 ms", f"p50 b{b} ms", f"p95 b{b} ms", "samples/s", "size KB",
            "peak RSS MB", "vs torch b1", f"vs torch b{b}", "x dense b1"]
    rows = [head]
    paths = report.get("paths", {})
    for name, f in report["models"].items():
        rows.append([name, _fmt(f["p50_ms_b1"]), _fmt(f["p95_ms_b1"]), _fmt(f[f"p50_ms_b{b}"]),
                     _fmt(f[f"p95_ms_b{b}"]), _fmt(f["throughput_per_s"], ".0f"),
                     _fmt(f["size_bytes"] / 1024, ".1f") if "size_bytes" in f else "-",
                     _fmt(f.get("peak_rss_mb"), ".1f"), _fmt(f.get("vs_torch_b1"), ".2f"),
                     _fmt(f.get(f"vs_torch_b{b}"), ".2f"), _fmt(paths.get(name, {}).get("vs_dense_b1"), ".2f")])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines += ["  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))) for r in rows]
    for name, f in report["models"].items():
        if "spike_rates" in f:
            rates = ", ".join(f"{r:.3f}" for r in f["spike_rates"])
            lines.append(f"{name}: spike rate per layer [{rates}]; synaptic ops/inference "
                         f"{f['synops_per_inference']:.0f} of {f['dense_macs_per_inference']} dense MACs "
                         f"({100 * f['synops_share']:.1f}%)"
                         + (f"; max |diff| vs torch {f['max_abs_diff_vs_torch']:.2e}" if "max_abs_diff_vs_torch" in f else "")
                         + (f"; RSS after import {f['import_rss_mb']:.1f} MB" if f.get("import_rss_mb") else ""))
    for name, p in paths.items():
        if p.get("path", "dense") != "dense" or p.get("sparse_connections"):
            lines.append(f"{name}: {p['path']}, sparse connections {p['sparse_connections'] or 'none'}"
                         + (f" ({p['form']} form, batch ≤ {p['max_batch']})" if p.get("max_batch") else "")
                         + (f"; {p['vs_dense_b1']:.2f}x the dense file's speed at batch 1, max |Δoutput| "
                            f"{p['max_abs_diff_vs_dense']:.2e}" if p.get("vs_dense_b1") else ""))
    if "int8" in report:
        lines.append(report["int8"]["verdict"])
    return "\n".join(lines)
