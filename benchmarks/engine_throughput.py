"""Engine speed: forward+learn samples per second, on CPU and (when present) CUDA.

For a 784-H-784 Zor network (default settings) and each batch size B, one training
step is ``train_batch(x, x)`` (forward, error, reinforce); its throughput is
B / (median seconds per step). Beside it, measured in the same run on the same
sizes: Zor inference (``forward(x, train=False)``) and the reference, one step of
the equal-size backprop MLP (forward, MSE, backward, fused AdamW). Speed is
reported as ratios: Zor / MLP on each device, and CUDA / CPU for each
configuration (CUDA timings synchronise before the clock stops).

Each figure is the median of ``--repeats`` timed runs, each run long enough
(``--min-time``) to swamp the clock's resolution, after a warm-up step; the runs
of Zor and the MLP are interleaved so that load from other processes on a shared
machine falls on both alike.

Usage (from the repository root):
    python -m benchmarks.engine_throughput --json speed.json
    python -m benchmarks.engine_throughput --widths 64,1024 --batches 1,48,512
    python -m benchmarks.engine_throughput --quick --json /tmp/t.json   # smoke test
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import click

from benchmarks import common

__all__ = ["main", "measure", "throughput", "calibrate"]


def _sync(device: str) -> Optional[Callable[[], None]]:
    import torch

    return torch.cuda.synchronize if device.startswith("cuda") else None


def calibrate(step: Callable[[], Any], device: str, min_time: float) -> int:
    """Steps per timed run so that one run lasts about ``min_time`` (after a warm-up step)."""
    sync = _sync(device)
    step()
    if sync:
        sync()
    start = time.perf_counter()
    step()
    if sync:
        sync()
    one = max(time.perf_counter() - start, 1e-6)
    return int(min(10_000, max(2, min_time / one)))


def throughput(steps: dict[str, Callable[[], Any]], batch: int, device: str, repeats: int,
               min_time: float) -> dict[str, dict[str, Any]]:
    """Samples/s of each step function (one batch of ``batch`` each).

    The timed runs are interleaved (run 1 of every function, then run 2, ...), so a
    burst of load from other processes falls on all of them alike; each figure is
    the median over ``repeats`` runs of k steps.
    """
    sync = _sync(device)
    ks = {name: calibrate(fn, device, min_time) for name, fn in steps.items()}

    def per_step(fn: Callable[[], Any], k: int) -> Callable[[], float]:
        def timed() -> float:
            start = time.perf_counter()
            for _ in range(k):
                fn()
            if sync:
                sync()
            return (time.perf_counter() - start) / k
        return timed

    runs = common.interleave({name: per_step(fn, ks[name]) for name, fn in steps.items()}, repeats)
    out = {}
    for name in steps:
        seconds = common.median(runs[name])
        out[name] = {"samples_per_s": batch / seconds, "ms_per_step": 1000 * seconds, "steps_per_run": ks[name],
                     "seconds_per_step_runs": runs[name]}
    return out


def measure(device: str, hidden: int, batch: int, repeats: int, min_time: float) -> dict[str, Any]:
    """Zor train, Zor inference and MLP train throughput for one (device, H, B)."""
    import torch

    from benchmarks.baselines import MLP
    from benchmarks.baselines.base import make_adamw
    from zor import Layer, Zor

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 784, generator=gen).to(device)
    net = Zor([Layer(784), Layer(hidden), Layer(784)], seed=0, device=device)
    mlp = MLP((784, hidden, 784), seed=0)
    mlp.fc1.to(device)
    mlp.fc2.to(device)
    # the optimizer must be rebuilt for parameters moved to another device
    mlp.optimizer = make_adamw(list(mlp.fc1.parameters()) + list(mlp.fc2.parameters()), 1e-3, 0.01)

    def zor_train():
        net.train_batch(x, x)

    def zor_infer():
        net.forward(x, train=False)

    def mlp_train():
        loss = torch.nn.functional.mse_loss(mlp.forward(x), x)
        mlp.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        mlp.optimizer.step()

    row = {"device": device, "hidden": hidden, "batch": batch}
    timed = throughput({"zor_train": zor_train, "zor_infer": zor_infer, "mlp_train": mlp_train},
                       batch, device, repeats, min_time)
    for name, r in timed.items():
        row[name] = r["samples_per_s"]
        row[f"{name}_ms"] = r["ms_per_step"]
        row[f"{name}_detail"] = r
    row["zor_vs_mlp_train"] = row["zor_train"] / row["mlp_train"]
    return row


@common.command
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write results as JSON here.")
@click.option("--widths", callback=common.int_list_option, default=None, help="Hidden widths H [64,256,1024].")
@click.option("--batches", callback=common.int_list_option, default=None, help="Batch sizes [1,48,256,1024].")
@click.option("--repeats", type=click.IntRange(1, 100), default=None, help="Timed runs per figure (median) [5].")
@click.option("--min-time", type=click.FloatRange(min=0.0), default=None, help="Seconds per timed run [0.2].")
@click.option("--cpu-only", is_flag=True, help="Skip CUDA even when it is available.")
@click.option("--threads", type=click.IntRange(1, 256), default=1, help="torch CPU threads.")
@click.option("--quick", is_flag=True, help="One small configuration, short runs: a smoke test.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def main(json_path, widths, batches, repeats, min_time, cpu_only, threads, quick, no_progress):
    """Zor forward+learn throughput (samples/s) against the equal-size MLP, CPU and CUDA."""
    import torch

    common.check_json_folder(json_path)
    common.set_threads(threads)
    widths = widths or ([64] if quick else [64, 256, 1024])
    batches = batches or ([1, 48] if quick else [1, 48, 256, 1024])
    repeats = repeats or (2 if quick else 5)
    min_time = min_time if min_time is not None else (0.01 if quick else 0.2)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not cpu_only else [])
    rows = common.run_grid(common.grid(device=devices, hidden=widths, batch=batches),
                           lambda c: measure(c["device"], c["hidden"], c["batch"], repeats, min_time),
                           "engine_throughput", not no_progress)
    env = common.environment(threads)
    click.echo(f"{env['cpu']}, {threads} CPU thread(s); CUDA: {env['cuda'] or 'not available'}; torch {env['torch']}; "
               f"median of {repeats} runs")
    click.echo("\nSamples per second (784-H-784; train = forward + learn step; MLP = forward + backward + AdamW):")
    click.echo(common.format_table(
        rows, ["device", "hidden", "batch", "zor_train", "zor_infer", "mlp_train", "zor_vs_mlp_train", "zor_train_ms"],
        ["device", "H", "batch", "Zor train/s", "Zor infer/s", "MLP train/s", "Zor/MLP train", "Zor ms/step"],
        digits={"zor_train": 0, "zor_infer": 0, "mlp_train": 0, "zor_vs_mlp_train": 2, "zor_train_ms": 3}))
    speedups = []
    if "cuda" in devices:
        cpu = {(r["hidden"], r["batch"]): r for r in rows if r["device"] == "cpu"}
        for r in rows:
            if r["device"] == "cuda":
                c = cpu[(r["hidden"], r["batch"])]
                speedups.append({"hidden": r["hidden"], "batch": r["batch"],
                                 "zor_train_speedup": r["zor_train"] / c["zor_train"],
                                 "zor_infer_speedup": r["zor_infer"] / c["zor_infer"],
                                 "mlp_train_speedup": r["mlp_train"] / c["mlp_train"]})
        click.echo("\nCUDA / CPU speedup:")
        click.echo(common.format_table(speedups, ["hidden", "batch", "zor_train_speedup", "zor_infer_speedup",
                                                  "mlp_train_speedup"],
                                       ["H", "batch", "Zor train", "Zor infer", "MLP train"]))
    else:
        click.echo("\nCUDA: not available on this machine; no GPU figures or speedups measured.")
    result = {"benchmark": "engine_throughput",
              "config": {"widths": widths, "batches": batches, "repeats": repeats, "min_time_s": min_time,
                         "devices": devices, "quick": quick},
              "environment": env, "rows": rows, "cuda_speedup": speedups}
    if json_path:
        common.write_json(json_path, result)
        click.echo(f"wrote {json_path}")


if __name__ == "__main__":
    main()
