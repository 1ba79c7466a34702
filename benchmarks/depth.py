"""Credit assignment with depth: the same Zor classifier at 2, 4, 8 and 12 layers.

Task: Fashion-MNIST classification from ``--labels`` balanced labelled images (default
1,000), output charges against one-hot targets, scored on unseen test images.

    depth d    Zor([Layer(784)] + [Layer(W)] * (d − 2) + [Layer(10)]), defaults, Zor.fit
    zor-init1  the same with init_scale 1.0 (the default is 0.5): W_i ~ N(0, s·sqrt(2/(n_i + n_{i+1})))
    mlp        the same widths as a ReLU MLP trained by backprop (cross-entropy, AdamW)

Depth d counts every layer, input and output included (d = 2 is the input wired
straight to the output: no hidden layer). Each network trains for the same number of
mini-batches (``--steps``, batches of 48, one CPU thread), so the table shows both
quality and training time per depth. How the error signal reaches the lower layers
is measured directly on Zor:

    ΔW first / last   ‖W_k(end) − W_k(start)‖ / ‖W_k(start)‖ for the first and last connection:
                      how far training moved the weights the signal must travel
                      furthest to reach, next to those it reaches first
    spike rate        mean share of hidden units that spike on test images (min over layers)
    out std₀          std of the output charges on test images before training: how much of the
                      input reaches the top through the untrained layers

Why two initial scales: each gated layer passes on only part of its charges, so with
the default scale (0.5) the forward signal shrinks by a roughly constant factor per
layer; a scale of 1.0 keeps more of it alive through many layers. The output is the
identity (no sigmoid) at every depth.

Medians over ``--seeds`` seeds, with the accuracy's range.

Usage (from the repository root):
    python -m benchmarks.depth --json out.json
    python -m benchmarks.depth --quick --json /tmp/q.json      # smoke test
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import click
import numpy as np

from benchmarks import common
from benchmarks.baselines.images import MLPClassifier

__all__ = ["zor_at_depth", "run", "summarise", "main"]


def zor_at_depth(depth: int, width: int, seed: int, init_scale: float = 0.5):
    """Zor with ``depth`` layers: 784, (depth − 2) hidden layers of ``width``, 10."""
    from zor import Layer, Zor

    return Zor([Layer(784)] + [Layer(width) for _ in range(depth - 2)] + [Layer(10)], seed=seed, device="cpu",
               init_scale=init_scale)


def _zor_run(depth: int, width: int, seed: int, x, y, xt, yt, steps: int, init_scale: float = 0.5) -> dict[str, Any]:
    import torch

    from zor.common.imagemath import one_hot

    net = zor_at_depth(depth, width, seed, init_scale)
    start = [w.detach().clone() for w in net.weights]
    out_std0 = float(net.predict(xt[:500]).std())
    hist = net.fit(x, one_hot(y), steps=steps, batch_size=48, progress=False)
    acc = float(100.0 * np.mean(net.predict(xt).cpu().numpy().argmax(axis=1) == yt))
    moved = [float(torch.linalg.vector_norm(w - w0) / torch.linalg.vector_norm(w0)) for w, w0 in zip(net.weights, start)]
    _, traces = net.run(xt[:500])
    rates = [float(t.s.mean()) for t in traces[1:-1]]
    return {"accuracy": acc, "train_seconds": hist.seconds, "steps": hist.steps, "out_std0": out_std0,
            "dw_first": moved[0], "dw_last": moved[-1], "dw_per_connection": moved, "hidden_spike_rate": float(np.mean(rates)) if rates else None,
            "min_layer_spike_rate": min(rates) if rates else None}


def _mlp_run(depth: int, width: int, seed: int, x, y, xt, yt, steps: int) -> dict[str, Any]:
    m = MLPClassifier([784] + [width] * (depth - 2) + [10], seed=seed)
    fit = m.fit(x, y, steps=steps)
    acc = float(100.0 * np.mean(m.scores(xt).argmax(axis=1) == yt))
    return {"accuracy": acc, "train_seconds": fit.seconds, "steps": fit.steps}


METHODS = {
    "zor": _zor_run,
    "zor-init1": lambda *args: _zor_run(*args, init_scale=1.0),
    "mlp": _mlp_run,
}


def run(data: dict, depths: list[int], width: int, n_labels: int, steps: int, seeds: list[int], eval_size: int,
        show_progress: bool = True) -> list[dict[str, Any]]:
    x_train, y_train = data["train"]
    xt, yt = data["test"][0][:eval_size], data["test"][1][:eval_size]
    _zor_run(2, width, 0, x_train[:48], y_train[:48], xt[:10], yt[:10], 2)          # untimed warm-up
    _mlp_run(2, width, 0, x_train[:48], y_train[:48], xt[:10], yt[:10], 2)

    def measure(cell: dict[str, Any]) -> dict[str, Any]:
        seed, d, method = cell["seed"], cell["depth"], cell["method"]
        idx = common.balanced_subset(y_train, n_labels, seed)
        common.seed_everything(seed)
        t = time.perf_counter()
        r = METHODS[method](d, width, seed, x_train[idx], y_train[idx], xt, yt, steps)
        return {"depth": d, "method": method, "seed": seed, "wall_seconds": time.perf_counter() - t, **r}

    return common.run_grid(common.grid(seed=seeds, depth=depths, method=list(METHODS)), measure, "depth",
                           show_progress, note=lambda r: f"{r['method']} d={r['depth']}: {r['accuracy']:.1f} %")


def summarise(rows: list[dict]) -> list[dict[str, Any]]:
    """Medians over seeds per (depth, method), by depth and then in the order of METHODS."""
    summary = common.summarise(rows, ("depth", "method"), ("accuracy", "train_seconds", "out_std0", "dw_first",
                                                           "dw_last", "hidden_spike_rate", "min_layer_spike_rate"),
                               spread={"accuracy": "acc"}, integers=())
    order = list(METHODS)
    return sorted(summary, key=lambda s: (s["depth"], order.index(s["method"])))


@common.command
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--depths", "depths_text", default=None, help="Layer counts (input and output included). Default 2,4,8,12.")
@click.option("--width", type=click.IntRange(min=1), default=128, show_default=True, help="Hidden layer width.")
@click.option("--labels", "n_labels", type=click.IntRange(min=10), default=None, help="Labelled images. Default 1000.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Mini-batches of 48 per network. Default 600.")
@click.option("--seeds", type=click.IntRange(min=1), default=None, help="Default 3.")
@click.option("--eval-size", type=click.IntRange(min=1), default=None, help="Test images scored. Default 10000.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--quick", is_flag=True, help="Smoke test: bundled subset, depths 2 and 4, a few steps, 1 seed.")
@click.option("--no-progress", is_flag=True)
def main(json_path: Optional[Path], depths_text: Optional[str], width: int, n_labels: Optional[int],
         steps: Optional[int], seeds: Optional[int], eval_size: Optional[int], threads: int, quick: bool,
         no_progress: bool) -> None:
    """Zor (and the same-width backprop MLP) at 2, 4, 8 and 12 layers: quality and training time."""
    common.check_json_folder(json_path)
    depths = common.parse_int_list(depths_text, "--depths") if depths_text else ([2, 4] if quick else [2, 4, 8, 12])
    if min(depths) < 2:
        raise click.BadParameter("a network has at least 2 layers (input and output)", param_hint="--depths")
    common.set_threads(threads)
    data = common.load_images(bundled=quick)
    n_labels = n_labels or (100 if quick else 1000)
    if n_labels > len(data["train"][0]) or n_labels % 10:
        raise click.BadParameter(f"{n_labels}: expected a multiple of 10 up to {len(data['train'][0])}",
                                 param_hint="--labels")
    steps = steps or (5 if quick else 600)
    n_seeds = seeds or (1 if quick else 3)
    eval_size = min(eval_size or (200 if quick else 10000), len(data["test"][0]))
    env = common.environment(threads)
    click.echo(f"data: {data['source']}: {n_labels:,} balanced labelled images, scored on {eval_size:,} unseen "
               f"test images; width {width}; {steps} steps of 48 per network; {threads} thread(s); {env['cpu']}")
    rows = run(data, depths, width, n_labels, steps, list(range(n_seeds)), eval_size, not no_progress)
    summary = summarise(rows)
    click.echo(f"\nAccuracy % and training time per depth (median of {n_seeds} seed(s)); ΔW = relative weight change")
    table = [{**s, "range": f"{s['acc_min']:.1f}-{s['acc_max']:.1f}",
              "out_std0": None if s["out_std0"] is None else f"{s['out_std0']:.2g}"} for s in summary]
    click.echo(common.format_table(table, ["depth", "method", "accuracy", "range", "train_seconds", "out_std0",
                                           "dw_first", "dw_last", "hidden_spike_rate"],
                                   ["layers", "method", "accuracy %", "min-max", "train s", "out std₀", "ΔW first",
                                    "ΔW last", "spike rate"]))
    if json_path is not None:
        common.write_json(json_path, {
            "benchmark": "depth", "environment": env,
            "config": {"depths": depths, "width": width, "labels": n_labels, "steps": steps, "seeds": n_seeds,
                       "eval_images": eval_size, "data": data["source"], "batch_size": 48, "quick": quick},
            "rows": rows, "summary": summary})
        click.echo(f"wrote {json_path}", err=True)


if __name__ == "__main__":
    main()
