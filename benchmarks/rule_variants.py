"""Which learning rule and mechanisms work best: the measurement Zor's defaults rest on.

Grid: every rule variant in ``zor.engine.rules.RULES`` (coactivity, normalized,
post_spikes, gated) × subtractive novelty off/on × threshold homeostasis off/on ×
optimizer (Adam, AdamW, SGD), for a 784-64-784 autoencoder trained by ``Zor.fit``
(curriculum sampling, batches of 48) at two data scales, evaluated on 1,000 unseen
test images (seed metric and PSNR; medians over seeds).

Settings of the "on" and optimizer levels (each picked by a small sweep, see the
JSON's ``levels``):

    novelty on       novelty_factor ν = 0.5 on both connections (ν ≥ 2 wipes learning out)
    homeostasis on   hidden layer homeostasis_rate η = 0.001, target_activation 0.5
                     (the Layer default target); input thresholds stay fixed
    adam             lr 1e-3 (the engine default)
    adamw            lr 1e-3, weight_decay 0.01 (AdamW's own default; AdamW with 0
                     weight decay is Adam)
    sgd              lr 0.1, momentum 0.9 (0.01 and 1.0 were worse)

Every configuration runs the same number of steps (``--steps``: 500 at 10 images,
1,000 at 1,000 images), so the comparison is of what a rule learns per step; the
median wall seconds per step are reported beside it (the variants cost about the
same: one or two small matmuls more or less).

A second table sweeps homeostasis (η × target rate) for the default rule, because
it is the one mechanism whose setting moves the result most.

Usage (from the repository root):
    python -m benchmarks.rule_variants --json rules.json
    python -m benchmarks.rule_variants --quick --json /tmp/r.json     # smoke test
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import click
import numpy as np

from benchmarks import common

__all__ = ["main", "NOVELTY_ON", "HOMEOSTASIS_ON", "OPTIMIZERS", "grid", "run_one", "rank"]

NOVELTY_ON = 0.5
HOMEOSTASIS_ON = {"homeostasis_rate": 1e-3, "target_activation": 0.5}
OPTIMIZERS = {
    "adam": {"optimizer": "adam", "lr": 1e-3},
    "adamw": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.01},
    "sgd": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9},
}
SWEEP_ETA = (0.0, 3e-4, 1e-3, 3e-3)
SWEEP_TARGET = (0.25, 0.5, 0.75, 0.9)


def grid() -> list[dict[str, Any]]:
    """Every (rule, novelty, homeostasis, optimizer) configuration, the default first."""
    from zor.engine.rules import RULES

    default_rule = _default_rule()
    rules = [default_rule] + [r for r in RULES if r != default_rule]
    return [{"rule": r, "novelty": nov, "homeostasis": hom, "optimizer": opt}
            for r, nov, hom, opt in itertools.product(rules, (False, True), (False, True), OPTIMIZERS)]


def _default_rule() -> str:
    from zor import ZorConfig

    return ZorConfig().rule


def build(cfg: dict[str, Any], seed: int):
    """The Zor network for one configuration (784-64-784)."""
    from zor import Layer, Zor

    nov = NOVELTY_ON if cfg["novelty"] else 0.0
    hidden = {"novelty_factor": nov}
    if cfg.get("homeostasis"):
        hidden.update(HOMEOSTASIS_ON)
    if "eta" in cfg:
        hidden.update(homeostasis_rate=cfg["eta"], target_activation=cfg["target"])
    return Zor([Layer(784, novelty_factor=nov), Layer(64, **hidden), Layer(784)], seed=seed, device="cpu",
               rule=cfg["rule"], **OPTIMIZERS[cfg["optimizer"]])


def run_one(cfg: dict[str, Any], x: np.ndarray, x_eval: np.ndarray, steps: int, seed: int) -> dict[str, Any]:
    """Train one configuration for ``steps`` and evaluate it on x_eval."""
    net = build(cfg, seed)
    start = time.perf_counter()
    hist = net.fit(x, steps=steps, batch_size=48, progress=False)
    seconds = time.perf_counter() - start
    m = net.evaluate(x_eval)
    return {**cfg, "seed": seed, "steps": hist.steps, "seconds": seconds,
            "ms_per_step": 1000.0 * seconds / max(hist.steps, 1), **m}


def label(cfg: dict[str, Any]) -> str:
    if "eta" in cfg:
        return f"{cfg['rule']} η={cfg['eta']:g} target={cfg['target']:g}"
    return (f"{cfg['rule']} nov={'on' if cfg['novelty'] else 'off'} hom={'on' if cfg['homeostasis'] else 'off'} "
            f"{cfg['optimizer']}")


def rank(rows: list[dict[str, Any]], scales: list[int]) -> list[dict[str, Any]]:
    """One line per configuration: median PSNR/accuracy per scale, their mean, best first."""
    by: dict[str, dict[str, Any]] = {}
    for r in rows:
        key = label(r)
        entry = by.setdefault(key, {"config": key, **{k: r[k] for k in ("rule", "novelty", "homeostasis",
                                                                           "optimizer", "eta", "target") if k in r}})
        entry.setdefault("_rows", []).append(r)
    out = []
    for entry in by.values():
        rs = entry.pop("_rows")
        for n in scales:
            at = [r for r in rs if r["scale"] == n]
            entry[f"psnr_{n}"] = common.median(r["psnr"] for r in at)
            entry[f"acc_{n}"] = common.median(r["accuracy"] for r in at)
            entry[f"ms_{n}"] = common.median(r["ms_per_step"] for r in at)
        entry["mean_psnr"] = float(np.mean([entry[f"psnr_{n}"] for n in scales]))
        out.append(entry)
    out.sort(key=lambda e: -e["mean_psnr"])
    for i, e in enumerate(out, 1):
        e["rank"] = i
    return out


def factor_effects(ranked: list[dict[str, Any]], scales: list[int]) -> list[dict[str, Any]]:
    """For each factor level, the mean over all configurations having it (per scale)."""
    out = []
    for factor in ("rule", "novelty", "homeostasis", "optimizer"):
        for level in dict.fromkeys(e[factor] for e in ranked):
            sel = [e for e in ranked if e[factor] == level]
            row = {"factor": factor, "level": str(level), "configs": len(sel)}
            for n in scales:
                row[f"psnr_{n}"] = float(np.mean([e[f"psnr_{n}"] for e in sel]))
            row["mean_psnr"] = float(np.mean([e["mean_psnr"] for e in sel]))
            out.append(row)
    return out


@common.command
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write results as JSON here.")
@click.option("--scales", callback=common.int_list_option, default=None, help="Two (or more) training-set sizes [10,1000].")
@click.option("--steps", callback=common.int_list_option, default=None, help="Training steps per scale [500,1000].")
@click.option("--seeds", type=click.IntRange(1, 100), default=None, help="Seeds per configuration [3].")
@click.option("--eval-size", type=click.IntRange(1), default=None, help="Unseen test images [1000].")
@click.option("--no-sweep", is_flag=True, help="Skip the homeostasis (η × target) sweep.")
@click.option("--threads", type=click.IntRange(1, 256), default=1, help="torch CPU threads.")
@click.option("--quick", is_flag=True, help="A few steps on the bundled subset: a smoke test.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def main(json_path, scales, steps, seeds, eval_size, no_sweep, threads, quick, no_progress):
    """Every Zor rule variant × novelty × homeostasis × optimizer, ranked."""
    common.check_json_folder(json_path)
    common.set_threads(threads)
    scales = scales or ([10, 100] if quick else [10, 1000])
    steps = steps or ([4, 4] if quick else [500, 1000])
    if len(steps) == 1:
        steps = steps * len(scales)
    if len(steps) != len(scales):
        raise click.BadParameter(f"give one step count, or one per scale ({len(scales)}), got {len(steps)}",
                                 param_hint="--steps")
    seeds = seeds or (1 if quick else 3)
    eval_size = eval_size or (50 if quick else 1000)
    data = common.load_images(bundled=quick)
    x_train, y_train = data["train"]
    bad = [n for n in scales if n > len(x_train) or (n != len(x_train) and n % 10)]
    if bad:
        raise click.BadParameter(f"{bad}: scales must be multiples of 10 up to {len(x_train)} "
                                 f"({data['source']})", param_hint="--scales")
    x_eval = data["test"][0][:eval_size]
    configs = grid()
    sweep = [] if no_sweep else [{"rule": _default_rule(), "novelty": False, "homeostasis": eta > 0,
                                  "optimizer": "adam", "eta": eta, "target": t}
                                 for eta in SWEEP_ETA for t in SWEEP_TARGET if eta > 0 or t == 0.5]
    seed_list = list(range(seeds))
    cells = [{"seed": seed, "scale": n, "steps": k, "config": cfg, "sweep": sweep_cell}
             for seed in seed_list for n, k in zip(scales, steps)
             for sweep_cell, cfgs in ((False, configs), (True, sweep)) for cfg in cfgs]

    def measure(cell: dict[str, Any]) -> dict[str, Any]:
        x = x_train[common.balanced_subset(y_train, cell["scale"], cell["seed"])]
        return {**run_one(cell["config"], x, x_eval, cell["steps"], cell["seed"]), "scale": cell["scale"]}

    measured = common.run_grid(cells, measure, "rule_variants", not no_progress)
    rows = [r for r, c in zip(measured, cells) if not c["sweep"]]
    sweep_rows = [r for r, c in zip(measured, cells) if c["sweep"]]

    ranked = rank(rows, scales)
    default = next(e for e in ranked if e["config"] == label(configs[0]))
    best = ranked[0]
    env = common.environment(threads)
    click.echo(f"data: {data['source']}; {eval_size} unseen test images; seeds {seed_list}; steps "
               + ", ".join(f"{k} at {n:,} images" for n, k in zip(scales, steps)) + f"; {threads} thread(s)")
    cols = ["rank", "config"] + [f"psnr_{n}" for n in scales] + [f"acc_{n}" for n in scales] + \
           ["mean_psnr"] + [f"ms_{n}" for n in scales]
    heads = ["rank", "configuration"] + [f"PSNR@{n}" for n in scales] + [f"metric%@{n}" for n in scales] + \
            ["mean PSNR"] + [f"ms/step@{n}" for n in scales]
    click.echo("\nAll configurations, best first (median over seeds):")
    click.echo(common.format_table(ranked, cols, heads))
    effects = factor_effects(ranked, scales)
    click.echo("\nFactor effects (mean PSNR over every configuration with that level):")
    click.echo(common.format_table(effects, ["factor", "level", "configs"] + [f"psnr_{n}" for n in scales] + ["mean_psnr"],
                                   ["factor", "level", "configs"] + [f"PSNR@{n}" for n in scales] + ["mean PSNR"]))
    verdict = {"default": default["config"], "default_rank": default["rank"], "best": best["config"],
               "best_minus_default_db": best["mean_psnr"] - default["mean_psnr"],
               "per_scale_best_minus_default_db": {n: best[f"psnr_{n}"] - default[f"psnr_{n}"] for n in scales},
               "configs": len(ranked)}
    click.echo(f"\nDefault ({default['config']}) ranks {default['rank']} of {len(ranked)}; best is {best['config']}, "
               f"{verdict['best_minus_default_db']:+.2f} dB mean PSNR over the default ("
               + ", ".join(f"{v:+.2f} dB at {n:,}" for n, v in verdict["per_scale_best_minus_default_db"].items()) + ")")
    sweep_ranked = []
    if sweep:
        sweep_ranked = rank(sweep_rows, scales)
        click.echo(f"\nHomeostasis sweep ({_default_rule()}, hidden layer, adam): η × target rate, best first:")
        click.echo(common.format_table(sweep_ranked, ["rank", "config"] + [f"psnr_{n}" for n in scales] + ["mean_psnr"],
                                       ["rank", "configuration"] + [f"PSNR@{n}" for n in scales] + ["mean PSNR"]))
    result = {"benchmark": "rule_variants",
              "config": {"scales": scales, "steps": steps, "seeds": seed_list, "eval_images": eval_size,
                         "batch_size": 48, "curriculum": True, "data": data["source"], "quick": quick,
                         "levels": {"novelty_on": {"novelty_factor": NOVELTY_ON, "layers": "input and hidden"},
                                    "homeostasis_on": {**HOMEOSTASIS_ON, "layers": "hidden"},
                                    "optimizers": OPTIMIZERS,
                                    "sweep": {"eta": SWEEP_ETA, "target": SWEEP_TARGET}}},
              "environment": env, "rows": rows, "ranked": ranked, "factor_effects": effects, "verdict": verdict,
              "homeostasis_sweep": {"rows": sweep_rows, "ranked": sweep_ranked}}
    if json_path:
        common.write_json(json_path, result)
        click.echo(f"wrote {json_path}")


if __name__ == "__main__":
    main()
