"""A rate-coded snnTorch LIF classifier on Fashion-MNIST, exported through NIR and run on the runtime (issue 24).

    python -m benchmarks.nir_fashion            # prints the table, writes benchmarks/results/nir_fashion.json

The network: 784 → Linear 128 → Leaky → Linear 10 → Leaky (reset "zero", per-unit β = 0.9), T steps of
Bernoulli spikes (P = pixel intensity), class = most output spikes (ties: lowest index, in both). snnTorch's Leaky is

    v_t = β (1 − s_{t−1}) v_{t−1} + W x_t + b,   s_t = [v_t > θ]

which NIR's LIF at dt = 1e-4 (snnTorch's export dt, forward Euler) states exactly (docs/nir-frameworks.md).
Figures, all in one run on the same spike inputs:

- accuracy of snnTorch's eager forward and of the runtime's stream on the full test set, and the share of test
  samples whose output spike counts agree exactly;
- per-sample latency at batch 1 on one thread (torch.set_num_threads(1), Model(threads=1)): T steps each,
  snnTorch eager against Model.stream(); the speed-up is the median over rounds of the per-round ratio;
- the same figures for snnTorch's own importer of its own file (snntorch.import_nir): the framework's round trip;
- the int8 export (accuracy drop, output spike agreement) and the sparse path against dense, where the
  importer offers them (an export that refuses is reported with its message, not as a figure).

The trained network is cached under benchmarks/results/nir_fashion/ (safetensors + the NIR file), never in git.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

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
HIDDEN = 128         # hidden LIF units
CHUNK = 500          # test samples per batch when measuring accuracy


def build():
    import snntorch as snn
    import torch
    from torch import nn

    def leaky(n: int, **kw):
        return snn.Leaky(beta=torch.full((n,), 0.9), threshold=torch.ones(n), init_hidden=True,
                         reset_mechanism="zero", **kw)
    return nn.Sequential(nn.Linear(784, HIDDEN), leaky(HIDDEN), nn.Linear(HIDDEN, 10), leaky(10, output=True))


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
    """The runtime's stream over xs (T, B, 784): output spikes (T, B, 10)."""
    stream.reset()
    return np.stack([np.asarray(stream.step(x)["output"]) for x in xs])


def train(folder: Path, steps: int, train_steps: int, seed: int) -> Path:
    """Train (BPTT, Adam) or reuse the cached network; returns the NIR file written by snnTorch's exporter."""
    import nir
    import torch
    from safetensors.torch import save_file
    from snntorch.export_nir import export_to_nir

    from zor.common.fileio import atomic_path

    net = build()
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


def load_net(folder: Path, graph: Path):
    from safetensors.torch import load_file

    net = build()
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
            got = stream_spikes(s, xs)
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


def latency(net, models: dict[str, Any], x: np.ndarray, steps: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per sample at batch 1 (T steps), snnTorch eager and every runtime model, in turns."""
    xs = [spikes(x[i:i + 1], steps, i) for i in range(8)]
    streams = {k: m.stream() for k, m in models.items()}

    def timed(fn: Callable[[np.ndarray], Any]) -> Callable[[], float]:
        def run() -> float:
            start = time.perf_counter()
            for sample in xs:
                fn(sample)
            return (time.perf_counter() - start) / len(xs)
        return run
    measures = {"snntorch": timed(lambda s: snn_spikes(net, s)),
                **{k: timed(lambda s, st=st: stream_spikes(st, s)) for k, st in streams.items()}}
    for m in measures.values():
        m()                                              # warm up
    return interleave(measures, rounds)


class RoundTrip:
    """snnTorch's own importer (snntorch.import_nir) on the NIR file, with the runtime stream's step/reset."""

    def __init__(self, graph: Path) -> None:
        import nir
        import torch
        from snntorch.import_nir import import_from_nir

        torch.set_num_threads(1)
        self.net, self.state = import_from_nir(nir.read(str(graph))), None

    def stream(self) -> "RoundTrip":
        return self

    def reset(self) -> None:
        self.state = None

    def step(self, x: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        with torch.no_grad():
            out, self.state = self.net(torch.from_numpy(x), self.state)
        return {"output": out.numpy()}


def export_variants(graph: Path, folder: Path, steps: int, calib: np.ndarray) -> tuple[dict[str, Path], dict]:
    """Float, int8 and sparse exports of the NIR file; an export the importer refuses is noted, not measured."""
    from zor.common.errors import ZorError

    try:
        from zor.export import export_nir
    except ImportError:
        return {}, {"zor-*": "the NIR importer (zor.export.export_nir) is not in this tree"}

    paths, notes = {}, {}
    calib_path = folder / "calibration.npy"
    np.save(calib_path, calib)
    for name, kw in (("zor-float32", {}), ("zor-int8", {"quantize": "int8", "calibration": calib_path}),
                     ("zor-sparse", {"path": "sparse"})):
        out = folder / f"{graph.stem}-{name}.onnx"
        try:
            export_nir(graph, out, dt=DT, steps=steps, **kw)
            paths[name] = out
        except (ZorError, TypeError, ValueError) as exc:
            notes[name] = f"{type(exc).__name__}: {exc}"
    return paths, notes


@command
@click.option("--steps", default=25, help="time steps per sample (rate coding)")
@click.option("--train-steps", default=600, help="BPTT steps (batches of 128) when no cached network exists")
@click.option("--test", "n_test", default=10000, help="test samples for the accuracy (10000: the full set)")
@click.option("--rounds", default=7, help="latency rounds (each: 8 samples per path, in turns)")
@click.option("--seed", default=0)
@click.option("--out", default="benchmarks/results", help="folder for the cache and nir_fashion.json")
def main(steps: int, train_steps: int, n_test: int, rounds: int, seed: int, out: str) -> None:
    """snnTorch LIF classifier → NIR → runtime: accuracy, batch-1 latency, int8 and sparse (see the docstring)."""
    from zor.runtime import Model

    set_threads(1)
    folder = Path(out) / "nir_fashion"
    graph = train(folder, steps, train_steps, seed)
    net = load_net(folder, graph)
    x, y = load_images()["test"]
    x, y = x[:n_test], y[:n_test]
    paths, notes = export_variants(graph, folder, steps, spikes(x[:64], steps, seed + 99_999))
    models: dict[str, Any] = {"snntorch-nir-roundtrip": RoundTrip(graph)}
    models.update({k: Model(p, threads=1) for k, p in paths.items()})
    rows = accuracy_rows(net, models, x, y, steps, seed)
    times = latency(net, models, x, steps, rounds)
    for r in rows:
        r["ms_per_sample"] = 1e3 * float(np.median(times[r["path"]]))
        r["speedup_vs_snntorch"] = paired_ratio(times["snntorch"], times[r["path"]])
    print(format_table(rows, ["path", "accuracy", "accuracy_drop", "spike_agreement_%", "same_class_%",
                              "ms_per_sample", "speedup_vs_snntorch"]))
    for k, v in notes.items():
        print(f"{k}: not measured: {v}")
    write_json(Path(out) / "nir_fashion.json", {"rows": rows, "not_measured": notes, "steps": steps,
                                                "test_samples": len(x), "latency_rounds_s": times,
                                                "environment": environment(1)})


if __name__ == "__main__":
    main()
