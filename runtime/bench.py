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
- references (functions of a batch, e.g. the torch engine on the checkpoint, which
  ``python -m benchmarks.runtime_bench`` adds): timed in the same loop, and each
  model's latency as a ratio of theirs. The runtime itself never imports torch.
- dense vs sparse vs auto side by side: each file is labelled by precision and path
  (``float32``, ``float32 sparse``, ``float32 auto``, ``int8 sparse``, ...; a dense
  file keeps its plain precision label); ``paths`` gives per file the sparse
  connections, the batch limit, the speed-up over the dense file of the same precision
  at batch 1 (p50 dense / p50 file) and the largest output difference from it. A
  sparse file that takes fewer rows than ``batch`` per call is timed at batch 1 only
  (its batch figures are None) and runs the spike-rate and RSS measurements in chunks
  of its limit (``python -m benchmarks.runtime_bench --paths`` exports one checkpoint
  once per path and benches the files).
- NIR imports (stateful, one time step per call): a stream of steps carrying the state, per-step
  latency, spike rate per spiking node, synaptic operations per edge of the graph (:mod:`.nirbench`).

Example:
    >>> tuple(round(v, 6) for v in percentiles([1.0, 2.0, 3.0, 4.0]))   # (p50, p95) in ms of seconds
    (2500.0, 3850.0)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
from zor.devices import Profile

from zor.common import format as fmt
from zor.common.errors import ConfigError

from .checks import check_batch_memory
from .events import is_event_model
from .model import Model
from .nirbench import format_nir, run_nir_bench
from .pathsreport import paths_report
from .rss import peak_rss
from .tasks.translate import speed

__all__ = ["percentiles", "time_calls", "spike_stats", "connection_macs", "peak_rss", "run_bench", "load_models",
           "bench_inputs", "format_table", "run_chunked", "label_of", "translation_speed", "format_translation"]


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


def _median(values: list) -> Optional[float]:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


Reference = Callable[[np.ndarray], np.ndarray]


def run_bench(
    paths: Sequence[str],
    device: str = "auto",
    batch: int = 64,
    calls: int = 100,
    repeats: int = 5,
    threads: Optional[int] = None,
    inputs: Optional[np.ndarray] = None,
    rss: bool = True,
    progress: Optional[Callable[[str], None]] = None,
    weights: str = "auto",
    references: Optional[Mapping[str, Reference]] = None,
) -> dict[str, Any]:
    """Measure every model in ``paths`` (see the module docstring); returns the report dict.

    ``references`` (name → function of a float32 batch giving its output rows) are timed in
    the same interleaved loop as the files; each file then gets ``vs_{name}_b1``,
    ``vs_{name}_b{B}`` (its latency over the reference's) and ``max_abs_diff_vs_{name}``.
    """
    if batch < 1 or calls < 1 or repeats < 1:
        raise ConfigError(f"batch, calls and repeats must be ≥ 1, got {batch}, {calls}, {repeats}")
    models = load_models(paths, device, threads, weights)
    check_batch_memory(batch, models[0].sizes, "batch")       # before any row is made (ConfigError saying the sizes)
    if is_event_model(models[0]):
        if references:
            raise ConfigError("references are timed against stateless exports; a NIR import runs as a stream")
        return run_nir_bench(models, _labels(models), batch, calls, repeats, threads, inputs, rss, weights, progress,
                             _report_head(models[0], threads, batch, calls, repeats, ""))
    data, data_note = bench_inputs(inputs, batch, models[0].sizes[0])
    xb = data[:batch]
    labels = _labels(models)
    runners: dict[str, Callable[[np.ndarray], Any]] = {lab: m.run for lab, m in zip(labels, models)}
    runners.update(references or {})
    limits = {lab: m.max_batch for lab, m in zip(labels, models)}
    samples = _time_runners(runners, limits, data[:1], xb, calls, repeats, progress)
    report = _report_head(models[0], threads, batch, calls, repeats, data_note)
    report["references"] = list(references or {})
    report["models"] = {name: _latency_figures(samples[name], batch) for name in runners}
    for lab, m in zip(labels, models):
        fig = report["models"][lab]
        fig.update(_file_figures(m, data))
        if rss:
            fig.update(peak_rss(str(m.path), m.profile.name, threads, batch, weights))
        for name, ref in (references or {}).items():
            fig.update(_vs_reference(name, fig, report["models"][name], batch, run_chunked(m, xb)[fmt.OUTPUT],
                                     ref(xb)))
    report["paths"] = paths_report(labels, models, report["models"], lambda m: run_chunked(m, xb)[fmt.OUTPUT])
    if "float32" in report["models"] and "int8" in report["models"]:
        report["int8"] = _int8_verdict(report["models"]["float32"], report["models"]["int8"], batch,
                                       models[0].profile)
    return report


def load_models(paths: Sequence[str], device: str = "auto", threads: Optional[int] = None,
                weights: str = "auto") -> list[Model]:
    """The files of ``paths`` loaded as Models; they must share their layer sizes (exports of one model)."""
    if not paths:
        raise ConfigError("expected at least one model file to bench, got none")
    models = [Model(p, device=device, threads=threads, weights=weights) for p in paths]
    sizes = models[0].sizes
    for m in models[1:]:
        if m.sizes != sizes:
            raise ConfigError(f"{m.path.name} has layer sizes {m.sizes}: expected {sizes} like {models[0].path.name} "
                              "(compare exports of one model)")
    return models


def bench_inputs(inputs: Optional[np.ndarray], batch: int, width: int) -> tuple[np.ndarray, str]:
    """(rows to time on, a note saying what they are): ``inputs`` repeated up to ``batch`` rows, or
    random uniform rows when none are given."""
    if inputs is None:
        data = np.random.default_rng(0).random((max(batch, 64), width), dtype=np.float32)
        return data, "random uniform [0, 1) rows (pass --input for real data: spike rates depend on it)"
    data = np.asarray(inputs, np.float32)
    note = f"{len(data)} rows from --input"
    if len(data) < batch:
        data = np.concatenate([data] * (batch // len(data) + 1))
    return data, note


def _labels(models: Sequence[Model]) -> list[str]:
    """One label per file (:func:`label_of`), primed (') where two files would share one."""
    labels: list[str] = []
    for m in models:
        label = label_of(m)
        while label in labels:
            label += "'"
        labels.append(label)
    return labels


def _time_runners(runners: Mapping[str, Callable[[np.ndarray], Any]], limits: Mapping[str, Optional[int]],
                  x1: np.ndarray, xb: np.ndarray, calls: int, repeats: int,
                  progress: Optional[Callable[[str], None]]) -> dict[str, dict[int, list]]:
    """(p50, p95) per runner, batch size and repeat; the runners take turns within each repeat."""
    batch = len(xb)
    samples: dict[str, dict[int, list]] = {k: {1: [], batch: []} for k in runners}
    for r in range(repeats):
        for name, fn in runners.items():
            for b, x in ((1, x1), (batch, xb)):
                if limits.get(name) is not None and b > limits[name]:
                    continue                    # a sparse file that takes fewer rows per call
                samples[name][b].append(percentiles(time_calls(lambda: fn(x), calls)))
        if progress:
            progress(f"repeat {r + 1}/{repeats}")
    return samples


def _report_head(first: Model, threads: Optional[int], batch: int, calls: int, repeats: int,
                 data_note: str) -> dict[str, Any]:
    return {
        "device": first.profile.name,
        "detected": first.detection.reason if first.detection else None,
        "providers": first.providers,
        "threads": threads or first.profile.intra_op_threads or os.cpu_count() or 1,
        "batch": batch, "calls": calls, "repeats": repeats, "inputs": data_note,
        "sizes": first.sizes,
    }


def _latency_figures(samples: dict[int, list], batch: int) -> dict[str, Any]:
    """p50/p95 at batch 1 and ``batch`` (medians over repeats) and the throughput at ``batch``."""
    fig: dict[str, Any] = {}
    for b, tag in ((1, "b1"), (batch, f"b{batch}")):
        fig[f"p50_ms_{tag}"] = _median([p for p, _ in samples[b]])
        fig[f"p95_ms_{tag}"] = _median([q for _, q in samples[b]])
    pb = fig[f"p50_ms_b{batch}"]
    fig["throughput_per_s"] = batch / (pb / 1e3) if pb else None
    return fig


def _file_figures(m: Model, data: np.ndarray) -> dict[str, Any]:
    """What a file is (name, size, path, sparse connections, batch limit, weights mode) and its spikes."""
    fig = {"file": m.path.name, "size_bytes": m.path.stat().st_size + _weights_bytes(m), "path": m.path_kind,
           "sparse_connections": m.metadata.sparse_connections, "max_batch": m.max_batch,
           "weights": m.weights_mode}
    fig.update(spike_stats(m, data))
    return fig


def _vs_reference(name: str, fig: dict[str, Any], ref: dict[str, Any], batch: int, out: np.ndarray,
                  ref_out: np.ndarray) -> dict[str, Any]:
    """A file's latency as a ratio of a reference's, and the largest output difference from it."""
    pb, rb = fig[f"p50_ms_b{batch}"], ref[f"p50_ms_b{batch}"]
    return {f"vs_{name}_b1": fig["p50_ms_b1"] / ref["p50_ms_b1"],
            f"vs_{name}_b{batch}": pb / rb if pb and rb else None,
            f"max_abs_diff_vs_{name}": float(np.max(np.abs(out - ref_out)))}


def _int8_verdict(f: dict[str, Any], q: dict[str, Any], batch: int, profile: Profile) -> dict[str, Any]:
    """Whether int8 pays here: its speed-up over float32, beside the profile's own verdict."""
    s1, sb = f["p50_ms_b1"] / q["p50_ms_b1"], f[f"p50_ms_b{batch}"] / q[f"p50_ms_b{batch}"]
    expected = profile.int8_pays
    says = {True: "it pays", False: "it does not pay", None: "unknown"}[expected]
    return {
        "speedup_b1": s1, f"speedup_b{batch}": sb,
        "pays_here": bool(sb >= 1.05),
        "profile_verdict": expected,
        "verdict": (f"int8 {'pays' if sb >= 1.05 else 'does not pay'} here: {sb:.2f}x float32 speed at batch "
                    f"{batch}, {s1:.2f}x at batch 1 (profile {profile.name} says {says})"),
    }


def _weights_bytes(m: Model) -> int:
    spec = m.metadata.weights
    return int(spec.get("bytes", 0)) if spec else 0


def translation_speed(paths: Sequence[str], texts: Sequence[str], device: str, threads: Optional[int],
                      batch: int, repeats: int = 3) -> dict[str, Any]:
    """ms per sentence and target tokens per second of translation models, at batch 1 and ``batch``
    (greedy decoding; :func:`zor.runtime.tasks.translate.speed`). Models that are not translation
    models are left out."""
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


def _fmt(v: Any, spec: str = ".3f") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table, then one line per model on its spikes and paths."""
    lines = [f"device {report['device']} ({', '.join(report['providers'])}), {report['threads']} thread(s), "
             f"sizes {report['sizes']}, medians of {report['repeats']} repeats x {report['calls']} calls",
             f"inputs: {report['inputs']}"]
    lines += _latency_table(report) + (format_nir(report) if report.get("nir") else [])
    refs = report.get("references", [])
    for name, f in report["models"].items():
        if "spike_rates" in f:
            rates = ", ".join(f"{r:.3f}" for r in f["spike_rates"])
            lines.append(f"{name}: spike rate per layer [{rates}]; synaptic ops/inference "
                         f"{f['synops_per_inference']:.0f} of {f['dense_macs_per_inference']} dense MACs "
                         f"({100 * f['synops_share']:.1f}%)"
                         + "".join(f"; max |diff| vs {r} {f[f'max_abs_diff_vs_{r}']:.2e}" for r in refs
                                   if f"max_abs_diff_vs_{r}" in f)
                         + (f"; RSS after import {f['import_rss_mb']:.1f} MB" if f.get("import_rss_mb") else ""))
    for name, p in report.get("paths", {}).items():
        if p.get("path", "dense") != "dense" or p.get("sparse_connections"):
            lines.append(f"{name}: {p['path']}, sparse connections {p['sparse_connections'] or 'none'}"
                         + (f" ({p['form']} form, batch ≤ {p['max_batch']})" if p.get("max_batch") else "")
                         + (f"; {p['vs_dense_b1']:.2f}x the dense file's speed at batch 1, max |Δoutput| "
                            f"{p['max_abs_diff_vs_dense']:.2e}" if p.get("vs_dense_b1") else ""))
    if "int8" in report:
        lines.append(report["int8"]["verdict"])
    return "\n".join(lines)


def _latency_table(report: dict[str, Any]) -> list[str]:
    """One row per model and reference: latencies, throughput, size, RSS, ratios to each reference and
    to the dense file."""
    b, refs, paths = report["batch"], report.get("references", []), report.get("paths", {})
    head = ["model", "p50 b1 ms", "p95 b1 ms", f"p50 b{b} ms", f"p95 b{b} ms", "samples/s", "size KB",
            "peak RSS MB"] + [f"vs {r} b{n}" for r in refs for n in (1, b)] + ["x dense b1"]
    rows = [head]
    for name, f in report["models"].items():
        rows.append([name, _fmt(f["p50_ms_b1"]), _fmt(f["p95_ms_b1"]), _fmt(f[f"p50_ms_b{b}"]),
                     _fmt(f[f"p95_ms_b{b}"]), _fmt(f["throughput_per_s"], ".0f"),
                     _fmt(f["size_bytes"] / 1024, ".1f") if "size_bytes" in f else "-",
                     _fmt(f.get("peak_rss_mb"), ".1f")]
                    + [_fmt(f.get(f"vs_{r}_b{n}"), ".2f") for r in refs for n in (1, b)]
                    + [_fmt(paths.get(name, {}).get("vs_dense_b1"), ".2f")])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return ["  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))) for r in rows]
