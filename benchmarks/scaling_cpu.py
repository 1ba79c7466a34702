"""CPU time of a data-parallel training step: 1 process against each rank of N, per exchange.

Wall-clock speed-ups on a shared machine move with whatever else runs; CPU time barely does.
This measures, per step of :meth:`Zor.fit` (``zor.engine.training``'s step on one global batch:
1 process trains on all B rows; under the columns exchange every rank takes all B rows, under
the others its B/N rows plus fit's all-gather of the per-sample errors; one torch thread per
process, random rows, the same network and global batch everywhere):

    cpu      time.process_time  over the step: the main thread plus gloo's threads
    main     time.thread_time   over the step: the main thread alone
    sys      os.times().system  over the step: the kernel's share of cpu (all threads)
    wall     time.perf_counter  over the step

for 1 process and for every rank of N processes (``torchrun``), under each exchange
(``ZOR_DP_EXCHANGE``). Each figure is the median over the timed
steps (after warm-up steps). With both cores fully used, N ranks can at best reach

    bound = N · cpu(1 process) / Σ_r cpu(rank r)

times the samples/s of one process: the CPU-time bound on the speed-up that
``benchmarks/scaling.py`` measures in wall time.

Usage (from the repository root):
    python -m benchmarks.scaling_cpu --json scaling_cpu.json        # 4096-4096-4096, batch 1024
    python -m benchmarks.scaling_cpu --layers 1024,1024,1024 --batch 256 --exchange columns   # quick
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from benchmarks import common
from benchmarks.scaling import EXCHANGES, ROOT, _port

__all__ = ["main", "worker"]


def worker(layers: str, batch: int, steps: int, warmup: int, out: str) -> None:
    """One process's (or rank's) timed steps, written as JSON to ``out`` (rank r: ``out`` + ``.r``)."""
    import torch

    from zor import Layer, Zor
    from zor.engine import training

    common.set_threads(1)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo")
    sizes = [int(n) for n in layers.split(",")]
    net = Zor([Layer(n) for n in sizes], seed=0, device="cpu", threads=1, distributed=world > 1)
    x = torch.rand(batch, sizes[0], generator=torch.Generator().manual_seed(1))   # (B, n_0), the global batch
    group, idx = training._Group(rank, world), np.arange(batch)                  # fit's step on that batch
    times: dict[str, list[float]] = {"cpu": [], "main": [], "sys": [], "wall": []}
    for step in range(warmup + steps):
        t0, c0, m0, s0 = time.perf_counter(), time.process_time(), time.thread_time(), os.times().system
        group.step(net, x, x, idx)
        if step >= warmup:
            times["wall"].append(time.perf_counter() - t0)
            times["cpu"].append(time.process_time() - c0)
            times["main"].append(time.thread_time() - m0)
            times["sys"].append(os.times().system - s0)
    result = {"rank": rank, "world": world, "exchange": net.reducer.exchange, **times}
    Path(f"{out}.{rank}").write_text(json.dumps(result))
    if world > 1:
        dist.destroy_process_group()


def _launch(world: int, exchange: str, args: list[str], out: Path, timeout: float) -> list[dict[str, Any]]:
    """The per-rank results of one configuration."""
    module = ["-m", "benchmarks.scaling_cpu", "--worker", *args, "--out", str(out)]
    cmd = [sys.executable, *module] if world == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(world), "--master-port", str(_port()),
         *module]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", ZOR_DP_EXCHANGE=exchange,
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p))
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise click.ClickException(f"{world}-process run ({exchange}) failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    return [json.loads(Path(f"{out}.{rank}").read_text()) for rank in range(world)]


@common.command
@click.option("--layers", default="4096,4096,4096", help="Layer sizes.")
@click.option("--batch", type=click.IntRange(min=1), default=1024, help="Global batch.")
@click.option("--steps", type=click.IntRange(min=1), default=4, help="Timed steps.")
@click.option("--warmup", type=click.IntRange(min=0), default=2, help="Untimed steps first.")
@click.option("--world", type=click.IntRange(min=2), default=2, help="Processes of the data-parallel runs.")
@click.option("--exchange", type=click.Choice(["all", *EXCHANGES]), default="all", help="Exchange(s) to measure.")
@click.option("--timeout", type=click.FloatRange(min=1.0), default=900.0, help="Seconds one run may take.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write results as JSON here.")
@click.option("--worker", "as_worker", is_flag=True, hidden=True)
@click.option("--out", default=None, hidden=True)
def main(layers, batch, steps, warmup, world, exchange, timeout, json_path, as_worker, out):
    """CPU seconds per training step of 1 process and of each data-parallel rank, and the bound they set."""
    if as_worker:
        worker(layers, batch, steps, warmup, out)
        return
    common.check_json_folder(json_path)
    exchanges = list(EXCHANGES) if exchange == "all" else [exchange]
    args = ["--layers", layers, "--batch", str(batch), "--steps", str(steps), "--warmup", str(warmup)]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"-": _launch(1, "auto", args, Path(tmp) / "one", timeout)}
        for ex in exchanges:
            runs[ex] = _launch(world, ex, args, Path(tmp) / ex, timeout)
    load_after = os.getloadavg()
    one = common.median(runs["-"][0]["cpu"])
    rows = []
    for name, ranks in runs.items():
        total = sum(common.median(r["cpu"]) for r in ranks)
        for r in ranks:
            rows.append({"processes": r["world"], "exchange": name, "rank": r["rank"],
                         "cpu_s": common.median(r["cpu"]), "main_s": common.median(r["main"]),
                         "sys_s": common.median(r["sys"]),
                         "wall_s": common.median(r["wall"]), "cpu_all_ranks_s": total,
                         "bound": r["world"] * one / total})
    env = common.environment(1)
    click.echo(f"{env['cpu']}, {env['cpu_count']} CPUs, 1 torch thread per process; torch {env['torch']}; "
               f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    click.echo(f"\nCPU time per training step, {layers}, global batch {batch}, median of {steps} steps "
               f"after {warmup}:")
    click.echo(common.format_table(rows, ["processes", "exchange", "rank", "cpu_s", "main_s", "sys_s", "wall_s",
                                          "cpu_all_ranks_s", "bound"],
                                   ["processes", "exchange", "rank", "CPU s", "main thread s", "system s", "wall s",
                                    "CPU s, all ranks", "bound vs 1"],
                                   digits={"cpu_s": 3, "main_s": 3, "sys_s": 3, "wall_s": 3, "cpu_all_ranks_s": 3, "bound": 2}))
    if json_path:
        common.write_json(json_path, {"benchmark": "scaling_cpu", "config": {"layers": layers, "batch": batch,
                                      "steps": steps, "warmup": warmup, "world": world, "exchanges": exchanges},
                                      "environment": env, "load_average_before": load_before,
                                      "load_average_after": load_after, "rows": rows, "runs": runs})
        click.echo(f"wrote {json_path}")


if __name__ == "__main__":
    main()
