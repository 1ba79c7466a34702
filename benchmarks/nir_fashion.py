"""A rate-coded snnTorch LIF classifier on Fashion-MNIST, exported through NIR and run on the runtime (issue 24).

    python -m benchmarks.nir_fashion            # prints the table, writes benchmarks/results/nir_fashion.json
    python -m benchmarks.nir_fashion --sweep-only   # the auto-vs-dense sweep alone (nir_fashion_sweep.json)
    python -m benchmarks.nir_fashion --hidden 256   # a wider classifier: nir_fashion_h256/, nir_fashion_h256.json

The network: 784 → Linear H → Leaky → Linear 10 → Leaky (H = --hidden, default 128) (reset "zero", per-unit β = 0.9), T steps of
Bernoulli spikes (P = pixel intensity), class = most output spikes (ties: lowest index, in both). snnTorch's Leaky is

    v_t = β (1 − s_{t−1}) v_{t−1} + W x_t + b,   s_t = [v_t > θ]

which NIR's LIF at dt = 1e-4 (snnTorch's export dt, forward Euler) states exactly (docs/nir-frameworks.md).
Figures, all in one run on the same spike inputs (which machine: "environment" in the JSON):

- accuracy of snnTorch's eager forward and of every runtime file on the full test set, the output spike
  agreement with snnTorch (every step, unit and sample) and the share of samples given snnTorch's class;
- per-sample latency at batch 1 on one thread (torch.set_num_threads(1), Model(threads=1)): T steps each,
  snnTorch eager against the runtime's Stream.run(xs) (the T steps in one call, inputs checked once) and
  against T calls of Stream.step(x); every path measured once per round, in turns, over ``--rounds`` rounds;
  the speed-up is the median over rounds of the per-round ratio (benchmarks.common.paired_ratio);
- the same figures for snnTorch's own importer of its own file (snntorch.import_nir): the framework's round trip;
- the exports: float32; int8 with the spike budget and fallback (calibrated on training images, never the
  test set); int8 with every connection int8 (--spike-budget 0: what the budget protects against); the
  event-driven sparse form (--path sparse) and --path auto on this machine's profile;
- --path auto against dense as the input rate varies (the first Affine's input, intensities scaled), beside
  the profile's break-even for that node's shape (``sparse_sweep``, in benchmarks/nir_fashion_sweep.py):
  where auto made a node sparse it must be ahead of dense, elsewhere it is the dense graph
  (``sparse_figure_met``; ``sparse_lead_beyond_noise``: ahead by more than two sessions of one file differ).

The trained network is cached under benchmarks/results/nir_fashion/ (safetensors + the NIR file), never in git;
at another hidden size H under nir_fashion_h{H}/, and the JSON is nir_fashion_h{H}.json (``result_paths``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional

import click
import numpy as np

from benchmarks.common import (
    command,
    environment,
    format_table,
    interleave,
    load_images,
    paired_ratio,
    seed_everything,
    set_threads,
    write_json,
)

DT = 1e-4            # snnTorch's export dt: forward Euler at it gives back v ← β v + x
HIDDEN = 128         # hidden LIF units (the default of --hidden)
CHUNK = 500          # test samples per batch when measuring accuracy


def build(hidden: int = HIDDEN):
    import snntorch as snn
    import torch
    from torch import nn

    def leaky(n: int, **kw):
        return snn.Leaky(beta=torch.full((n,), 0.9), threshold=torch.ones(n), init_hidden=True,
                         reset_mechanism="zero", **kw)
    return nn.Sequential(nn.Linear(784, hidden), leaky(hidden), nn.Linear(hidden, 10), leaky(10, output=True))


def result_paths(out: Path, hidden: int, sweep_only: bool) -> tuple[Path, Path]:
    """(cache folder, JSON file) of a run: ``out``/nir_fashion/ and nir_fashion.json (nir_fashion_sweep.json with
    --sweep-only) at the default size; nir_fashion_h{hidden}/ and nir_fashion_h{hidden}[_sweep].json at any
    other, so that runs of different sizes never overwrite each other's network or figures."""
    tag = "nir_fashion" if hidden == HIDDEN else f"nir_fashion_h{hidden}"
    return Path(out) / tag, Path(out) / f"{tag}{'_sweep' if sweep_only else ''}.json"


def spikes(x: np.ndarray, steps: int, seed: int) -> np.ndarray:
    """(N, 784) intensities → (steps, N, 784) float32 Bernoulli spikes, the same for every path."""
    return (np.random.default_rng(seed).random((steps,) + x.shape) < x[None]).astype(np.float32)


def snn_spikes(net, xs) -> np.ndarray:
    """snnTorch eager over xs (T, B, 784): output spikes (T, B, 10)."""
    import torch

    for m in net:
        if hasattr(m, "reset_mem"):
            m.reset_mem()
    with torch.no_grad():
        return np.stack([net(torch.from_numpy(x))[0].numpy() for x in xs])


def stream_spikes(stream, xs: np.ndarray) -> np.ndarray:
    """The runtime's stream over xs (T, B, 784), the T steps in one Stream.run call: output spikes (T, B, 10)."""
    stream.reset()
    return np.asarray(stream.run(xs)["output"])


def step_spikes(stream, xs: np.ndarray) -> np.ndarray:
    """The same as T calls of Stream.step(x)."""
    stream.reset()
    return np.stack([np.asarray(stream.step(x)["output"]) for x in xs])


def model_spikes(stream, xs: np.ndarray, max_batch: Optional[int]) -> np.ndarray:
    """stream_spikes, row by row where the file takes at most ``max_batch`` rows per call (the sparse form)."""
    if not max_batch or xs.shape[1] <= max_batch:
        return stream_spikes(stream, xs)
    return np.concatenate([stream_spikes(stream, xs[:, i:i + max_batch]) for i in range(0, xs.shape[1], max_batch)],
                          axis=1)


def train(folder: Path, steps: int, train_steps: int, seed: int, hidden: int = HIDDEN) -> Path:
    """Train (BPTT, Adam) or reuse the cached network; returns the NIR file written by snnTorch's exporter."""
    import nir
    import torch
    from safetensors.torch import save_file
    from snntorch.export_nir import export_to_nir

    from zor.common.fileio import atomic_path

    net = build(hidden)
    graph = folder / f"snntorch_lif_T{steps}_s{train_steps}_seed{seed}.nir"
    weights = graph.with_suffix(".safetensors")
    if weights.exists() and graph.exists():
        return graph
    seed_everything(seed)
    (x, y) = load_images()["train"]
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    start = time.perf_counter()
    for _ in range(train_steps):
        idx = rng.integers(0, len(x), 128)
        counts = None
        for m in net:
            if hasattr(m, "reset_mem"):
                m.reset_mem()
        for xt in torch.from_numpy(spikes(x[idx], steps, int(rng.integers(1 << 31)))):
            out = net(xt)[0]
            counts = out if counts is None else counts + out
        loss = torch.nn.functional.cross_entropy(counts, torch.from_numpy(y[idx]).long())
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"trained {train_steps} steps in {time.perf_counter() - start:.0f} s")
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(weights) as tmp:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
    with atomic_path(graph) as tmp:
        nir.write(str(tmp), export_to_nir(net, torch.zeros(1, 784), ignore_dims=[0]))
    return graph


def load_net(folder: Path, graph: Path, hidden: int = HIDDEN):
    from safetensors.torch import load_file

    net = build(hidden)
    net.load_state_dict(load_file(str(graph.with_suffix(".safetensors"))), strict=False)
    return net.eval()


def accuracy_rows(net, models: dict[str, Any], x: np.ndarray, y: np.ndarray, steps: int, seed: int) -> list[dict]:
    """Accuracy of snnTorch and of every runtime model over the test set; output spike agreement with snnTorch
    (every step, unit and sample) and the share of samples given snnTorch's predicted class."""
    preds: dict[str, list] = {"snntorch": [], **{k: [] for k in models}}
    agree: dict[str, list] = {k: [] for k in models}
    streams = {k: m.stream() for k, m in models.items()}
    for c in range(0, len(x), CHUNK):
        xs = spikes(x[c:c + CHUNK], steps, seed + c)     # (T, B, 784)
        ref = snn_spikes(net, xs)                        # (T, B, 10)
        preds["snntorch"].append(ref.sum(0).argmax(1))
        for k, s in streams.items():
            got = model_spikes(s, xs, getattr(models[k], "max_batch", None))
            preds[k].append(got.sum(0).argmax(1))
            agree[k].append(float((got == ref).mean()))
    pred = {k: np.concatenate(v) for k, v in preds.items()}
    rows = []
    for k, p in pred.items():
        acc = 100.0 * float((p == y).mean())
        rows.append({"path": k, "accuracy": acc, "accuracy_drop": 100.0 * float((pred["snntorch"] == y).mean()) - acc,
                     "spike_agreement_%": 100.0 * float(np.mean(agree[k])) if k in agree else None,
                     "same_class_%": 100.0 * float((p == pred["snntorch"]).mean())})
    return rows


def _timed(fn: Callable[[np.ndarray], Any], xs: list[np.ndarray]) -> Callable[[], float]:
    """A measurement: seconds per sample of ``fn`` over the samples ``xs``."""
    def run() -> float:
        start = time.perf_counter()
        for sample in xs:
            fn(sample)
        return (time.perf_counter() - start) / len(xs)
    return run


def latency(net, models: dict[str, Any], x: np.ndarray, steps: int, rounds: int,
            samples: int = 16) -> dict[str, list[float]]:
    """Seconds per sample at batch 1 (T steps): snnTorch eager, and every runtime model through Stream.run
    (name) and through T Stream.step calls (name + " (step)"), in turns, round by round."""
    xs = [spikes(x[i:i + 1], steps, i) for i in range(samples)]
    measures: dict[str, Callable[[], float]] = {"snntorch": _timed(lambda s: snn_spikes(net, s), xs)}
    for k, m in models.items():
        st = m.stream()
        measures[k] = _timed(lambda s, st=st: stream_spikes(st, s), xs)
        if not isinstance(m, RoundTrip):
            measures[k + " (step)"] = _timed(lambda s, st=st: step_spikes(st, s), xs)
    for m in measures.values():
        m()                                              # warm up
    return interleave(measures, rounds)


class RoundTrip:
    """snnTorch's own importer (snntorch.import_nir) on the NIR file, with the runtime stream's step/run/reset."""

    max_batch = None

    def __init__(self, graph: Path) -> None:
        import nir
        import torch
        from snntorch.import_nir import import_from_nir

        torch.set_num_threads(1)
        self.net, self.state = import_from_nir(nir.read(str(graph))), None

    def stream(self) -> "RoundTrip":
        return self

    def reset(self) -> None:
        """Fresh state: the importer builds Leaky(init_hidden=True) modules, which keep their membrane inside
        (not in ``self.state``) from one call to the next, so each is reset too."""
        self.state = None
        for m in self.net.modules():
            if hasattr(m, "reset_mem"):
                m.reset_mem()

    def step(self, x: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        with torch.no_grad():
            out, self.state = self.net(torch.from_numpy(x), self.state)
        return {"output": out.numpy()}

    def run(self, xs: np.ndarray) -> dict[str, np.ndarray]:
        return {"output": np.stack([self.step(x)["output"] for x in xs])}


VARIANTS = (("zor-float32", {}),
            ("zor-int8", {"quantize": "int8", "device": "auto"}),
            ("zor-int8-all", {"quantize": "int8", "device": "auto", "spike_budget": 0.0, "max_drop": 100.0}),
            ("zor-sparse", {"path": "sparse"}),
            ("zor-auto", {"path": "auto", "device": "auto"}))


def export_variants(graph: Path, folder: Path, steps: int, calib: np.ndarray) -> tuple[dict[str, Path], dict, dict]:
    """The exports of the NIR file (``VARIANTS``; int8 and auto calibrated on ``calib``), what each export
    reported (fallback, spike agreement, the path plan), and the ones the importer refused, with its message."""
    from zor.export import export_nir

    from zor.common.errors import ZorError

    paths, reports, notes = {}, {}, {}
    calib_path = folder / "calibration.npy"
    np.save(calib_path, calib)
    for name, kw in VARIANTS:
        out = folder / f"{graph.stem}-{name}.onnx"
        if "quantize" in kw or kw.get("path") == "auto":
            kw = {**kw, "calibration": calib_path}
        try:
            res = export_nir(graph, out, dt=DT, steps=steps, **kw)
        except ZorError as exc:
            notes[name] = f"{type(exc).__name__}: {exc}"
            continue
        paths[name] = out
        q = res.quantization
        reports[name] = {"options": {k: str(v) for k, v in kw.items()}, "bytes": res.bytes,
                         "paths": res.paths.get("connections", []),
                         **({"fallback": q["fallback"], "spikes": q["spikes"], "class_agreement_%":
                             q["metric"]["candidate"], "connections": q["connections"]} if q["mode"] == "int8" else {})}
    return paths, reports, notes


@command
@click.option("--hidden", default=HIDDEN, type=click.IntRange(min=1), help="hidden LIF units (784 → H → 10)")
@click.option("--steps", default=25, help="time steps per sample (rate coding)")
@click.option("--train-steps", default=600, help="BPTT steps (batches of 128) when no cached network exists")
@click.option("--test", "n_test", default=10000, help="test samples for the accuracy (10000: the full set)")
@click.option("--calibration", "n_calib", default=2000,
              help="training images whose spikes calibrate int8 and auto (even rows) and validate int8 (odd rows)")
@click.option("--rounds", default=15, help="latency rounds (each: 16 samples per path, in turns)")
@click.option("--sweep-rounds", default=41, help="rounds of the auto-vs-dense sweep (each: 32 samples per file)")
@click.option("--sweep-only", is_flag=True, help="only the float32 export and the auto-vs-dense sweep")
@click.option("--seed", default=0)
@click.option("--out", default="benchmarks/results", help="folder for the cache and the JSON (result_paths)")
def main(hidden: int, steps: int, train_steps: int, n_test: int, n_calib: int, rounds: int, sweep_rounds: int, sweep_only: bool,
         seed: int, out: str) -> None:
    """snnTorch LIF classifier → NIR → runtime: accuracy, batch-1 latency, int8 and sparse (see the docstring)."""
    from zor.export import export_nir
    from zor.runtime import Model

    set_threads(1)
    folder, json_path = result_paths(Path(out), hidden, sweep_only)
    graph = train(folder, steps, train_steps, seed, hidden)
    x, y = load_images()["test"]
    x, y = x[:n_test], y[:n_test]
    xc = load_images()["train"][0][:n_calib]
    result: dict[str, Any] = {"hidden": hidden, "steps": steps, "test_samples": len(x), "calibration_samples": n_calib}
    if sweep_only:
        dense = folder / f"{graph.stem}-zor-float32.onnx"
        export_nir(graph, dense, dt=DT, steps=steps)
        models: dict[str, Any] = {"zor-float32": Model(dense, threads=1)}
    else:
        models = accuracy_and_latency(graph, folder, x, y, xc, steps, rounds, seed, result, hidden)
    from benchmarks.nir_fashion_sweep import sparse_sweep, sweep_report

    sweep = (sparse_sweep(graph, folder, models["zor-float32"], x, xc, steps, sweep_rounds)
             if "zor-float32" in models else [])
    result.update(sweep_report(sweep, hidden), sweep_rounds=sweep_rounds, environment=environment(1))
    for k, v in result.get("not_measured", {}).items():
        print(f"{k}: not measured: {v}")
    write_json(json_path, result)


def accuracy_and_latency(graph: Path, folder: Path, x: np.ndarray, y: np.ndarray, xc: np.ndarray, steps: int,
                         rounds: int, seed: int, result: dict[str, Any], hidden: int = HIDDEN) -> dict[str, Any]:
    """The exports, their accuracy and batch-1 latency against snnTorch (printed, and into ``result``); returns
    the runtime models by name."""
    from zor.runtime import Model

    net = load_net(folder, graph, hidden)
    paths, reports, notes = export_variants(graph, folder, steps, spikes(xc, steps, seed + 99_999))
    models: dict[str, Any] = {"snntorch-nir-roundtrip": RoundTrip(graph)}
    models.update({k: Model(p, threads=1) for k, p in paths.items()})
    rows = accuracy_rows(net, models, x, y, steps, seed)
    times = latency(net, models, x, steps, rounds)
    for r in rows:
        r["ms_per_sample"] = 1e3 * float(np.median(times[r["path"]]))
        r["speedup_vs_snntorch"] = paired_ratio(times["snntorch"], times[r["path"]])
        if r["path"] + " (step)" in times:
            r["ms_per_sample_step"] = 1e3 * float(np.median(times[r["path"] + " (step)"]))
            r["speedup_step"] = paired_ratio(times["snntorch"], times[r["path"] + " (step)"])
    print(format_table(rows, ["path", "accuracy", "accuracy_drop", "spike_agreement_%", "same_class_%",
                              "ms_per_sample", "speedup_vs_snntorch", "ms_per_sample_step", "speedup_step"]))
    result.update(rows=rows, exports=reports, not_measured=notes, latency_rounds_s=times)
    return models


if __name__ == "__main__":
    main()
