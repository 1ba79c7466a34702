"""Fashion-MNIST classification from 10 to 60,000 labelled images: Zor vs backprop at equal wall time.

Zor classifies with its output charges trained against one-hot targets (error =
one-hot − output, the engine's own rule; no softmax, no cross-entropy):

    zor        Zor([Layer(784), Layer(256), Layer(10, sigmoid)])      Zor.fit
    zor-conv   Zor([Layer(784, shape=(1, 28, 28)), Conv(16, 5, stride=2), Layer(10, sigmoid)])

The sigmoid output keeps the charges in the targets' [0, 1] range. Against them,
equal-size backprop networks trained on the cross-entropy with AdamW
(``benchmarks/baselines/images.py``):

    mlp        784-256-10 ReLU MLP
    cnn        conv 16×5×5 stride 2 → ReLU → linear 10 (the same kernel and maps as zor-conv)

Every method trains **for the same wall time** on the same balanced subset (n/10 images
per class, drawn per seed; the whole split at 60,000), batches of 48, one CPU thread,
and is scored on the same unseen test images (accuracy, %, argmax of the scores). The
budget grows with the data: ``--budget`` seconds at 10 and 100 labels, 2× at 1,000,
4× from 10,000 up. Figures are medians over ``--seeds`` seeds, with their range, and
seed by seed (every method trains on the same subset per seed) the difference
between the best Zor and the best backprop network.

The issue's goals are checked and printed as they come out: Zor ahead of the best
backprop network at 10 and 100 labels, within 2 points of it at 60,000.

Settings: each method trains with ``SETTINGS`` at every label count and
``FEW_LABEL_SETTINGS`` at 10 and 100 labels, chosen on a validation split held out
of the training images (subsets of the first 50,000 training images, scored on the
last 10,000), never on the test set; every method ends its run with the moving
average of its weights (``WEIGHT_AVERAGE``; ``--weight-average 0`` for the last
iterate).

Usage (from the repository root):
    python -m benchmarks.classification --json out.json
    python -m benchmarks.classification --labels 10,100 --seeds 5 --budget 1
    python -m benchmarks.classification --quick --json /tmp/q.json      # smoke test
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import click
import numpy as np

from benchmarks import common
from benchmarks.baselines.base import FitResult, fit_zor
from benchmarks.baselines.images import CNNClassifier, MLPClassifier

__all__ = ["ZorClassifier", "METHODS", "SETTINGS", "FEW_LABEL_SETTINGS", "settings", "build", "budget_for", "run",
           "goals", "paired", "main"]

HIDDEN = 256
CONV = {"channels": 16, "kernel_size": 5, "stride": 2}


class ZorClassifier:
    """A Zor network whose output charges learn one-hot targets (``Zor.fit``).

    ``curriculum`` is ``Zor.fit``'s sampler switch (on by default); ``target_activation``
    sets the hidden (or Conv) layer's homeostasis target (None: the Layer default, 0.75);
    any other keyword is a Zor setting (lr, weight_decay, ...).
    """

    def __init__(self, conv: bool = False, seed: int = 0, hidden: int = HIDDEN, batch_size: int = 48,
                 device: str = "cpu", curriculum: bool = True, target_activation: Optional[float] = None,
                 **config: Any) -> None:
        from zor import Conv, Layer, Zor
        from zor.tasks.datasets import CLASS_NAMES
        from zor.tasks.images import classify_task

        hidden_fields = {} if target_activation is None else {"target_activation": target_activation}
        if conv:
            layers = [Layer(784, shape=(1, 28, 28)), Conv(**CONV, **hidden_fields),
                      Layer(10, activation_function="sigmoid")]
        else:
            layers = [Layer(784), Layer(hidden, **hidden_fields), Layer(10, activation_function="sigmoid")]
        self.net = Zor(layers, seed=seed, device=device, task=classify_task(CLASS_NAMES), **config)
        self.batch_size = batch_size
        self.curriculum = curriculum
        self.name = "zor-conv" if conv else "zor"

    def fit(self, x: np.ndarray, labels: np.ndarray, *, time_budget: Optional[float] = None,
            steps: Optional[int] = None) -> FitResult:
        from zor.common.imagemath import one_hot

        return fit_zor(self.net, x, one_hot(labels, 10), self.batch_size, time_budget=time_budget, steps=steps,
                       curriculum=self.curriculum)

    def scores(self, x: np.ndarray) -> np.ndarray:
        return self.net.predict(x).cpu().numpy()


METHODS = {
    "zor": lambda seed, **cfg: ZorClassifier(conv=False, seed=seed, **cfg),
    "zor-conv": lambda seed, **cfg: ZorClassifier(conv=True, seed=seed, **cfg),
    "mlp": lambda seed, **cfg: MLPClassifier((784, HIDDEN, 10), seed=seed, **cfg),
    "cnn": lambda seed, **cfg: CNNClassifier((1, 28, 28), n_classes=10, seed=seed, **CONV, **cfg),
}
ZOR_METHODS = ("zor", "zor-conv")
BACKPROP = ("mlp", "cnn")

# Per-method settings at every label count, chosen on the validation split at 50,000
# labels: Zor's hidden homeostasis target 0.5 (87.6 against
# 87.1 at the default 0.75; neutral at 1,000); the MLP's grid kept its defaults.
SETTINGS: dict[str, dict[str, Any]] = {
    "zor": {"target_activation": 0.5},
}

# Per-method settings for few labels (≤ FEW_LABELS), chosen on a validation split held
# out of the training images, never the test set; they
# replace SETTINGS there.
FEW_LABELS = 100
FEW_LABEL_SETTINGS: dict[str, dict[str, Any]] = {
    "zor": {"curriculum": False, "target_activation": 0.5},   # lr 1e-3, weight decay 0.01 (defaults)
    "zor-conv": {"curriculum": False},                         # lr 1e-3, target 0.75, weight decay 0.01
    "mlp": {},                                                 # AdamW lr 1e-3, weight decay 0.01 (defaults)
    "cnn": {"lr": 3e-4, "weight_decay": 0.1},
}


# Every method ends its run with the moving average of its weights (zor.engine.averaging, β per
# step; ``--weight-average 0`` turns it off): on the validation split it lifted every
# method at 50,000 labels (Zor 86.0 → 87.2, MLP 88.1 → 89.2, CNN 87.6 → 88.3) and cut
# Zor's seed spread from 1.7 to 0.25 points; at 10-1,000 labels it moved nothing by
# more than the seeds' spread.
WEIGHT_AVERAGE = 0.995


def settings(name: str, labels: Optional[int] = None, weight_average: float = WEIGHT_AVERAGE) -> dict[str, Any]:
    """The settings ``name`` trains with on ``labels`` labelled images: SETTINGS, overridden by
    FEW_LABEL_SETTINGS at ≤ FEW_LABELS labels, plus ``weight_average`` when it is not 0."""
    out = dict(SETTINGS.get(name, {}))
    if labels is not None and labels <= FEW_LABELS:
        out.update(FEW_LABEL_SETTINGS.get(name, {}))
    if weight_average:
        out["weight_average"] = weight_average
    return out


def build(name: str, seed: int, labels: Optional[int] = None, weight_average: float = WEIGHT_AVERAGE):
    """Method ``name`` with the settings for ``labels`` labelled images (:func:`settings`)."""
    if name not in METHODS:
        from zor.common.errors import ConfigError

        raise ConfigError(f"unknown method {name!r}: expected some of {', '.join(METHODS)}")
    return METHODS[name](seed, **settings(name, labels, weight_average))


def budget_for(n: int, base: float) -> float:
    """Seconds of training for n labelled images: base at ≤ 100, 2·base at 1,000, 4·base from 10,000."""
    return base * (1 if n <= 100 else 2 if n <= 1000 else 4)


def run(data: dict, labels: list[int], names: list[str], seeds: list[int], base: float, eval_size: int,
        show_progress: bool = True, steps: Optional[int] = None,
        weight_average: float = WEIGHT_AVERAGE) -> list[dict[str, Any]]:
    """Every method × label count × seed at equal wall time (or, given ``steps``, equal steps); one row each."""
    x_train, y_train = data["train"]
    x_test, y_test = data["test"][0][:eval_size], data["test"][1][:eval_size]
    for name in names:                                  # untimed warm-up: lazy kernel setup costs no one
        for n in labels:
            build(name, 0, n, weight_average).fit(x_train[:48], y_train[:48], steps=2)

    def measure(cell: dict[str, Any]) -> dict[str, Any]:
        n, name, seed = cell["labels"], cell["method"], cell["seed"]
        idx = common.balanced_subset(y_train, n, seed)
        budget = None if steps is not None else budget_for(n, base)
        common.seed_everything(seed)
        model = build(name, seed, n, weight_average)
        fit = model.fit(x_train[idx], y_train[idx], time_budget=budget, steps=steps)
        acc = float(100.0 * np.mean(np.argmax(model.scores(x_test), axis=1) == y_test))
        return {"labels": n, "method": name, "seed": seed, "budget_s": budget, "train_seconds": fit.seconds,
                "steps": fit.steps, "accuracy": acc}

    return common.run_grid(common.grid(seed=seeds, labels=labels, method=names), measure, "classification",
                           show_progress, note=lambda r: f"{r['method']}@{r['labels']}: {r['accuracy']:.1f} %")


def goals(summary: list[dict]) -> list[dict[str, Any]]:
    """The issue's goals per label count: best Zor vs best backprop (medians)."""
    out = []
    for n in sorted({s["labels"] for s in summary}):
        at = {s["method"]: s["accuracy"] for s in summary if s["labels"] == n}
        zor = {m: a for m, a in at.items() if m in ZOR_METHODS}
        bp = {m: a for m, a in at.items() if m in BACKPROP}
        if not zor or not bp:
            continue
        zm, bm = max(zor, key=zor.get), max(bp, key=bp.get)
        gap = zor[zm] - bp[bm]
        goal = "ahead" if n <= 100 else ("within 2 points" if n >= 60000 else None)
        met = None if goal is None else (gap > 0 if goal == "ahead" else gap >= -2.0)
        out.append({"labels": n, "best_zor": zm, "zor_accuracy": zor[zm], "best_backprop": bm,
                    "backprop_accuracy": bp[bm], "gap_points": gap, "goal": goal, "met": met})
    return out


def paired(rows: list[dict], verdicts: list[dict]) -> list[dict[str, Any]]:
    """Each verdict's two methods seed by seed (a seed trains every method on the same subset):
    the median of the per-seed differences Zor − backprop, and on how many seeds Zor was ahead."""
    acc = {(r["labels"], r["method"], r["seed"]): r["accuracy"] for r in rows}
    out = []
    for v in verdicts:
        n, zm, bm = v["labels"], v["best_zor"], v["best_backprop"]
        seeds = sorted(s for (k, m, s) in acc if k == n and m == zm and (n, bm, s) in acc)
        diffs = [acc[(n, zm, s)] - acc[(n, bm, s)] for s in seeds]
        if diffs:
            out.append({"labels": n, "zor": zm, "backprop": bm, "seeds": len(diffs),
                        "median_difference": common.median(diffs), "zor_ahead": sum(d > 0 for d in diffs)})
    return out


@common.command
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the rows, summary and goals as JSON here.")
@click.option("--labels", "labels_text", default=None, help="Label counts, e.g. 10,100,1000,60000.")
@click.option("--budget", type=click.FloatRange(min=0.01), default=None,
              help="Seconds of training at 10 and 100 labels (2x at 1,000, 4x from 10,000). Default 2.")
@click.option("--seeds", type=click.IntRange(min=1), default=None, help="Seeds (medians are reported). Default 3.")
@click.option("--methods", "methods_text", default=None, help=f"Comma-separated, some of {', '.join(METHODS)}.")
@click.option("--eval-size", type=click.IntRange(min=1), default=None, help="Test images scored. Default 10000.")
@click.option("--equal-steps", type=click.IntRange(min=1), default=None,
              help="Instead of equal wall time: every method trains this many mini-batches (time is reported).")
@click.option("--weight-average", type=click.FloatRange(min=0.0, max=1.0, max_open=True), default=WEIGHT_AVERAGE,
              show_default=True, help="β of the weight average every method ends its run with (0: the last iterate).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--quick", is_flag=True, help="Smoke test: bundled subset, 10 and 100 labels, tiny budgets, 1 seed.")
@click.option("--no-progress", is_flag=True)
def main(json_path: Optional[Path], labels_text: Optional[str], budget: Optional[float], seeds: Optional[int],
         methods_text: Optional[str], eval_size: Optional[int], equal_steps: Optional[int], weight_average: float,
         threads: int, quick: bool, no_progress: bool) -> None:
    """Zor vs backprop (MLP, CNN) on Fashion-MNIST classification at equal wall time."""
    common.check_json_folder(json_path)
    labels = common.parse_int_list(labels_text, "--labels") if labels_text else None
    names = common.parse_methods(methods_text, list(METHODS))
    common.set_threads(threads)
    data = common.load_images(bundled=quick)
    labels = labels or ([10, 100] if quick else [10, 100, 1000, 60000])
    base = budget if budget is not None else (0.2 if quick else 2.0)
    n_seeds = seeds or (1 if quick else 3)
    eval_size = min(eval_size or (500 if quick else 10000), len(data["test"][0]))
    n_train = len(data["train"][0])
    skipped = [n for n in labels if n > n_train]
    labels = [n for n in labels if n <= n_train]
    for n in labels:
        if n != n_train and n % 10:
            raise click.BadParameter(f"{n}: a balanced subset needs a multiple of 10 (or all {n_train})",
                                     param_hint="--labels")
    if skipped:
        click.echo(f"note: {skipped} labels exceed the {n_train} training images of the {data['source']}; skipped",
                   err=True)
    if not labels:
        raise click.BadParameter("no label count fits the training data", param_hint="--labels")
    env = common.environment(threads)
    budgets = {n: budget_for(n, base) for n in labels} if equal_steps is None else {}
    click.echo(f"data: {data['source']}; scored on {eval_size} unseen test images; seeds {n_seeds}; "
               f"{threads} thread(s); {env['cpu']}")
    if equal_steps is None:
        click.echo("equal wall time per method and run (s): "
                   + ", ".join(f"{n:,} labels → {b:g}" for n, b in budgets.items()))
    else:
        click.echo(f"equal steps: {equal_steps} mini-batches of 48 per method and run (not equal wall time)")
    every = {m: SETTINGS[m] for m in names if SETTINGS.get(m)}
    if every:
        click.echo("settings at every label count (chosen on a validation split of the training images): "
                   + "; ".join(f"{m} {cfg}" for m, cfg in every.items()))
    few = {m: FEW_LABEL_SETTINGS[m] for m in names if FEW_LABEL_SETTINGS.get(m)}
    if few and min(labels) <= FEW_LABELS:
        click.echo(f"settings at <= {FEW_LABELS} labels (chosen on a validation split of the training images): "
                   + "; ".join(f"{m} {cfg}" for m, cfg in few.items()))
    click.echo(f"every method ends with the moving average of its weights, β = {weight_average:g}"
               if weight_average else "every method ends with its last iterate (no weight average)")
    rows = run(data, labels, names, list(range(n_seeds)), base, eval_size, show_progress=not no_progress,
               steps=equal_steps, weight_average=weight_average)
    summary = common.summarise(rows, ("labels", "method"), ("accuracy", "train_seconds", "steps"),
                               spread={"accuracy": "acc"}, first=("budget_s",))
    click.echo(f"\nFashion-MNIST classification, accuracy % on unseen test images (median of {n_seeds} seed(s); "
               "min-max beside it)")
    table = [{**s, "range": f"{s['acc_min']:.1f}-{s['acc_max']:.1f}"} for s in summary]
    click.echo(common.format_table(table, ["labels", "method", "accuracy", "range", "steps", "train_seconds",
                                           "budget_s"],
                                   ["labels", "method", "accuracy %", "min-max", "steps", "train s", "budget s"]))
    verdicts = goals(summary)
    pairs = paired(rows, verdicts)
    if verdicts:
        click.echo("\nGoals (best Zor vs best backprop, medians" + (", at EQUAL STEPS: the issue's goals are set at "
                                                                  "equal wall time" if equal_steps else "") + "):")
        for v in verdicts:
            status = "" if v["goal"] is None else (" -> goal '" + v["goal"] + "': " + ("met" if v["met"] else "NOT met"))
            click.echo(f"  {v['labels']:>6,} labels: {v['best_zor']} {v['zor_accuracy']:.1f} % vs {v['best_backprop']} "
                       f"{v['backprop_accuracy']:.1f} % ({v['gap_points']:+.1f} points){status}")
        click.echo("\nSeed by seed (every method trains on the same subset per seed), Zor − backprop:")
        for p in pairs:
            click.echo(f"  {p['labels']:>6,} labels: {p['zor']} − {p['backprop']}: median "
                       f"{p['median_difference']:+.2f} points, Zor ahead on {p['zor_ahead']} of {p['seeds']} seeds")
    if json_path is not None:
        common.write_json(json_path, {
            "benchmark": "classification", "environment": env,
            "config": {"labels": labels, "budgets_s": budgets, "base_budget_s": base, "equal_steps": equal_steps,
                       "seeds": n_seeds,
                       "eval_images": eval_size, "data": data["source"], "methods": names, "batch_size": 48,
                       "budget_rule": "base at <= 100 labels, 2x base at 1,000, 4x base from 10,000",
                       "subset": "balanced, n/10 per class, drawn per seed (whole split at 60000)",
                       "weight_average": weight_average,
                       "settings": {str(n): {m: settings(m, n, weight_average) for m in names} for n in labels},
                       "quick": quick},
            "rows": rows, "summary": summary, "goals": verdicts, "paired": pairs})
        click.echo(f"wrote {json_path}", err=True)


if __name__ == "__main__":
    main()
