"""``zor-bench`` on NIR imports: per-step latency of a stream, spike rates, synaptic operations per edge.

A NIR import computes one time step with its state passed in and out (``state_in_{k}_{v|i}``,
``state_in_edge_{j}``, docs/nir.md), so it is measured as it runs: a sequence of steps carrying the state.

- events xs (T, B, n_0): ``--input`` (a .npy of (T, B, *input_shape) or (T, *input_shape), as ``zor-run``
  takes), its rows repeated up to ``batch``; else random binary events, rate 0.3, T = ``calls``.
- per-step latency: a fresh :meth:`Model.stream` per measurement, 3 untimed steps, then ``calls`` timed
  steps on x_{t mod T} (the state carried throughout), at batch 1 and at ``batch``; p50 and p95 per step,
  medians over ``repeats`` with the files interleaved; throughput = batch / p50 (row-steps per second).
- over the whole sequence from the fresh state (every row of xs, the state carried from step to step):
  the spike rate of each spiking node r_k = Σ_{t,b,u} s_t(u) / (T · B · n_k), and the synaptic operations
  per step and row of each synaptic edge (:mod:`zor.runtime.nirgraph`): dense M(w) and, where the edge is
  spike-fed, the event-driven count E = Σ_u ā(u) f_w(u), ā(u) = Σ_{t,b} a_t(u) / (T · B);
  totals: dense Σ_w M(w) (a node fed by several edges once: they are summed before its weights), event-driven
  Σ_w (Σ_{e → w} E(e) where every edge into w is spike-fed, else M(w)).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

from zor.common import format as fmt
from zor.common.errors import ConfigError

from .events import event_batches, run_events
from .model import Model, initial_state
from .nirgraph import NirGraphInfo, nir_graph
from .pathsreport import paths_report
from .rss import peak_rss

__all__ = ["nir_events", "sequence_stats", "time_steps", "run_nir_bench", "format_nir", "EVENT_RATE"]

EVENT_RATE = 0.3           # share of 1s in the random events used when none are given (as the export's check)


def nir_events(model: Model, inputs: Optional[np.ndarray], batch: int, steps: int) -> tuple[np.ndarray, str]:
    """(events (T, B ≥ batch, n_0) float32, a note saying what they are); see the module docstring."""
    if inputs is None:
        rng = np.random.default_rng(0)
        xs = (rng.random((steps, batch, model.sizes[0])) < EVENT_RATE).astype(np.float32)
        return xs, (f"random binary events, rate {EVENT_RATE}, {steps} steps x {batch} rows (pass --input "
                    "events.npy (T, B, ...) for real data: spike rates depend on it)")
    xs, _ = event_batches(model, inputs)
    note = f"{xs.shape[0]} steps x {xs.shape[1]} rows of events from --input"
    if xs.shape[1] < batch:
        xs = np.concatenate([xs] * (batch // xs.shape[1] + 1), axis=1)
    return np.ascontiguousarray(xs), note


def time_steps(model: Model, xs: np.ndarray, calls: int, warmup: int = 3) -> list[float]:
    """Wall time (seconds) of each of ``calls`` stream steps on xs[t mod T] (B, n_0), after ``warmup`` steps."""
    stream, n = model.stream(), len(xs)
    for t in range(warmup):
        stream.step(xs[t % n])
    out = []
    for t in range(warmup, warmup + calls):
        x = xs[t % n]
        start = time.perf_counter()
        stream.step(x)
        out.append(time.perf_counter() - start)
    return out


def _counts(model: Model, graph: NirGraphInfo, xs: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per node k: Σ_{t,b} spikes_k (n_k,); per recurrent edge j: Σ_{t,b} [state_in_edge_j ≠ 0] (n,): one
    sequence from the fresh state over xs (T, B, n_0), in chunks of the file's batch limit."""
    limit = model.max_batch or xs.shape[1]
    nodes = [np.zeros(n.size, np.float64) for n in graph.nodes]
    edges = [np.zeros(graph.node(s).size, np.float64) for s, _ in graph.recurrent]
    specs = model.metadata.state
    for a in range(0, xs.shape[1], limit):
        rows = xs[:, a:a + limit]
        state = {s.input: initial_state(s, rows.shape[1]) for s in specs}
        for x in rows:
            for j in range(len(edges)):
                edges[j] += (state[f"state_in_edge_{j}"] != 0).sum(0)
            out = model.run({fmt.INPUT: x, **state}, spikes=True)
            for k in range(len(nodes)):
                nodes[k] += out[fmt.spikes(k)].sum(0)
            state = {s.input: out[s.output] for s in specs}
    return nodes, edges


def sequence_stats(model: Model, xs: Any) -> dict[str, Any]:
    """Spike rates per spiking node and synaptic operations per edge over the sequence xs (T, B, *input_shape)
    or (T, B, n_0) (module docstring)."""
    xs = np.asarray(xs)
    if not (xs.ndim == 3 and xs.shape[2] == model.sizes[0] and xs.dtype == np.float32):
        xs = event_batches(model, xs)[0]
    graph = nir_graph(model)
    nodes, edge_counts = _counts(model, graph, xs)
    samples = float(xs.shape[0] * xs.shape[1])
    binary = graph.binary_nodes(input_binary=bool(np.isin(xs, (0.0, 1.0)).all()))
    index = {n.name: n.index for n in graph.nodes}
    rows, dense, event = [], {}, {}
    for e in graph.synaptic:
        fed = e.src in binary
        active = edge_counts[e.edge_index] if e.recurrent else nodes[index[e.src]]
        ev = float(active @ e.fan_out) / samples if fed else None
        rows.append({"edge": [e.src, e.dst], "into": e.kind, "recurrent": e.recurrent, "spike_fed": fed,
                     "dense_synops": e.dense, "event_synops": ev,
                     "active_inputs": float(active.sum()) / samples if fed else None})
        dense[e.dst] = e.dense
        event[e.dst] = None if not fed or event.get(e.dst, 0.0) is None else event.get(e.dst, 0.0) + ev
    total_dense = int(sum(dense.values()))
    total_event = float(sum(dense[w] if v is None else v for w, v in event.items()))
    rates = {n.name: float(nodes[n.index].sum()) / (samples * n.size) for n in graph.nodes if n.spiking}
    return {"source": graph.source, "steps": int(xs.shape[0]), "rows": int(xs.shape[1]), "spike_rates": rates,
            "edges": rows, "dense_synops_per_step": total_dense, "event_synops_per_step": total_event,
            "synops_share": total_event / total_dense if total_dense else None}


def _latency(samples: dict[int, list], batch: int) -> dict[str, Any]:
    fig: dict[str, Any] = {}
    for b in (1, batch):
        ms = [np.percentile(np.asarray(s) * 1e3, (50, 95)) for s in samples[b]]
        fig[f"p50_ms_b{b}"] = float(np.median([m[0] for m in ms])) if ms else None
        fig[f"p95_ms_b{b}"] = float(np.median([m[1] for m in ms])) if ms else None
    pb = fig[f"p50_ms_b{batch}"]
    fig["throughput_per_s"] = batch / (pb / 1e3) if pb else None
    return fig


def run_nir_bench(models: Sequence[Model], labels: Sequence[str], batch: int, calls: int, repeats: int,
                  threads: Optional[int], inputs: Optional[np.ndarray], rss: bool, weights: str,
                  progress: Optional[Callable[[str], None]], head: dict[str, Any]) -> dict[str, Any]:
    """The report of ``zor-bench`` for NIR imports (module docstring); ``head`` the device/threads part."""
    if any(m.metadata.task.get("source") != "nir" or not m.stateful for m in models):
        raise ConfigError("zor-bench: expected every MODEL to be a stateful NIR import when one is "
                          f"({', '.join(m.path.name for m in models)}): bench other exports separately")
    xs, note = nir_events(models[0], inputs, batch, calls)
    samples = {lab: {1: [], batch: []} for lab in labels}
    for r in range(repeats):
        for lab, m in zip(labels, models):
            for b in sorted({1, batch}):
                if m.max_batch is None or b <= m.max_batch:
                    samples[lab][b].append(time_steps(m, xs[:, :b], calls))
        if progress:
            progress(f"repeat {r + 1}/{repeats}")
    report = dict(head, inputs=note, nir=True, references=[])
    report["models"] = {}
    for lab, m in zip(labels, models):
        fig = _latency(samples[lab], batch)
        fig.update({"file": m.path.name, "size_bytes": m.path.stat().st_size, "path": m.path_kind,
                    "max_batch": m.max_batch, "nir": sequence_stats(m, xs)})
        if rss:
            fig.update(peak_rss(str(m.path), m.profile.name, threads, batch, weights))
        report["models"][lab] = fig
    report["paths"] = paths_report(labels, models, report["models"], lambda m: run_events(m, xs[:, :1]))
    return report


def _num(v: Any, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def format_nir(report: dict[str, Any]) -> list[str]:
    """Lines after the latency table: per file its spike rates and synaptic totals; the first file's edges."""
    lines = ["latency is per stream step (state carried), throughput in row-steps per second"]
    first = None
    for name, f in report["models"].items():
        s = f["nir"]
        first = first or s
        rates = ", ".join(f"{k} {v:.3f}" for k, v in s["spike_rates"].items())
        lines.append(f"{name}: over {s['steps']} steps x {s['rows']} rows from the fresh state: spike rate per "
                     f"spiking node [{rates}]; synaptic ops per step and row: {s['event_synops_per_step']:.1f} "
                     f"event-driven of {s['dense_synops_per_step']} dense ({100 * (s['synops_share'] or 0):.1f}%)")
    if first is None:
        return lines
    table = [["edge", "into", "recurrent", "spike-fed", "active inputs", "dense synops", "event synops"]]
    for e in first["edges"]:
        table.append([f"{e['edge'][0]} -> {e['edge'][1]}", e["into"], "yes" if e["recurrent"] else "no",
                      "yes" if e["spike_fed"] else "no", _num(e["active_inputs"], ".2f"), str(e["dense_synops"]),
                      _num(e["event_synops"])])
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines.append(f"synaptic edges of {first['source'] or 'the graph'} (per step and row):")
    lines += [("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths))).rstrip() for r in table]
    return lines
