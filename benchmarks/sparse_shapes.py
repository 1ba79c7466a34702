"""Sparse against dense by layer shape: where the event-driven form breaks even for non-square connections.

Usage (from the repository root):
    python -m benchmarks.sparse_shapes [--json PATH] [--calls 100] [--repeats 11] [--forms zor,nir]
    python -m benchmarks.sparse_shapes --fit-only --pool RUN1.json --pool RUN2.json ...   # fit several runs
    python -m benchmarks.sparse_shapes --bare-forms        # event-driven forms of a 784x128 node, bare sessions

One connection of n_in × n_out float32 synapses (N = n_in·n_out), batch 1, one onnxruntime thread, on
this machine's profile, for the shapes real imports have (784×128, 784×256, 128×10, 128×128, 256×256,
512×512, 1024×256, 256×1024, 784×10), in the two files the exporters write:

- ``zor``: ``Zor([Layer(n_in, θ = 0.5), Layer(n_out)])`` exported ``--path dense`` and ``--path sparse``
  (the batch-1 form, exported per rate with that rate's inputs so the row groups are the exporter's),
  timed through ``Model.run``; inputs with exactly r·n_in units above θ, a different one per call;
- ``nir``: Input(n_in) → Affine(n_out × n_in) → LIF(n_out) → Output exported through ``export_nir``
  dense and sparse (:func:`zor.export.nir.layers.affine_sparse`), timed through ``Stream.step``;
  binary inputs with exactly r·n_in ones.

Per shape and rate, dense and sparse take turns (``p50_repeats``: the p50 over ``--calls`` calls, in each
of ``--repeats`` rounds). The crossover r* is read two ways: interpolated on the measured ratios
(:func:`benchmarks.sparse_common.crossover`), and from straight lines (dense: its median over the rates,
sparse: least squares over the rates, sparse(r) = s₀ + s₁·r), r* = (dense − s₀)/s₁. Then, per form, the
cost model across every shape and rate (least squares, :func:`fit_costs`):

    dense = a_d + b_d·N,   sparse = a_s + c·n_in + r·(f·n_in + e·N)
    ⇒  r*(n_in, n_out) = r_be·(1 − S₀/N − k/n_out)/(1 + φ/n_out)
       with r_be = b_d/e,  S₀ = (a_s − a_d)/b_d,  k = c/b_d,  φ = f/e

and the same formula fitted to the median measured crossover of each shape over the runs
(:func:`fit_crossovers`): the four numbers a device profile holds (``zor.devices.SparseShape``, read by
``zor.export.paths.effective_break_even``), from the ``zor`` form. Prints the table and the fits; writes JSON.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import click
import numpy as np

from benchmarks import common
from benchmarks.sparse_common import (
    THETA,
    crossover,
    export_here,
    inputs_at,
    medians,
    p50_repeats,
    runtime_model,
)

__all__ = ["SHAPES", "RATES", "zor_shape", "nir_shape", "line_crossover", "shape_rate", "fit_costs", "fit_crossovers",
           "measure", "models", "bare_forms_run", "main"]

SHAPES = ((784, 128), (784, 256), (128, 10), (128, 128), (256, 256), (512, 512), (1024, 256), (256, 1024),
          (784, 10))
RATES = (0.0, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5)
DT = 1e-4


def zor_shape(folder: Path, n_in: int, n_out: int, rates: tuple, calls: int, repeats: int) -> dict[str, Any]:
    """Dense and sparse ``Model.run`` p50 (ms) per rate of one Zor connection n_in × n_out (see module doc)."""
    from zor import Layer, Zor

    net = Zor([Layer(n_in, threshold=THETA), Layer(n_out)], seed=0, device="cpu")
    tag = f"z{n_in}x{n_out}"
    dense = runtime_model(export_here(net, folder / f"{tag}-dense.onnx", path="dense", verify_model=False), 1)
    dense_ms, sparse_ms = [], []
    for r in rates:
        xs = inputs_at(n_in, r, 32, seed=3)
        sparse = runtime_model(export_here(net, folder / f"{tag}-sparse-{r:g}.onnx", path="sparse",
                                           verify_model=False, calibration=xs), 1)
        t = medians(p50_repeats({"dense": dense.run, "sparse": sparse.run}, xs, calls, repeats))
        dense_ms.append(t["dense"])
        sparse_ms.append(t["sparse"])
    return {"dense_ms": dense_ms, "sparse_ms": sparse_ms}


def _nir_graph(n_in: int, n_out: int) -> Any:
    import nir

    rng = np.random.default_rng(0)
    f = np.float32
    lif = nir.LIF(tau=np.full(n_out, 1e-3, f), r=np.ones(n_out, f), v_leak=np.zeros(n_out, f),
                  v_threshold=np.ones(n_out, f), v_reset=np.zeros(n_out, f))
    return nir.NIRGraph(nodes={"input": nir.Input(np.array([n_in])),
                               "a": nir.Affine(rng.normal(0, 0.3, (n_out, n_in)).astype(f), np.zeros(n_out, f)),
                               "l": lif, "output": nir.Output(np.array([n_out]))},
                        edges=[("input", "a"), ("a", "l"), ("l", "output")])


def nir_shape(folder: Path, n_in: int, n_out: int, rates: tuple, calls: int, repeats: int) -> dict[str, Any]:
    """Dense and sparse ``Stream.step`` p50 (ms) per rate of one NIR Affine n_out × n_in + LIF (see module doc)."""
    from zor.export import export_nir
    from zor.runtime import Model

    graph = _nir_graph(n_in, n_out)
    streams = {}
    for path in ("dense", "sparse"):
        out = folder / f"n{n_in}x{n_out}-{path}.onnx"
        export_nir(graph, out, dt=DT, steps=4, path=path, device="auto", verify_model=False)
        streams[path] = Model(out, device="auto", threads=1).stream()
    dense_ms, sparse_ms = [], []
    for r in rates:
        xs = (inputs_at(n_in, r, 32, seed=3) > THETA).astype(np.float32)
        t = medians(p50_repeats({p: s.step for p, s in streams.items()}, xs, calls, repeats))
        dense_ms.append(t["dense"])
        sparse_ms.append(t["sparse"])
    return {"dense_ms": dense_ms, "sparse_ms": sparse_ms}


def line_crossover(rates: list[float], dense_ms: list[float], sparse_ms: list[float]) -> dict[str, float]:
    """Straight lines through one shape's figures: dense = its median, sparse = s₀ + s₁·r (least squares);
    r* = (dense − s₀)/s₁, clipped to [0, 1] (a flat or falling sparse line: 1 below dense, 0 above it)."""
    s1, s0 = np.polyfit(np.asarray(rates, float), np.asarray(sparse_ms, float), 1)
    d = float(np.median(dense_ms))
    r = (d - s0) / s1 if s1 > 0 else (1.0 if s0 < d else 0.0)
    return {"dense_median_ms": d, "sparse_at_0_ms": float(s0), "sparse_per_rate_ms": float(s1),
            "break_even_line": float(min(1.0, max(0.0, r)))}


def shape_rate(p: dict[str, float], n_in: float, n_out: float) -> float:
    """r*(n_in, n_out) = r_be·(1 − S₀/N − k/n_out)/(1 + φ/n_out), clipped to [0, 1] (zor.devices.SparseShape)."""
    r = p["break_even"] * (1 - p["min_synapses"] / (n_in * n_out) - p["row_synapses"] / n_out) \
        / (1 + p["active_row_synapses"] / n_out)
    return float(min(1.0, max(0.0, r)))


def fit_costs(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The timings' cost model (µs), least squares over every shape and rate: dense = a_d + b_d·N, sparse =
    a_s + c·n_in + r·(f·n_in + e·N); and the profile fields it implies (r_be = b_d/e, S₀ = (a_s − a_d)/b_d,
    k = c/b_d, φ = f/e)."""
    xs, ys, xd, yd = [], [], [], []
    for row in rows:
        n_in, n = row["n_in"], row["n_in"] * row["n_out"]
        for r, s, d in zip(row["rates"], row["sparse_ms"], row["dense_ms"]):
            xs.append([1.0, n_in, r * n_in, r * n])
            ys.append(1e3 * s)
            xd.append([1.0, n])
            yd.append(1e3 * d)
    (a_s, c, f, e), *_ = np.linalg.lstsq(np.asarray(xs), np.asarray(ys), rcond=None)
    (a_d, b_d), *_ = np.linalg.lstsq(np.asarray(xd), np.asarray(yd), rcond=None)
    return {"a_d_us": float(a_d), "b_d_us": float(b_d), "a_s_us": float(a_s), "c_us": float(c), "f_us": float(f),
            "e_us": float(e), "break_even": float(b_d / e), "min_synapses": float((a_s - a_d) / b_d),
            "row_synapses": float(c / b_d), "active_row_synapses": float(f / e)}


def fit_crossovers(points: list[tuple[int, int, float]], phis: np.ndarray = np.arange(0.0, 1000.0, 1.0)
                   ) -> dict[str, float]:
    """r_be, S₀, k, φ fitted to measured crossovers (n_in, n_out, r*; 0 where sparse never paid): for each φ
    on a grid, least squares of r* = (r_be − r_be·S₀/N − r_be·k/n_out)/(1 + φ/n_out), linear in (r_be, r_be·S₀,
    r_be·k) (a "never" point only while the model puts it above 0), then the φ whose clipped r* are nearest the
    measured ones (rms)."""
    n_in, n_out, r = (np.asarray(v, float) for v in zip(*points))
    best: dict[str, float] = {}
    for phi in phis:
        use = np.ones(len(r), bool)
        for _ in range(5):
            w = 1 / (1 + phi / n_out[use])                   # so that each residual is one in r* itself
            a = np.stack([np.ones(use.sum()), -1 / (n_in * n_out)[use], -1 / n_out[use]], axis=1) * w[:, None]
            (rb, big_a, big_k), *_ = np.linalg.lstsq(a, r[use], rcond=None)
            raw = (rb - big_a / (n_in * n_out) - big_k / n_out) / (1 + phi / n_out)
            keep = (r > 0) | (raw > 0)
            if (keep == use).all():
                break
            use = keep
        if rb <= 0:
            continue
        p = {"break_even": float(min(1.0, rb)), "min_synapses": float(max(0.0, big_a / rb)),
             "row_synapses": float(max(0.0, big_k / rb)), "active_row_synapses": float(phi)}
        err = np.asarray([shape_rate(p, i, o) for i, o in zip(n_in, n_out)]) - r
        p["rms"], p["max_abs_error"] = float(np.sqrt(np.mean(err ** 2))), float(np.abs(err).max())
        if not best or p["rms"] < best["rms"]:
            best = p
    return best


def measure(folder: Path, form: str, shapes: tuple, rates: tuple, calls: int, repeats: int) -> list[dict[str, Any]]:
    """Every shape of one form (``zor`` or ``nir``): the figures and both crossovers."""
    run = zor_shape if form == "zor" else nir_shape
    rows = []
    for n_in, n_out in shapes:
        click.echo(f"{form} {n_in}x{n_out} ...", err=True)
        t = run(folder, n_in, n_out, rates, calls, repeats)
        rows.append({"form": form, "n_in": n_in, "n_out": n_out, "synapses": n_in * n_out, "rates": list(rates),
                     **t, "break_even_measured": crossover(list(rates), t["dense_ms"], t["sparse_ms"]),
                     **line_crossover(list(rates), t["dense_ms"], t["sparse_ms"])})
    return rows


def models(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per form: the cost fit over its rows, and the crossover fit to the median r* of each shape over the runs
    (a shape where sparse never paid counts 0); each row gets r* from its form's cost fit and from the ``zor``
    form's crossover fit (the profile's ``sparse_shape``; both exporters' connections are read by it)."""
    out: dict[str, Any] = {}
    for form in dict.fromkeys(r["form"] for r in rows):
        mine = [r for r in rows if r["form"] == form]
        shapes = dict.fromkeys((r["n_in"], r["n_out"]) for r in mine)
        med = [(i, o, float(np.median([r["break_even_measured"] or 0.0 for r in mine
                                       if (r["n_in"], r["n_out"]) == (i, o)]))) for i, o in shapes]
        out[form] = {"costs": fit_costs(mine), "crossovers": fit_crossovers(med),
                     "median_break_even": [list(m) for m in med], "runs": len(mine) // max(1, len(shapes))}
    profile = out.get("zor", next(iter(out.values())))["crossovers"]
    for row in rows:
        row["break_even_costs"] = shape_rate(out[row["form"]]["costs"], row["n_in"], row["n_out"])
        row["break_even_fit"] = shape_rate(profile, row["n_in"], row["n_out"])
    return out


def _text(res: dict[str, Any]) -> str:
    rows = [{**r, "shape": f"{r['n_in']}x{r['n_out']}", "dense_us": 1e3 * r["dense_median_ms"],
             "sparse0_us": 1e3 * r["sparse_at_0_ms"], "slope_us": 1e3 * r["sparse_per_rate_ms"]}
            for r in res["rows"]]
    out = [common.format_table(
        rows, ["form", "shape", "synapses", "dense_us", "sparse0_us", "slope_us", "break_even_measured",
               "break_even_line", "break_even_costs", "break_even_fit"],
        ["form", "shape", "N", "dense µs", "sparse µs, r=0", "sparse µs per r", "r* measured", "r* lines",
         "r* cost fit", "r* profile fit"],
        digits={"dense_us": 2, "sparse0_us": 2, "slope_us": 2, "break_even_measured": 3, "break_even_line": 3,
                "break_even_costs": 3, "break_even_fit": 3}, align="right")]
    top = max(i * o for m in res["models"].values() for i, o, _ in m["median_break_even"])
    for form, m in res["models"].items():
        c, x = m["costs"], m["crossovers"]
        out.append(f"{form}: cost fit: dense = {c['a_d_us']:.2f} µs + {1e3 * c['b_d_us']:.4f} ns·N; sparse = "
                   f"{c['a_s_us']:.2f} µs + {1e3 * c['c_us']:.3f} ns·n_in + r·({1e3 * c['f_us']:.2f} ns·n_in + "
                   f"{1e3 * c['e_us']:.4f} ns·N)  ⇒  r_be {c['break_even']:.3f}, S₀ {c['min_synapses']:.0f}, "
                   f"k {c['row_synapses']:.1f}, φ {c['active_row_synapses']:.1f}")
        out.append(f"{form}: fit to the median crossovers of {m['runs']} run(s) (rms {x['rms']:.3f}, largest error "
                   f"{x['max_abs_error']:.3f}): SparseShape(break_even={x['break_even']:.3f}, min_synapses="
                   f"{x['min_synapses']:.0f}, row_synapses={x['row_synapses']:.1f}, active_row_synapses="
                   f"{x['active_row_synapses']:.0f}, max_synapses={top})")
        out.append("   medians: " + ", ".join(f"{i}x{o} {r:.3f}" for i, o, r in m["median_break_even"]))
    return "\n".join(out)


# --------------------------------------------------------------------------- event-driven forms, bare sessions
def _bare_graphs(w_t: np.ndarray, b: np.ndarray) -> dict[str, bytes]:
    """y = x W_t + b for a (1, n_in) input of 0/1 events, in four standard-operator forms (serialized models)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n_in = w_t.shape[0]
    inits = {"W": w_t, "b": b, "flat": np.asarray([n_in], np.int64), "axis0": np.asarray([0], np.int64),
             "axis1": np.asarray([1], np.int64)}
    mask = [helper.make_node("Reshape", ["x", "flat"], ["f"]), helper.make_node("Cast", ["f"], ["mask"], to=9)]
    forms = {
        "dense: MatMul, Add": [helper.make_node("MatMul", ["x", "W"], ["m"])],
        "Compress, MatMul (NIR's)": mask + [helper.make_node("Compress", ["W", "mask"], ["rows"], axis=0),
                                             helper.make_node("Compress", ["x", "mask"], ["v"], axis=1),
                                             helper.make_node("MatMul", ["v", "rows"], ["m"])],
        "Compress, ReduceSum": mask + [helper.make_node("Compress", ["W", "mask"], ["rows"], axis=0),
                                       helper.make_node("ReduceSum", ["rows", "axis0"], ["m"], keepdims=1)],
        "NonZero, Gather, ReduceSum": [helper.make_node("Reshape", ["x", "flat"], ["f"]),
                                       helper.make_node("NonZero", ["f"], ["idx"]),
                                       helper.make_node("Gather", ["W", "idx"], ["rows"], axis=0),
                                       helper.make_node("ReduceSum", ["rows", "axis1"], ["m"], keepdims=0)]}
    out = {}
    for name, nodes in forms.items():
        nodes = nodes + [helper.make_node("Add", ["m", "b"], ["y"])]
        used = {i for n in nodes for i in n.input}
        graph = helper.make_graph(nodes, "form",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_in])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, w_t.shape[1]])],
                                  [numpy_helper.from_array(v, k) for k, v in inits.items() if k in used])
        out[name] = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
        onnx.checker.check_model(out[name])
    return out


def bare_forms_run(n_in: int, n_out: int, rates: tuple, calls: int, repeats: int) -> list[dict[str, Any]]:
    """µs per call (p50, median over ``repeats`` rounds, the forms in turns) of each form in bare onnxruntime
    sessions (one thread), per rate of 0/1 inputs; every form's output checked against dense (|Δ| ≤ 1e-4)."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    w_t, b = rng.normal(0, 0.3, (n_in, n_out)).astype(np.float32), rng.normal(0, 0.1, n_out).astype(np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    sessions = {k: ort.InferenceSession(m, opts, providers=["CPUExecutionProvider"])
                for k, m in _bare_graphs(w_t, b).items()}
    rows = []
    for r in rates:
        xs = (inputs_at(n_in, r, 32, seed=5) > THETA).astype(np.float32)
        for k, s in sessions.items():
            err = max(float(np.abs(s.run(None, {"x": x[None]})[0].reshape(-1) - (x @ w_t + b)).max()) for x in xs)
            if err > 1e-4:                     # float32 sums of ≤ n_in terms of |w| ≲ 1: rounding ≪ 1e-4
                raise AssertionError(f"form {k!r} differs from y = x W + b by {err:.2e} at rate {r}")
        t = medians(p50_repeats({k: (lambda x, s=s: s.run(None, {"x": x})) for k, s in sessions.items()},
                                xs, calls, repeats))
        rows.append({"rate": r, **{k: 1e3 * v for k, v in t.items()}})
    return rows


@common.command
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write the figures as JSON.")
@click.option("--calls", type=click.IntRange(min=1), default=100)
@click.option("--repeats", type=click.IntRange(min=1), default=11)
@click.option("--forms", default="zor,nir", help="Comma-separated: zor, nir.")
@click.option("--pool", "pooled", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An earlier run's JSON whose shapes join the fits (repeatable): the profile from several runs.")
@click.option("--fit-only", is_flag=True, help="Measure nothing: only the fits over the --pool runs.")
@click.option("--bare-forms", is_flag=True, help="Only: event-driven forms of a 784x128 node in bare sessions.")
@click.option("--quick", is_flag=True, help="Smoke test: three shapes, four rates, few calls.")
def main(json_path: Optional[Path], calls: int, repeats: int, forms: str, pooled: tuple, fit_only: bool,
         bare_forms: bool, quick: bool) -> None:
    """Sparse against dense by layer shape (see the module docstring)."""
    common.check_json_folder(json_path)
    common.set_threads(1)
    if bare_forms:
        rows = bare_forms_run(784, 128, (0.0, 0.01, 0.02, 0.05, 0.1), calls, repeats)
        click.echo(common.format_table(rows, list(rows[0]), digits=2, align="right"))
        click.echo(f"µs per call, 784x128, bare sessions; load average {list(os.getloadavg())}")
        if json_path is not None:
            common.write_json(json_path, {"bare_forms": rows, "environment": common.environment(1)})
        return
    chosen = common.parse_methods(forms, ("zor", "nir"))
    shapes, rates = (SHAPES[:3], (0.0, 0.05, 0.2, 0.5)) if quick else (SHAPES, RATES)
    if quick:
        calls, repeats = min(calls, 10), min(repeats, 2)
    res: dict[str, Any] = {"calls": calls, "repeats": repeats, "threads": 1, "environment": common.environment(1),
                           "rows": []}
    if fit_only and not pooled:
        raise click.UsageError("--fit-only needs at least one --pool run")
    with tempfile.TemporaryDirectory(prefix="zor-sparse-shapes-") as tmp:
        for form in () if fit_only else chosen:
            res["rows"] += measure(Path(tmp), form, shapes, rates, calls, repeats)
    res["environment"]["load_average_after"] = list(os.getloadavg())
    earlier = [row for path in pooled for row in json.loads(path.read_text())["rows"]]
    res["models"] = models(earlier + res["rows"])          # each row also gets the fits' r*
    if fit_only:
        res["rows"] = earlier
    res["pooled"] = [p.name for p in pooled]
    click.echo(_text(res))
    click.echo(f"load average before {res['environment']['load_average']}, after "
               f"{res['environment']['load_average_after']}")
    if json_path is not None:
        common.write_json(json_path, res)
        click.echo(f"wrote {json_path}", err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
