"""CPU data-parallel scaling: N processes (gloo, torchrun) against 1, same global batch, same weights.

Each configuration is one ``zor.train`` run on the ``random`` data set (seeded rows as
wide as the first layer) with one torch thread per process: 1 process training on
the global batch B, and N processes under ``torchrun --nproc-per-node N`` each
training on B/N rows of it (:meth:`Zor.fit` with ``distributed=True``), once per
exchange (``ZOR_DP_EXCHANGE``, :mod:`zor.engine.distributed`):

- ``activations``: the ranks all-gather the per-sample factors of the outer products
  and each updates its own rows of every W_i, then all-gathers the updated rows
  (:mod:`zor.engine.sharded`; the default for dense networks);
- ``all-reduce``: the ranks all-reduce E_i and G_i (2·Σ|W_i| floats) and every rank
  repeats the whole update (the path convolutions and SGD keep);
- ``columns``: tensor parallel: each rank owns the columns of every W_i that feed its block
  of units and runs the whole global batch on them, exchanging activations and signals,
  never weights (:mod:`zor.engine.tensorparallel`).

Two figures per run, both from rank 0's training loop (process start-up and data loading
left out): **whole run** samples/s is B · steps / seconds of the whole loop (the first
step and the end, the gather of the sharded state onto every rank, included), and
**steady** samples/s is B · (steps − 1) / the seconds from the first step's end to the
last step's (``zor.train``'s ``steady_samples_per_s``): the rate of a long run. The runs take turns round by round and each
speed-up is the median of the per-round ratios (:func:`benchmarks.common.paired_ratio`),
so load from other processes falls on all alike. The timed runs write no checkpoint (the
final write, and the activations exchange's gather of the optimiser state before it, would
count in their seconds); after the rounds one more run per configuration writes one, and
its weights are compared with the 1-process run's: data parallel must not change them
(issue bound: within 1e-6).

Target on a 2-core machine: 2 processes ≥ 1.7× the samples/s of 1 on a compute-bound
network (4096-4096-4096, batch 1024). ``benchmarks/scaling_cpu.py`` measures the CPU seconds
per step of each rank, and from them the speed-up the exchanges can reach when both cores are
theirs alone.

Usage (from the repository root):
    python -m benchmarks.scaling --json scaling.json
    python -m benchmarks.scaling --layers 1024,1024,1024 --batch 256 --steps 5 --rounds 2   # quick
    python -m benchmarks.scaling --exchange columns                                         # 1 vs N by columns only
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from benchmarks import common

__all__ = ["main", "launch"]

ROOT = Path(__file__).resolve().parents[1]
EXCHANGES = ("all-reduce", "activations", "columns")   # ZOR_DP_EXCHANGE values timed against 1 process


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(world: int, layers: str, batch: int, steps: int, folder: Path, timeout: float,
           exchange: str = "auto", save: bool = False) -> dict[str, Any]:
    """One zor.train run on ``world`` processes (``exchange``: ZOR_DP_EXCHANGE); its summary (samples_per_s,
    seconds, ...) and, with ``save``, its checkpoint path (the timed runs write none: the final write and the
    optimiser state's gather would count in their seconds)."""
    ckpt, summary = folder / f"w{world}-{exchange}.zor", folder / f"w{world}-{exchange}.json"
    for path in (ckpt, summary):
        path.unlink(missing_ok=True)
    args = ["--data", "random", "--layers", layers, "--steps", str(steps), "--batch-size", str(batch),
            "--threads", "1", "--no-progress", "--device", "cpu", "--json", str(summary), "--timeout", str(timeout)]
    if save:
        args += ["--checkpoint", str(ckpt)]
    if world == 1:
        cmd = [sys.executable, "-m", "zor.train", *args, "--single"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(world), "--master-port",
               str(_port()), "-m", "zor.train", *args]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", ZOR_DP_EXCHANGE=exchange, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p))
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise click.ClickException(f"{world}-process run failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    return {**json.loads(summary.read_text()), "checkpoint": str(ckpt) if save else None, "exchange": exchange}


def _max_weight_diff(a: str, b: str) -> float:
    from zor import Zor

    wa, wb = Zor.load(a, device="cpu").weights, Zor.load(b, device="cpu").weights
    return max(float((x - y).abs().max()) for x, y in zip(wa, wb))


@common.command
@click.option("--layers", default="4096,4096,4096", help="Layer sizes (first = last: reconstruction).")
@click.option("--batch", type=click.IntRange(min=1), default=1024, help="Global batch.")
@click.option("--steps", type=click.IntRange(min=1), default=8, help="Training steps per run.")
@click.option("--rounds", type=click.IntRange(min=1), default=3, help="Rounds (each runs every configuration once).")
@click.option("--world", type=click.IntRange(min=2), default=2, help="Processes of the data-parallel runs.")
@click.option("--exchange", type=click.Choice(["all", *EXCHANGES]), default="all",
              help="Which data-parallel exchange(s) to run against 1 process (all: each of them).")
@click.option("--timeout", type=click.FloatRange(min=1.0), default=900.0, help="Seconds one run may take.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write results as JSON here.")
def main(layers, batch, steps, rounds, world, exchange, timeout, json_path):
    """Samples/s of N data-parallel CPU processes against 1, with the weights compared."""
    common.check_json_folder(json_path)
    exchanges = list(EXCHANGES) if exchange == "all" else [exchange]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        measures = {"1": lambda: launch(1, layers, batch, steps, folder, timeout)}
        for ex in exchanges:
            measures[ex] = lambda ex=ex: launch(world, layers, batch, steps, folder, timeout, ex)
        runs = common.interleave(measures, rounds)
        one = launch(1, layers, batch, steps, folder, timeout, save=True)["checkpoint"]    # the weights, untimed
        diffs = {ex: _max_weight_diff(one, launch(world, layers, batch, steps, folder, timeout, ex, True)["checkpoint"])
                 for ex in exchanges}
    load_after = os.getloadavg()
    sps = {name: [r["samples_per_s"] for r in runs[name]] for name in runs}
    steady = {name: [r["steady_samples_per_s"] for r in runs[name]] for name in runs}
    rows = [{"processes": 1, "exchange": "-", "samples_per_s": common.median(sps["1"]), "speedup": 1.0,
             "steady_samples_per_s": common.median(steady["1"]), "steady_speedup": 1.0, "max_weight_diff": 0.0}]
    rows += [{"processes": world, "exchange": ex, "samples_per_s": common.median(sps[ex]),
              "speedup": common.paired_ratio(sps[ex], sps["1"]), "steady_samples_per_s": common.median(steady[ex]),
              "steady_speedup": common.paired_ratio(steady[ex], steady["1"]), "max_weight_diff": diffs[ex]}
             for ex in exchanges]
    env = common.environment(1)
    click.echo(f"{env['cpu']}, {env['cpu_count']} CPUs, 1 torch thread per process; torch {env['torch']}; "
               f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    click.echo(f"\nData-parallel training, {layers}, global batch {batch}, {steps} steps per run, "
               f"median of {rounds} rounds:")
    click.echo(common.format_table(rows, ["processes", "exchange", "samples_per_s", "speedup", "steady_samples_per_s",
                                          "steady_speedup", "max_weight_diff"],
                                   ["processes", "exchange", "whole run samples/s", "speed-up vs 1",
                                    "steady samples/s", "steady speed-up vs 1", "max |ΔW| vs 1"],
                                   digits={"samples_per_s": 1, "speedup": 2, "steady_samples_per_s": 1,
                                           "steady_speedup": 2, "max_weight_diff": ".1e"}))
    click.echo("whole run: every step, the start of the loop to its end (the end gather of the state included); "
               "steady: the steps after the first, from the first step's end to the last step's")
    if json_path:
        common.write_json(json_path, {"benchmark": "scaling", "config": {"layers": layers, "batch": batch,
                                      "steps": steps, "rounds": rounds, "world": world, "exchanges": exchanges},
                                      "environment": env, "load_average_before": load_before,
                                      "load_average_after": load_after, "rows": rows, "runs": runs})
        click.echo(f"wrote {json_path}")


if __name__ == "__main__":
    main()
