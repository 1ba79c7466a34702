"""``zor.train``: one entry point for training runs, on one process or data parallel under torchrun.

    python -m zor.train --data fashion-mnist --layers 784,256,784 --steps 2000 --batch-size 256 \\
        --checkpoint runs/fmnist.zor --checkpoint-every 500
    torchrun --nproc-per-node 2 -m zor.train --data fashion-mnist ... --batch-size 256

The task is reconstruction (target = input: an autoencoder, as the quick start), so the
first and last layer sizes must equal the data's width. Data sets: ``bundled`` (the 200
Fashion-MNIST training images shipped with the package), ``fashion-mnist`` (the full
60,000, found as :mod:`zor.tasks.datasets` says), ``random`` (seeded uniform rows
as wide as the first layer: for throughput measurements). ``--per-class K`` keeps the
first K images of each class (the quick start: K = 1).

Under torchrun (or with ``--distributed``) every rank runs :meth:`Zor.fit` with
``distributed=True``: ``--batch-size`` is the global batch B, each of the N ranks
trains on B/N rows of it, and every rank ends with the weights one process would reach
with batch B. The process group is gloo on CPUs and NCCL on GPUs, with every collective
bounded by ``--timeout`` seconds, so a rank that dies makes the others stop with an
error naming the timeout instead of hanging. Rank 0 alone shows progress, prints the
summary and writes the checkpoint (atomically, with the optimiser and sampler state);
``--resume`` continues from it as if the run had never stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any, Optional

import click
import numpy as np

from zor.common.cli import cli_errors
from zor.common.errors import ConfigError, DistributedError
from zor.common.fileio import check_output_file, output_folders, write_text_atomic

__all__ = ["main", "load_data", "parse_layers"]

DATA_SETS = ("bundled", "fashion-mnist", "random")
RANDOM_ROWS = 4096     # rows of the ``random`` data set


def parse_layers(text: str) -> list[int]:
    """"784,64,784" → [784, 64, 784]: at least two positive ints."""
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"--layers: expected sizes separated by commas, e.g. 784,64,784, got {text!r}") from None
    if len(sizes) < 2 or any(n <= 0 for n in sizes):
        raise ConfigError(f"--layers: expected at least two positive sizes (input and output), got {text!r}")
    return sizes


def load_data(name: str, width: int, per_class: Optional[int], seed: int) -> np.ndarray:
    """The training rows (N, width) float32 of data set ``name``."""
    from zor.tasks import datasets

    if name == "random":
        return np.random.default_rng(seed).random((RANDOM_ROWS, width), dtype=np.float32)
    x, y = datasets.load_bundled("train") if name == "bundled" else datasets.load_fashion_mnist("train")
    if per_class is not None:
        x = x[datasets.few_shot(y, per_class)]
    if x.shape[1] != width:
        raise ConfigError(f"--layers: the first and last layer must have {x.shape[1]} units for {name} "
                          f"(reconstruction: target = input), got {width}")
    return x


def _device(name: str, distributed: bool) -> str:
    """The torch device of this process: under torchrun on GPUs, "cuda" set to GPU LOCAL_RANK."""
    import torch

    if name not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device: expected auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA GPU: use --device cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and distributed:   # one GPU per rank; "cuda" then means it (same config on every rank)
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return name


def _fit(net: Any, x: np.ndarray, opts: dict[str, Any], distributed: bool) -> Any:
    """net.fit with the run's options; a failed collective becomes a DistributedError naming the timeout."""
    try:
        return net.fit(x, steps=opts["steps"], batch_size=opts["batch_size"], curriculum=opts["curriculum"],
                       progress=opts["progress"], time_budget=opts["time_budget"], distributed=distributed,
                       checkpoint=opts["checkpoint"], checkpoint_every=opts["checkpoint_every"],
                       resume=opts["resume"], timeout=opts["timeout"])
    except RuntimeError as exc:
        if not distributed:
            raise
        rank = os.environ.get("RANK", "?")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DistributedError(f"rank {rank}: a collective failed ({first[:300]}): another rank died or did not "
                               f"answer within the collective timeout of {opts['timeout']:g} s (--timeout)") from None


def _summary(hist: Any, net: Any, opts: dict[str, Any], world: int) -> dict[str, Any]:
    done, ends = hist.steps - hist.start_step, hist.step_ends
    return {"steps": hist.steps, "start_step": hist.start_step, "seconds": hist.seconds,
            "samples_per_s": done * opts["batch_size"] / hist.seconds if hist.seconds > 0 else None,
            # the steps after the first, without the start-up and the end (final gather, checkpoint)
            "steady_samples_per_s": (len(ends) - 1) * opts["batch_size"] / (ends[-1] - ends[0])
            if len(ends) > 1 and ends[-1] > ends[0] else None,
            "train_accuracy": hist.train_accuracy[-1] if hist.train_accuracy else None,
            "world_size": world, "device": str(net.device), "sizes": net.sizes, "threads": hist.threads,
            "batch_size": opts["batch_size"], "checkpoint": opts["checkpoint"]}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", type=click.Choice(DATA_SETS), default="bundled", show_default=True, help="Data set.")
@click.option("--per-class", type=click.IntRange(min=1), default=None, help="Keep the first K images per class.")
@click.option("--layers", default="784,64,784", show_default=True, help="Layer sizes, input to output.")
@click.option("--rule", default="gated", show_default=True, help="Learning-rule variant (zor.engine.rules).")
@click.option("--optimizer", default="adamw", show_default=True, help="adam, adamw or sgd.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Learning rate.")
@click.option("--weight-average", type=float, default=0.0, show_default=True, help="β of the weight average.")
@click.option("--steps", type=click.IntRange(min=0), default=500, show_default=True, help="Steps in all.")
@click.option("--time-budget", type=float, default=None, help="Stop after this many seconds.")
@click.option("--batch-size", type=click.IntRange(min=1), default=48, show_default=True,
              help="Global batch (split over the ranks).")
@click.option("--curriculum/--uniform", default=True, show_default=True, help="Curriculum or uniform sampling.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="Checkpoint to write.")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="Write the checkpoint every N steps (0: at the end only).")
@click.option("--resume", is_flag=True, help="Continue from --checkpoint when it exists.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the weights and the sampling.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch threads per process (default: chosen from the work size, zor.engine.threads).")
@click.option("--distributed/--single", default=None,
              help="Data parallel (default: when torchrun's WORLD_SIZE is set).")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Collective timeout, seconds.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write the summary.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on rank 0.")
@cli_errors
def main(**opts: Any) -> None:
    """Train a Zor network (reconstruction) on one process, or data parallel under torchrun."""
    distributed = opts["distributed"] if opts["distributed"] is not None else "WORLD_SIZE" in os.environ
    if opts["resume"] and opts["checkpoint"] is None:
        raise ConfigError("--resume needs --checkpoint PATH (the checkpoint to continue from)")
    if opts["timeout"] <= 0:
        raise ConfigError(f"--timeout: expected a positive number of seconds, got {opts['timeout']:g}")
    outputs = [Path(opts[k]) for k in ("checkpoint", "json_path") if opts[k] is not None]
    for path in outputs:                         # refused before any work, as every CLI of the toolkit does
        check_output_file(path, create=True)
    sizes = parse_layers(opts["layers"])
    x = load_data(opts["data"], sizes[0], opts["per_class"], opts["seed"])
    if sizes[-1] != sizes[0]:
        raise ConfigError(f"--layers: reconstruction needs the last layer as wide as the first ({sizes[0]}), "
                          f"got {sizes[-1]}")
    with contextlib.ExitStack() as folders:     # missing output folders made, and removed again on failure
        for folder in {p.parent for p in outputs}:
            folders.enter_context(output_folders(folder))
        _train(x, sizes, opts, distributed)


def _train(x: np.ndarray, sizes: list[int], opts: dict[str, Any], distributed: bool) -> None:
    import torch

    from zor import Layer, Zor

    torch.manual_seed(opts["seed"])
    net = Zor([Layer(n) for n in sizes], seed=opts["seed"], device=_device(opts["device"], distributed),
              threads=opts["threads"],
              rule=opts["rule"], optimizer=opts["optimizer"], lr=opts["lr"], weight_average=opts["weight_average"])
    import torch.distributed as dist

    start = time.perf_counter()
    try:
        hist = _fit(net, x, opts, distributed)
        world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
        summary = {**_summary(hist, net, opts, world), "wall_s": time.perf_counter() - start}
        if rank == 0:
            click.echo(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
            if opts["json_path"]:
                write_text_atomic(opts["json_path"], json.dumps(summary, indent=2) + "\n")
    finally:    # also on an error: a process group left to interpreter shutdown can abort the process (SIGABRT)
        if distributed and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()

if __name__ == "__main__":
    main()
