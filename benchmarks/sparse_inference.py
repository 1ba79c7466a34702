"""Sparse (event-driven) inference: cost against spike rate, quality against latency, memory.

Usage (from the repository root):
    python -m benchmarks.sparse_inference [--json PATH] [--png PATH] [--quick]
        [--threads 1] [--repeats 5] [--calls 30] [--skip-memory] [--skip-quality]

All timings are ``zor.runtime.Model.run`` calls at batch 1 on one onnxruntime thread,
on the profile detected for this machine, medians over ``--repeats`` interleaved
repeats of the p50 over ``--calls`` calls, each call on a different input drawn at the
same activity (so the active rows differ from call to call, as in a stream).

1. **Layer sweep** (``--width`` 4096): ``Zor([Layer(n, θ = 0.5), Layer(n)])``, one
   n × n float32 connection out of a spiking layer. Inputs with exactly r·n units above
   θ, for r from 1 % to 100 %. Files: ``dense``, ``sparse`` (batch-1 form) and ``auto``,
   both exported per rate with that rate's inputs as calibration data (the measured rate
   sets the sparse form's row groups, and auto picks dense or sparse from the profile's
   break-even), ``int8 sparse`` (int8 rows, integer product, values quantized per call) and ``int8
   dense`` (the exporter's int8 QDQ graph), both exported once with 10 % calibration rows. Pairs are
   compared like with like: sparse against dense in float32, int8 sparse against int8 dense (and,
   only as a second figure, against float32 dense).
   Reported per rate: latency of each, sparse speed-up over dense (the median over the
   repeats of dense / sparse within each repeat, :func:`benchmarks.common.paired_ratio`; the ratio of the
   two medians is kept in the JSON beside it), auto against the
   better of dense and sparse, the largest output difference from dense, and the
   floor: per-call overhead (the sparse file at 0 % activity: input checks, session
   call, the nodes with no rows) + bytes of the active rows / memory bandwidth, where
   the bandwidth is the larger of (a) a single-thread numpy read of 256 MiB
   (``ndarray.sum``) and (b) the dense file's own rate, n·n·4 bytes per dense call.
2. **Break-even**: the rate where sparse and dense cost the same, interpolated on the
   sweep, at 4096 and at smaller widths: the (synapses, rate) points of the profile's
   ``sparse_curve``. ``auto`` is judged by its choice: the latency of the path it chose
   over the better of the two measured (its own file is timed too, and shown; it is one
   of the two graphs, so the difference between them is the machine's noise).
3. **Small batches**: the union form (``--max-batch 8``) against dense at batch 2, 4, 8.
4. **Quality against latency**: the few-shot autoencoder (784-128-784) and a wide one
   (784-2048-784) trained on 10 bundled Fashion-MNIST images with threshold homeostasis
   targets t for the input and hidden layers (``Layer(target_activation=t)``); per t the
   spike rates and PSNR / 100·(1 − MAE) on the 500 bundled test images, and the latency
   of the dense, sparse and auto exports. Plotted as quality against latency (PNG).
5. **Memory**: ``Zor([Layer(4096), Layer(H), Layer(4096)])`` with H chosen so that the
   weights are ≥ 2× the imposed limit, exported ``--path sparse --external-weights``,
   thresholds set for ≈ 10 % activity. A child process limits its own address space
   with ``resource.setrlimit(RLIMIT_AS)`` (every byte it maps counts: heap, stacks,
   libraries, file mappings; so the weights can be neither loaded nor mapped whole),
   runs the model with ``weights="rows"`` and reports its peak RSS (VmHWM) and
   outputs, compared with the dense model (torch engine and the dense ONNX graph, in
   this process, without limit). The same child with ``weights="load"`` must fail.

Prints tables and, with ``--json``/``--png``, writes the figures and the plot.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import click
import numpy as np

from benchmarks import common
from benchmarks.common import paired_ratio
from benchmarks.sparse_common import (
    THETA,
    crossover,
    effective_break_even,
    export_here,
    fit_min_synapses,
    floor_ms,
    inputs_at,
    medians,
    memory_demo,
    p50_interleaved,
    p50_ms,
    p50_repeats,
    read_bandwidth,
    runtime_model,
)
from benchmarks.sparse_report import report_text, save_png, targets

__all__ = ["main", "inputs_at", "p50_repeats", "p50_interleaved", "crossover", "fit_min_synapses", "floor_ms",
           "layer_sweep", "width_break_even", "batch_sweep", "quality_sweep", "memory_demo", "targets", "THETA",
           "QUICK_RATES"]

RATES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)
QUICK_RATES = (0.05, 0.1, 0.5, 1.0)


# --------------------------------------------------------------------------- 1-2: layer sweep, break-even
def layer_sweep(folder: Path, n: int, rates: tuple, calls: int, repeats: int, threads: int,
                pool: int = 32) -> dict[str, Any]:
    """Dense / sparse / auto / int8-sparse latency of one n × n connection across ``rates`` (see module doc)."""
    from zor import Layer, Zor

    net = Zor([Layer(n, threshold=THETA), Layer(n)], seed=0, device="cpu")
    calib10 = inputs_at(n, 0.1, 64, seed=99)
    files = {"dense": export_here(net, folder / f"l{n}-dense.onnx", path="dense"),
             "int8 sparse": export_here(net, folder / f"l{n}-int8-sparse.onnx", path="sparse", quantize="int8",
                                        calibration=calib10, max_drop=100.0),
             "int8 dense": export_here(net, folder / f"l{n}-int8-dense.onnx", path="dense", quantize="int8",
                                       calibration=calib10, max_drop=100.0)}
    models = {k: runtime_model(p, threads) for k, p in files.items()}
    profile = models["dense"].profile
    zero = inputs_at(n, 0.0, pool, seed=7)
    sparse0 = runtime_model(export_here(net, folder / f"l{n}-sparse-0.onnx", path="sparse", calibration=zero), threads)
    overhead = p50_interleaved({"sparse": sparse0.run, "dense": models["dense"].run}, zero, calls, repeats)
    del sparse0
    bw_numpy = read_bandwidth()
    old_groups = replace(profile, sparse_group_bytes=2 << 20, sparse_single_group_bytes=4 << 20, sparse_max_groups=16)
    rows = [_sweep_row(net, folder, n, r, models, old_groups, pool, calls, repeats, threads) for r in rates]
    bw_dense = float(np.median([n * n * 4 / (row["dense_ms"] / 1e3) / 1e9 for row in rows]))
    bw = max(bw_numpy, bw_dense)
    for row in rows:
        row["floor_ms"] = floor_ms(overhead["sparse"], row["active_rows"], n * 4, bw)
        row["sparse_vs_floor"] = row["sparse_ms"] / row["floor_ms"]
        row["int8_floor_ms"] = floor_ms(overhead["sparse"], row["active_rows"], n, bw)
        row["int8_sparse_vs_floor"] = row["int8_sparse_ms"] / row["int8_floor_ms"]
    r_star = crossover([r["rate"] for r in rows], [r["dense_ms"] for r in rows], [r["sparse_ms"] for r in rows])
    r_int8 = crossover([r["rate"] for r in rows], [r["int8_dense_ms"] for r in rows],
                       [r["int8_sparse_ms"] for r in rows])
    return {"width": n, "profile": profile.name, "profile_break_even": profile.sparse_break_even,
            "profile_min_synapses": getattr(profile, "sparse_min_synapses", None),
            "profile_effective_break_even": effective_break_even(profile, (n, n)),
            "overhead_ms": overhead, "bandwidth_gbs": {"numpy_sum_256MiB": bw_numpy, "dense_gemv": bw_dense,
                                                       "used": bw},
            "rows": rows, "break_even_measured": r_star, "break_even_int8_measured": r_int8}


def _sweep_row(net: Any, folder: Path, n: int, r: float, models: dict, old_groups: Any, pool: int, calls: int,
               repeats: int, threads: int) -> dict[str, Any]:
    """One rate of the layer sweep: sparse and auto exported for it (and sparse with the row groups sized as
    before the profile had its own, ``old_groups``), every runner timed in turns, outputs against dense."""
    xs = inputs_at(n, r, pool, seed=int(r * 1000) + 1)
    sparse = runtime_model(export_here(net, folder / f"l{n}-sparse-{r:g}.onnx", path="sparse", calibration=xs), threads)
    auto = runtime_model(export_here(net, folder / f"l{n}-auto-{r:g}.onnx", path="auto", calibration=xs), threads)
    before = runtime_model(export_here(net, folder / f"l{n}-sparse-old-{r:g}.onnx", path="sparse", calibration=xs,
                                       device=old_groups, verify_model=False), threads)
    runners = {"dense": models["dense"].run, "sparse": sparse.run, "auto": auto.run, "sparse, 2 MiB groups": before.run,
               "int8 sparse": models["int8 sparse"].run, "int8 dense": models["int8 dense"].run}
    rounds = p50_repeats(runners, xs, calls, repeats)
    t = medians(rounds)
    ref = np.concatenate([models["dense"].run(x[None])["output"] for x in xs])
    diff = {k: float(np.max(np.abs(np.concatenate([m.run(x[None])["output"] for x in xs]) - ref)))
            for k, m in (("sparse", sparse), ("auto", auto), ("int8 sparse", models["int8 sparse"]))}
    auto_choice = auto.metadata.sparse_connections
    return {"rate": r, "active_rows": int(round(r * n)), "groups": sparse.metadata.paths["connections"][0]["groups"],
            "groups_before": before.metadata.paths["connections"][0]["groups"],
            "dense_ms": t["dense"], "sparse_ms": t["sparse"], "sparse_2mib_groups_ms": t["sparse, 2 MiB groups"],
            "auto_ms": t["auto"], "int8_sparse_ms": t["int8 sparse"], "int8_dense_ms": t["int8 dense"],
            "speedup_sparse": paired_ratio(rounds["dense"], rounds["sparse"]),
            "speedup_sparse_2mib_groups": paired_ratio(rounds["dense"], rounds["sparse, 2 MiB groups"]),
            "speedup_int8_sparse": paired_ratio(rounds["int8 dense"], rounds["int8 sparse"]),
            "speedup_int8_sparse_vs_float_dense": paired_ratio(rounds["dense"], rounds["int8 sparse"]),
            "speedup_sparse_of_medians": t["dense"] / t["sparse"],
            "speedup_sparse_rounds": [d / v for d, v in zip(rounds["dense"], rounds["sparse"])],
            "auto_path": "sparse" if auto_choice else "dense",
            "auto_vs_best": t["auto"] / min(t["dense"], t["sparse"]),
            "auto_choice_vs_best": (t["sparse"] if auto_choice else t["dense"]) / min(t["dense"], t["sparse"]),
            "max_abs_diff_sparse": diff["sparse"], "max_abs_diff_auto": diff["auto"],
            "max_abs_diff_int8_sparse": diff["int8 sparse"]}


def width_break_even(folder: Path, widths: tuple, rates: tuple, calls: int, repeats: int, threads: int,
                     r_be: Optional[float], precision: str = "float32") -> dict[str, Any]:
    """Crossover rate of dense vs sparse per width, and S₀ fitted against the wide-layer break-even ``r_be``;
    ``precision`` "int8": int8 sparse rows against the int8 dense graph (each exported with int8)."""
    from zor import Layer, Zor

    out = []
    q = {"quantize": "int8", "max_drop": 100.0} if precision == "int8" else {}
    for n in widths:
        net = Zor([Layer(n, threshold=THETA), Layer(n)], seed=0, device="cpu")
        d = runtime_model(export_here(net, folder / f"w{n}-{precision}-dense.onnx", path="dense", verify_model=False,
                                      calibration=inputs_at(n, 0.1, 32, seed=4), **q), threads)
        dense_ms, sparse_ms = [], []
        for r in rates:
            xs = inputs_at(n, r, 32, seed=3)
            s = runtime_model(export_here(net, folder / f"w{n}-{precision}-sparse-{r:g}.onnx", path="sparse",
                                          verify_model=False, calibration=xs, **q), threads)
            t = p50_interleaved({"dense": d.run, "sparse": s.run}, xs, calls, repeats)
            dense_ms.append(t["dense"])
            sparse_ms.append(t["sparse"])
        out.append({"width": n, "synapses": n * n, "rates": list(rates), "dense_ms": dense_ms, "sparse_ms": sparse_ms,
                    "break_even": crossover(list(rates), dense_ms, sparse_ms),
                    "profile_break_even": effective_break_even(d.profile, (n, n)) if precision == "float32" else None})
    s0 = fit_min_synapses(r_be, [(row["synapses"], row["break_even"]) for row in out]) if r_be else None
    return {"widths": out, "fitted_min_synapses": s0, "r_be": r_be,
            "curve": [[row["synapses"], row["break_even"]] for row in out if row["break_even"] is not None]}


# --------------------------------------------------------------------------- 3: small batches
def batch_sweep(folder: Path, n: int, batches: tuple, rates: tuple, calls: int, repeats: int,
                threads: int) -> list[dict[str, Any]]:
    """Union form (max batch 8) against dense at small batches."""
    from zor import Layer, Zor

    net = Zor([Layer(n, threshold=THETA), Layer(n)], seed=0, device="cpu")
    d = runtime_model(export_here(net, folder / f"b{n}-dense.onnx", path="dense", verify_model=False), threads)
    rows = []
    for r in rates:
        u = runtime_model(export_here(net, folder / f"b{n}-union-{r:g}.onnx", path="sparse", max_batch=max(batches),
                           calibration=inputs_at(n, r, 64, seed=77)), threads)
        for b in batches:
            xs = inputs_at(n, r, 16 * b, seed=b * 100 + int(r * 100)).reshape(16, b, n)
            per = common.interleave({"dense": lambda: p50_ms(d.run, xs, calls),
                                     "union": lambda: p50_ms(u.run, xs, calls)}, repeats)
            union_rate = float(np.mean([(x > THETA).any(axis=0).mean() for x in xs]))
            diff = float(max(np.abs(u.run(x)["output"] - d.run(x)["output"]).max() for x in xs))
            dm, um = float(np.median(per["dense"])), float(np.median(per["union"]))
            rows.append({"batch": b, "rate": r, "union_rate": union_rate, "dense_ms": dm, "union_ms": um,
                         "speedup": dm / um, "max_abs_diff": diff})
    return rows


# --------------------------------------------------------------------------- 4: quality against latency
TASK = {"name": "reconstruct", "input": {"shape": [784], "range": [0.0, 1.0],
                                         "image": {"height": 28, "width": 28, "channels": 1}},
        "output": {"shape": [784], "range": [0.0, 1.0]}}


def quality_sweep(folder: Path, hidden: int, targets: tuple, steps: int, calls: int, repeats: int,
                  threads: int, label: str) -> list[dict[str, Any]]:
    """Train the autoencoder 784-hidden-784 per homeostasis target; quality and dense/sparse/auto latency."""
    from zor import Layer, Zor
    from zor.common.metrics import reconstruction
    from zor.tasks.datasets import few_shot, load_bundled

    common.set_threads(threads)
    x, y = load_bundled("train")
    test, _ = load_bundled("test")
    rows = []
    for t in targets:
        net = Zor([Layer(784, target_activation=t, max_update_norm=0.5, homeostasis_rate=1.0),
                   Layer(hidden, target_activation=t, max_update_norm=0.5, homeostasis_rate=1.0),
                   Layer(784, target_activation=0.5, activation_function="sigmoid", max_update_norm=0.5,
                         homeostasis_rate=0.2)], seed=0, device="cpu", task=TASK)
        t0 = time.perf_counter()
        net.fit(x[few_shot(y, 1)], steps=steps, batch_size=10, progress=False)
        train_s = time.perf_counter() - t0
        files = {p: export_here(net, folder / f"{label}-t{t:g}-{p}.onnx", path=p) for p in ("dense", "sparse", "auto")}
        models = {p: runtime_model(f, threads) for p, f in files.items()}
        out = models["dense"].run(test, spikes=True)
        q = reconstruction(out["output"], test)
        lat = p50_interleaved({p: m.run for p, m in models.items()}, test[:64], calls, repeats)
        diff = float(max(np.abs(models["sparse"].run(r[None])["output"] - out["output"][i]).max()
                         for i, r in enumerate(test[:32])))
        rows.append({"model": label, "target": t, "train_s": train_s,
                     "spike_rates": [float(v) for v in out["spike_rates"][:-1]],
                     "psnr": q["psnr"], "seed_accuracy": q["accuracy"],
                     "dense_ms": lat["dense"], "sparse_ms": lat["sparse"], "auto_ms": lat["auto"],
                     "auto_sparse_connections": models["auto"].metadata.sparse_connections,
                     "speedup_sparse": lat["dense"] / lat["sparse"], "max_abs_diff_sparse": diff})
    return rows


@common.command
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write the figures as JSON.")
@click.option("--png", "png_path", type=click.Path(path_type=Path), default=None,
              help="Write the quality/latency plot as PNG.")
@click.option("--quick", is_flag=True, help="Smoke test: small widths, few rates and calls, no memory demo.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--calls", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--width", type=click.IntRange(min=8), default=4096, show_default=True)
@click.option("--limit-mib", type=click.IntRange(min=64), default=320, show_default=True,
              help="Address-space limit of the memory demonstration's child process.")
@click.option("--skip-memory", is_flag=True)
@click.option("--skip-quality", is_flag=True)
@click.option("--skip-batches", is_flag=True, help="No small-batch sweep (part 3).")
@click.option("--skip-int8", is_flag=True, help="No int8 break-even by width.")
def main(json_path: Optional[Path], png_path: Optional[Path], quick: bool, threads: int, repeats: int, calls: int,
         width: int, limit_mib: int, skip_memory: bool, skip_quality: bool, skip_batches: bool,
         skip_int8: bool) -> None:
    """Sparse inference benchmark (see the module docstring)."""
    common.check_json_folder(json_path)
    common.check_json_folder(png_path, "--png")
    common.set_threads(threads)
    if quick:
        width, repeats, calls = min(width, 512), min(repeats, 2), min(calls, 8)
    rates = QUICK_RATES if quick else RATES
    res: dict[str, Any] = {"threads": threads, "repeats": repeats, "calls": calls, "quick": quick,
                           "machine": {"cpu": common.cpu_name(), "cores": os.cpu_count(),
                                       "load_average": list(os.getloadavg())}}
    with tempfile.TemporaryDirectory(prefix="zor-sparse-bench-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        click.echo("layer sweep ...", err=True)
        res["layer_sweep"] = layer_sweep(folder, width, rates, calls, repeats, threads)
        click.echo("break-even by width ...", err=True)
        r_be = res["layer_sweep"]["break_even_measured"]
        widths = (128, 256) if quick else (256, 512, 1024, 2048)
        be_rates = (0.05, 0.2, 0.5) if quick else (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
        res["width_break_even"] = width_break_even(folder, widths, be_rates, calls, repeats, threads, r_be)
        if not skip_int8:
            click.echo("int8 break-even by width ...", err=True)
            res["width_break_even_int8"] = width_break_even(folder, widths, be_rates, calls, repeats, threads,
                                                            res["layer_sweep"]["break_even_int8_measured"], "int8")
        if not skip_batches:
            click.echo("small batches ...", err=True)
            res["batch_sweep"] = batch_sweep(folder, width, (2, 8) if quick else (2, 4, 8),
                                             (0.05,) if quick else (0.02, 0.05, 0.1), calls, repeats, threads)
        if not skip_quality:
            click.echo("quality sweep ...", err=True)
            targets_ = (0.05, 0.5) if quick else (0.02, 0.05, 0.1, 0.2, 0.5)
            steps = 30 if quick else 300
            wide = 256 if quick else 2048
            res["quality"] = (quality_sweep(folder, 128, targets_, steps, calls, repeats, threads, "few-shot 784-128-784")
                              + quality_sweep(folder, wide, targets_, steps, calls, repeats, threads,
                                              f"wide 784-{wide}-784"))
        if not (skip_memory or quick):
            click.echo("memory demonstration ...", err=True)
            hidden = int(math.ceil(2.2 * (limit_mib << 20) / (2 * 4096 * 4) / 512) * 512)
            res["memory"] = memory_demo(folder, limit_mib, hidden, calls=10)
        res["seconds"] = time.perf_counter() - t0
        res["machine"]["load_average_after"] = list(os.getloadavg())
    res["targets"] = targets(res)
    click.echo(report_text(res))
    if json_path is not None:
        common.write_json(json_path, res)
        click.echo(f"wrote {json_path}", err=True)
    if png_path is not None:
        save_png(res, png_path)
        click.echo(f"wrote {png_path}", err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
