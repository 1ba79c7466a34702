"""Headline benchmark: Fashion-MNIST reconstruction from 10 to 60,000 training images.

Zor (``Zor([Layer(784), Layer(64), Layer(784)])``, default settings) against every
baseline in ``benchmarks/baselines`` (an equal-size backprop MLP in three plain
settings: AdamW lr 1e-3 and 3e-3 with a linear output, lr 1e-3 with a sigmoid
output; seed 002's leaky neuron trained by BPTT; seed 003's LIF + STDP network; the
mean image), all trained **for the same wall time** on the same balanced subset of
the training split and evaluated on the same unseen test images (the first
``--eval-size`` of the test split).

Reported per method and scale: the seed's metric 100 · (1 − MAE), PSNR (dB, peak 1),
training wall time, steps (mini-batches of 48) — medians over ``--seeds`` seeds,
each seed drawing its own balanced subset and initialisation.

Wall-time budgets: ``--budget`` seconds at 10 images (default 1 s, which covers
Zor's 500 quick-start steps on one CPU thread here, ~0.8 s), doubled for each
tenfold more data, up to 8×: 10 → 1 s, 100 → 2 s, 1,000 → 4 s, 10,000 and more →
8 s. More data needs more passes to be used at all, and the doubling keeps the whole
run a few minutes on a laptop.

The seed's quick start is run first exactly as a user would paste it (default
``Zor(...)``, 500 ``train_batch(batch, batch)`` steps on random batches of 48 drawn
from the 10 images, ``forward(x, train=False)`` on the unseen images), next to the
MLP trained on the very same batches; it also reports how long each needed to reach
83 % on the seed's metric (evaluated every 10 steps, clock paused while evaluating).

Usage (from the repository root):
    python -m benchmarks.fashion_fewshot --json out.json --png out.png
    python -m benchmarks.fashion_fewshot --scales 10,100 --seeds 5 --budget 0.5
    python -m benchmarks.fashion_fewshot --quick --json /tmp/q.json   # smoke test
"""

from __future__ import annotations

import math
import time
from typing import Any, Optional

import click
import numpy as np

from benchmarks import common, methods

__all__ = ["main", "budget_for", "run_quick_start", "run_scales", "compare", "save_png"]

TARGET = 83.0            # the seed's quick-start claim, % on its metric
QUICK_START_STEPS = 500
QUICK_START_BATCH = 48


def budget_for(n_train: int, base: float) -> float:
    """Wall-time budget (s) for n_train images: base · 2^min(3, floor(log10(n / 10)))."""
    doublings = min(3, max(0, int(math.floor(math.log10(max(n_train, 10) / 10) + 1e-9))))
    return base * 2 ** doublings


# --------------------------------------------------------------------------- quick start
def run_quick_start(x10: np.ndarray, x_eval: np.ndarray, seed: int, steps: int = QUICK_START_STEPS,
                    eval_every: int = 10) -> list[dict[str, Any]]:
    """The seed's quick start (Zor, defaults) and the MLP on the same batches, for one seed."""
    import torch

    from zor import Layer, Zor
    from zor.common.metrics import reconstruction, seed_accuracy

    X = torch.tensor(x10)
    XE = torch.tensor(x_eval)
    rows = []

    def zor_factory():
        snn = Zor([Layer(784), Layer(64), Layer(784)])           # exactly the quick start: defaults

        def step(batch):
            snn.train_batch(batch, batch)

        def infer():
            return snn.forward(XE, train=False)
        return step, infer

    def mlp_factory(lr):
        def make():
            mlp = methods.MLP(methods.SIZES, lr=lr, seed=seed)

            def step(batch):
                loss = torch.nn.functional.mse_loss(mlp.forward(batch), batch)
                mlp.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                mlp.optimizer.step()

            def infer():
                with torch.no_grad():
                    return mlp.forward(XE)
            return step, infer
        return make

    runs = [("zor (quick start)", zor_factory), ("mlp AdamW lr=1e-3", mlp_factory(1e-3)),
            ("mlp AdamW lr=3e-3", mlp_factory(3e-3))]
    for name, factory in runs:
        torch.manual_seed(seed)                                    # the same batches for every method
        step, infer = factory()
        clock, reached_step, reached_s = 0.0, None, None
        for i in range(steps):
            start = time.perf_counter()
            batch = X[torch.randint(0, len(X), (QUICK_START_BATCH,))]
            step(batch)
            clock += time.perf_counter() - start
            if reached_step is None and eval_every and (i + 1) % eval_every == 0:
                if seed_accuracy(infer().numpy(), x_eval) >= TARGET:
                    reached_step, reached_s = i + 1, clock
        m = reconstruction(infer().numpy(), x_eval)
        rows.append({"method": name, "seed": seed, "accuracy": m["accuracy"], "psnr": m["psnr"],
                     "mae": m["mae"], "mse": m["mse"], "train_seconds": clock, "steps": steps,
                     "steps_to_target": reached_step, "seconds_to_target": reached_s})
    return rows


# --------------------------------------------------------------------------- scales
def warm_up(names: list[str], x: np.ndarray) -> None:
    """Run each method a few untimed steps, so one-time costs (lazy kernel setup,
    allocator growth) fall on no one's clock."""
    for name in names:
        model = methods.build(name, 0)
        model.fit(x, steps=3)
        model.reconstruct(x[:8])


def run_scales(data: dict, scales: list[int], names: list[str], seeds: list[int], base_budget: float,
               eval_size: int, show_progress: bool = True, keep: Optional[np.ndarray] = None
               ) -> tuple[list[dict[str, Any]], dict]:
    """Every method × scale × seed at equal wall time. Returns (rows, kept reconstructions).

    ``keep``: indices into the eval set whose reconstructions (first seed) are returned
    for the PNG grid, as {scale: {method: array}}.
    """
    from zor.common.metrics import reconstruction

    x_train, y_train = data["train"]
    x_eval = data["test"][0][:eval_size]
    kept: dict = {}
    warm_up(names, x_train[:48])

    def measure(cell: dict[str, Any]) -> dict[str, Any]:
        n, name, seed = cell["scale"], cell["method"], cell["seed"]
        x = x_train[common.balanced_subset(y_train, n, seed)]
        budget = budget_for(n, base_budget)
        common.seed_everything(seed)
        model = methods.build(name, seed)
        fit = model.fit(x, time_budget=budget)
        out = model.reconstruct(x_eval)
        if keep is not None and seed == seeds[0]:
            kept.setdefault(n, {})[name] = out[keep]
        return {"scale": n, "method": name, "label": getattr(model, "name", name), "seed": seed,
                "budget_s": budget, "train_seconds": fit.seconds, "steps": fit.steps, "samples_seen": fit.samples,
                **reconstruction(out, x_eval)}

    rows = common.run_grid(common.grid(seed=seeds, scale=scales, method=names), measure, "fashion_fewshot",
                           show_progress, note=lambda r: f"{r['method']}@{r['scale']}: {r['psnr']:.2f} dB")
    return rows, kept


def summarise_quick_start(rows: list[dict]) -> list[dict[str, Any]]:
    """The quick start's medians over seeds per method, with how many seeds reached the target."""
    summary = common.summarise(rows, ("method",), ("accuracy", "psnr", "mae", "train_seconds", "steps",
                                                   "steps_to_target", "seconds_to_target"),
                               spread={"psnr": "psnr"}, integers=("steps", "steps_to_target"))
    for s in summary:
        s["label"] = s["method"]
        s["reached_target"] = sum(r["steps_to_target"] is not None for r in rows if r["method"] == s["method"])
    return summary


def summarise_scales(rows: list[dict]) -> list[dict[str, Any]]:
    """Medians over seeds for each (scale, method), with the PSNR range, in first-seen order."""
    return common.summarise(rows, ("scale", "method"), ("accuracy", "psnr", "mae", "train_seconds", "steps",
                                                        "budget_s"),
                            spread={"psnr": "psnr"}, first=("label",))


def compare(rows: list[dict]) -> list[dict[str, Any]]:
    """Per scale: Zor's median PSNR against the best MLP setting's, and per-seed wins."""
    out = []
    for n in sorted({r["scale"] for r in rows}):
        at = [r for r in rows if r["scale"] == n]
        zor = [r for r in at if r["method"] == "zor"]
        mlps = sorted({r["method"] for r in at if methods.is_mlp(r["method"])})
        if not zor or not mlps:
            continue
        med = {m: common.median(r["psnr"] for r in at if r["method"] == m) for m in mlps}
        best = max(mlps, key=lambda m: med[m])
        zor_psnr = common.median(r["psnr"] for r in zor)
        wins = 0
        for z in zor:
            rivals = [r["psnr"] for r in at if methods.is_mlp(r["method"]) and r["seed"] == z["seed"]]
            wins += z["psnr"] >= max(rivals)
        out.append({
            "scale": n, "budget_s": zor[0]["budget_s"], "zor_psnr": zor_psnr,
            "zor_accuracy": common.median(r["accuracy"] for r in zor),
            "zor_steps": int(round(common.median(r["steps"] for r in zor))),
            "best_mlp": best, "mlp_psnr": med[best],
            "mlp_accuracy": common.median(r["accuracy"] for r in at if r["method"] == best),
            "mlp_steps": int(round(common.median(r["steps"] for r in at if r["method"] == best))),
            "delta_db": zor_psnr - med[best], "zor_wins": f"{wins}/{len(zor)}",
            "zor_ahead": zor_psnr >= med[best],
        })
    return out


# --------------------------------------------------------------------------- PNG
def save_png(path: str, originals: np.ndarray, kept: dict, labels: dict[str, str], title: str) -> None:
    """Grid: originals on top, then one row per (scale, method) of reconstructions.

    Drawn as one mosaic image (one ``imshow``), clipped to [0, 1] for display.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zor.common.fileio import atomic_path

    rows = [("original", originals)]
    for n in sorted(kept):
        for name, imgs in kept[n].items():
            rows.append((f"{labels.get(name, name)} · {n:,} images", imgs))
    cols, pad, side = originals.shape[0], 2, 28
    cell = side + pad
    mosaic = np.ones((len(rows) * cell + pad, cols * cell + pad), np.float32)
    for r, (_, imgs) in enumerate(rows):
        for c in range(cols):
            y, x = pad + r * cell, pad + c * cell
            mosaic[y:y + side, x:x + side] = np.clip(imgs[c].reshape(side, side), 0.0, 1.0)
    fig = plt.figure(figsize=(0.45 * cols + 2.6, 0.45 * len(rows) + 0.5), dpi=100)
    ax = fig.add_axes((2.4 / (0.45 * cols + 2.6), 0.02, 1 - 2.5 / (0.45 * cols + 2.6), 0.93))
    ax.imshow(mosaic, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([pad + r * cell + side / 2 for r in range(len(rows))])
    ax.set_yticklabels([label for label, _ in rows], fontsize=7)
    ax.tick_params(length=0)
    fig.suptitle(title, fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


# --------------------------------------------------------------------------- CLI
def _methods(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[list[str]]:
    """click callback: "zor,mlp" → ["zor", "mlp"] (None: the defaults); a usage error naming the known methods."""
    return None if value is None else common.parse_methods(value, methods.known())


@common.command
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write results as JSON here.")
@click.option("--png", "png_path", type=click.Path(dir_okay=False), default=None,
              help="Write a grid of originals and reconstructions here.")
@click.option("--scales", callback=common.int_list_option, default=None, help="Training-set sizes, comma-separated [10,100,1000,60000].")
@click.option("--budget", type=click.FloatRange(min=0.001), default=None,
              help="Training seconds at 10 images, doubled per tenfold more data up to 8x [1.0].")
@click.option("--seeds", type=click.IntRange(1, 100), default=None, help="Seeds per configuration (medians) [3].")
@click.option("--methods", "method_names", callback=_methods, default=None,
              help=f"Comma-separated methods [{','.join(methods.DEFAULT_METHODS)}].")
@click.option("--eval-size", type=click.IntRange(1), default=None, help="Unseen test images evaluated [1000].")
@click.option("--threads", type=click.IntRange(1, 256), default=1, help="torch CPU threads.")
@click.option("--quick", is_flag=True, help="Tiny budgets on the bundled subset: a smoke test (seconds).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def main(json_path, png_path, scales, budget, seeds, method_names, eval_size, threads, quick, no_progress):
    """Zor vs baselines on Fashion-MNIST reconstruction at equal wall time."""
    common.check_json_folder(json_path)
    common.check_json_folder(png_path, "--png")
    common.set_threads(threads)
    if quick:
        scales = scales or [10, 100]
        budget = budget if budget is not None else 0.05
        seeds = seeds or 1
        eval_size = eval_size or 100
        qs_steps = 20
    else:
        scales = scales or [10, 100, 1000, 60000]
        budget = budget if budget is not None else 1.0
        seeds = seeds or 3
        eval_size = eval_size or 1000
        qs_steps = QUICK_START_STEPS
    names = method_names or list(methods.DEFAULT_METHODS)
    data = common.load_images(bundled=quick)
    x_train, y_train = data["train"]
    x_test, y_test = data["test"]
    dropped = [n for n in scales if n > len(x_train)]
    scales = [n for n in scales if n <= len(x_train)]
    for n in scales:
        if n != len(x_train) and n % 10:
            raise click.BadParameter(f"{n}: a balanced subset needs a multiple of 10 (or the whole set, "
                                     f"{len(x_train)})", param_hint="--scales")
    if dropped:
        click.echo(f"note: scales {dropped} exceed the {len(x_train)} training images of the {data['source']}; skipped",
                   err=True)
    if not scales:
        raise click.BadParameter("no scale fits the training data", param_hint="--scales")
    eval_size = min(eval_size, len(x_test))
    x_eval = x_test[:eval_size]
    seed_list = list(range(seeds))
    config = {"scales": scales, "budgets_s": {n: budget_for(n, budget) for n in scales}, "base_budget_s": budget,
              "budget_rule": "base * 2**min(3, floor(log10(n / 10))) seconds for n training images",
              "seeds": seed_list, "eval_images": eval_size, "eval_split": "test (first images)",
              "train_subset": "balanced: n/10 images per class, drawn per seed (the whole split at 60000)",
              "batch_size": 48, "methods": names, "data": data["source"], "quick": quick,
              "quick_start_steps": qs_steps}
    env = common.environment(threads)
    click.echo(f"data: {data['source']}; eval on {eval_size} unseen test images; seeds {seed_list}; "
               f"{threads} thread(s); {env['cpu']}")
    click.echo("budgets (s): " + ", ".join(f"{n:,} images → {b:g}" for n, b in config["budgets_s"].items()))

    # ---- the seed's quick start
    from zor.tasks.datasets import few_shot

    x10 = x_train[few_shot(y_train, 1)]
    qs_rows = []
    run_quick_start(x10, x_eval[:8], seed=0, steps=5)        # untimed warm-up of the same code
    for seed in seed_list:
        qs_rows += run_quick_start(x10, x_eval, seed, steps=qs_steps)
    qs_summary = summarise_quick_start(qs_rows)
    click.echo(f"\nSeed quick start: Zor([Layer(784), Layer(64), Layer(784)]), {qs_steps} x train_batch on batches of "
               f"{QUICK_START_BATCH} from the first image of each class (10), forward(train=False) on {eval_size} "
               f"unseen images; MLP on the same batches. Medians over {seeds} seed(s).")
    click.echo(common.format_table(
        qs_summary, ["label", "accuracy", "psnr", "train_seconds", "steps_to_target", "seconds_to_target",
                     "reached_target"],
        ["method", "seed metric %", "PSNR dB", f"{qs_steps} steps s", f"steps to {TARGET:g}%",
         f"s to {TARGET:g}%", "seeds reaching"], digits={"train_seconds": 3, "seconds_to_target": 3}))

    # ---- equal wall time at every scale
    display = np.array([int(np.flatnonzero(y_test[:eval_size] == c)[0]) for c in range(10)
                        if np.any(y_test[:eval_size] == c)])
    rows, kept = run_scales(data, scales, names, seed_list, budget, eval_size, not no_progress, keep=display)
    summary = summarise_scales(rows)
    click.echo(f"\nEqual wall time (medians over {seeds} seed(s); PSNR range over seeds):")
    click.echo(common.format_table(
        summary, ["scale", "label", "accuracy", "psnr", "psnr_min", "psnr_max", "train_seconds", "steps"],
        ["train images", "method", "seed metric %", "PSNR dB", "min", "max", "train s", "steps"]))
    comparison = compare(rows)
    if comparison:
        click.echo("\nZor against the best MLP setting (median PSNR; wins = seeds where Zor ≥ every MLP setting):")
        click.echo(common.format_table(
            comparison, ["scale", "budget_s", "zor_psnr", "best_mlp", "mlp_psnr", "delta_db", "zor_wins",
                         "zor_steps", "mlp_steps"],
            ["train images", "budget s", "Zor dB", "best MLP", "MLP dB", "Zor − MLP dB", "wins", "Zor steps",
             "MLP steps"]))
    zor_qs = next((s for s in qs_summary if s["method"].startswith("zor")), None)
    targets = {}
    if zor_qs is not None:
        mlp_qs = [s for s in qs_summary if s["method"].startswith("mlp")]
        targets["quick_start_accuracy_ge_83"] = bool(zor_qs["accuracy"] >= TARGET)
        targets["quick_start_zor_seconds"] = zor_qs["train_seconds"]
        targets["quick_start_mlp_seconds"] = {s["method"]: s["train_seconds"] for s in mlp_qs}
    if comparison:
        targets["zor_psnr_ge_mlp_at_every_scale"] = all(c["zor_ahead"] for c in comparison)
        targets["zor_minus_mlp_db"] = {c["scale"]: c["delta_db"] for c in comparison}
    click.echo("\nTargets:")
    for k, v in targets.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}: {common.format_value(b, 3)}" for a, b in v.items())
        click.echo(f"  {k}: {common.format_value(v, 3)}")

    result = {"benchmark": "fashion_fewshot", "config": config, "environment": env,
              "quick_start": {"rows": qs_rows, "summary": qs_summary}, "rows": rows, "summary": summary,
              "comparison": comparison, "targets": targets}
    if json_path:
        common.write_json(json_path, result)
        click.echo(f"wrote {json_path}")
    if png_path:
        labels = {s["method"]: s["label"] for s in summary}
        save_png(png_path, x_eval[display], kept, labels,
                 f"Fashion-MNIST reconstructions of unseen test images (seed {seed_list[0]}, equal wall time)")
        click.echo(f"wrote {png_path}")


if __name__ == "__main__":
    main()
