"""Training a Zor network on a data set: the loop behind :meth:`Zor.fit <zor.engine.network.Zor.fit>`.

One step draws a global batch of B rows (more often the ones with a high recent error:
:mod:`zor.common.curriculum`), runs the engine's training step on it (forward,
error = y − output, the learning step of :mod:`zor.engine.learning`), and records

    e_b = mean_j |error_bj|                 per-sample error, for the sampler   (B,)
    acc = 100 · (1 − mean_b e_b)            training accuracy of the step

Nothing is read back to the host on every step where that would stall a GPU: the
per-step e and acc stay on the device and are read back together every
``sync_every`` steps (the sampler then sees each step's errors, in order). On the CPU
reading back costs nothing, ``sync_every`` defaults to 1 and the sampler sees every
step's errors before the next draw; on CUDA it defaults to :data:`CUDA_SYNC_EVERY`, so
the draws of the steps in between use errors up to ``sync_every`` steps old.

Data parallel (``distributed=True``, a torch.distributed process group of world size
N): every rank draws the same global batch (same sampler state everywhere), trains on
its shard of B/N rows with the engine's all-reducing step, and all-gathers the
per-sample errors so the sampler sees the whole global batch. Under the columns
exchange (``reducer.whole_batch``) every rank hands the engine the whole global batch
instead: it holds the whole data set anyway, so no rows move, and the per-sample
errors come back summed over the ranks from the step's own all-reduce. Checkpoints
(:mod:`zor.engine.checkpoint_file`, with the training state) are written by rank 0.
With ``config.weight_average`` = β > 0 the weights are averaged over the run and the
run ends with the average (:mod:`zor.engine.averaging`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch

from zor.common.curriculum import CurriculumSampler
from zor.common.errors import ConfigError, ShapeError, ZorWarning

from . import resume, threads
from .averaging import WeightAverage

if TYPE_CHECKING:
    from .network import ArrayLike, Zor

__all__ = ["History", "Run", "fit", "check_signal", "CUDA_SYNC_EVERY"]

SIGNAL_RATIO = 1e-3   # fit() warns when std(output charges) < this × std(first hidden charges)
CUDA_SYNC_EVERY = 25  # default steps between read-backs on a GPU (progress refresh and sampler update)


@dataclass
class History:
    """What :meth:`Zor.fit` did: per-step training accuracy and timings."""

    steps: int = 0
    seconds: float = 0.0
    train_accuracy: list = field(default_factory=list)     # 100·(1 − mean|error|) per step
    val: list = field(default_factory=list)                # (step, metrics dict) pairs
    start_step: int = 0                                    # > 0 when the run resumed from a checkpoint
    threads: Optional[int] = None                          # torch threads per step (CPU; zor.engine.threads)
    step_ends: list = field(default_factory=list)          # seconds from the start to each step's end (host clock)


@dataclass
class Run:
    """How fit() runs beyond the data and the step count (the keyword options of :meth:`Zor.fit`)."""

    distributed: bool = False         # shard every global batch over a torch.distributed group
    checkpoint: Any = None            # path (str or os.PathLike) of the checkpoint (with training state) to write
    checkpoint_every: int = 0         # write it every this many steps (0: only at the end)
    resume: bool = False              # continue from ``checkpoint`` when it exists
    sync_every: Optional[int] = None  # steps between host read-backs (None: 1 on CPU, CUDA_SYNC_EVERY on CUDA)
    timeout: Optional[float] = None   # collective timeout (s) when fit() starts the process group itself


class _Pending:
    """Per-step errors and accuracies kept on the device until the next read-back."""

    def __init__(self) -> None:
        self.idx: list[np.ndarray] = []
        self.errors: list[torch.Tensor] = []       # (B,) each
        self.mean: list[torch.Tensor] = []         # () each: mean_b e_b

    def add(self, idx: np.ndarray, errors: torch.Tensor, mean: torch.Tensor) -> None:
        self.idx.append(idx)
        self.errors.append(errors)
        self.mean.append(mean)

    def flush(self, sampler: CurriculumSampler, hist: History) -> Optional[float]:
        """One read-back: every pending step's errors go to the sampler, in order; returns the last accuracy."""
        if not self.idx:
            return None
        one = len(self.idx) == 1                                   # a read-back every step (CPU): nothing to stack
        errors = (self.errors[0][None] if one else torch.stack(self.errors)).cpu().numpy()   # (k, B): one copy
        means = (self.mean[0][None] if one else torch.stack(self.mean)).cpu().numpy()        # (k,)
        for idx, e in zip(self.idx, errors):
            sampler.update(idx, e)
        hist.train_accuracy.extend(100.0 * (1.0 - float(m)) for m in means)
        self.idx, self.errors, self.mean = [], [], []
        return hist.train_accuracy[-1]


def fit(net: "Zor", x: "ArrayLike", y: Optional["ArrayLike"], steps: int, batch_size: int, curriculum: bool,
        validation: Optional[tuple], eval_every: int, progress: bool, time_budget: Optional[float],
        run: Optional[Run] = None) -> History:
    """Train ``net`` on (x, y) (y None: x) for ``steps`` batches; the arguments are :meth:`Zor.fit`'s."""
    run = _checked_run(run or Run())
    x, y = _checked_data(net, x, y, steps, batch_size)
    sync_every = _sync_every(net, run.sync_every)
    group = _Group.start(net, batch_size, run.timeout) if run.distributed else _Group()
    sampler = CurriculumSampler(x.shape[0], rng=net._sampler_rng, enabled=curriculum)
    check_signal(net, x[: min(batch_size, x.shape[0])] if not x.is_sparse else x.narrow_copy(0, 0, 1))
    hist = History(threads=threads.choose_threads(net, batch_size // group.world) if net.device.type == "cpu"
                   else None)
    average = WeightAverage(net.weights, net.config.weight_average) if net.config.weight_average else None
    state = resume.TrainingState(sampler, average, hist, batch_size, curriculum)
    if run.resume and run.checkpoint is not None:
        hist.start_step = resume.restore(net, run.checkpoint, state)
    bar = _progress(steps, hist.start_step, progress and group.rank == 0)
    pending = _Pending()
    start = time.perf_counter()
    for step in range(hist.start_step, steps):
        idx = sampler.sample(batch_size)
        errors = group.step(net, x, y, idx)                        # (B,) per-sample |error|, on the device
        if average is not None:
            average.update()
        pending.add(idx, errors, errors.mean())
        hist.steps = step + 1
        out_of_time = time_budget is not None and group.agree(time.perf_counter() - start >= time_budget)
        last = out_of_time or step + 1 == steps
        save_now = run.checkpoint is not None and run.checkpoint_every and (step + 1) % run.checkpoint_every == 0
        if last or save_now or (step + 1) % sync_every == 0:
            acc = pending.flush(sampler, hist)
            if bar is not None:
                bar.update(step + 1 - bar.n)
                bar.set_postfix(acc=f"{acc:.1f}%")
        hist.step_ends.append(time.perf_counter() - start)        # on a GPU: queued, unless read back here
        if save_now and not last:
            group.save(net, run.checkpoint, state)
        if validation is not None and eval_every and (step + 1) % eval_every == 0:
            net.reducer.gather_state(net)   # the columns exchange: every weight whole before the evaluation
            hist.val.append((step + 1, net.evaluate(*validation)))
        if out_of_time:
            break
    pending.flush(sampler, hist)
    net.reducer.gather_state(net)           # the run ends with whole optimiser state on every rank
    if run.checkpoint is not None:
        group.save(net, run.checkpoint, state)                     # before averaging: resumable
    if average is not None:
        average.apply()
    if net.device.type == "cuda":
        torch.cuda.synchronize(net.device)
    hist.seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    return hist


class _Group:
    """The ranks fit() trains with: one process (the default), or a torch.distributed group."""

    def __init__(self, rank: int = 0, world: int = 1, device: torch.device = torch.device("cpu")) -> None:
        self.rank, self.world = rank, world
        self.device = device            # where the collectives' small tensors live (the GPU under NCCL)
        self.rows: Optional[torch.Tensor] = None   # the global batch's input rows, kept between steps (columns)

    @classmethod
    def start(cls, net: "Zor", batch_size: int, timeout: Optional[float]) -> "_Group":
        """The running process group (started from torchrun's variables when none is), checked."""
        import torch.distributed as dist

        if not dist.is_available():
            raise ConfigError("distributed=True: this torch build has no torch.distributed")
        if not dist.is_initialized():
            init_process_group(net.device, timeout)
        group = cls(dist.get_rank(), dist.get_world_size(),
                    net.device if dist.get_backend() == "nccl" else torch.device("cpu"))
        if batch_size % group.world:
            raise ConfigError(f"batch_size {batch_size} (the global batch) must be a multiple of the world size "
                              f"{group.world}: each rank trains on batch_size / world size rows")
        group.check_same(net, batch_size)
        net.set_distributed(True)
        return group

    def check_same(self, net: "Zor", batch_size: int) -> None:
        """ConfigError unless every rank runs the same network settings and global batch (a hash per rank,
        all-gathered: nothing is pickled)."""
        import torch.distributed as dist

        text = json.dumps({**resume.describe(net), "batch_size": batch_size}, sort_keys=True)
        digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:7], "little")
        mine = torch.tensor([digest], dtype=torch.int64, device=self.device)
        every = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(every, mine)
        differ = [r for r, t in enumerate(every) if int(t) != int(every[0])]
        if differ:
            raise ConfigError(f"ranks {differ} run a different network configuration or global batch than rank 0 "
                              f"(this is rank {self.rank}): expected the same layers, settings and batch_size "
                              "on every rank")

    def step(self, net: "Zor", x: torch.Tensor, y: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        """One training step on this rank's shard of the global batch ``idx``; the per-sample |error| of
        the whole global batch (B,), on the device."""
        idx_t = torch.from_numpy(idx)
        if net.device.type == "cuda":
            idx_t = idx_t.pin_memory().to(net.device, non_blocking=True)
        if self.world > 1 and net.reducer.whole_batch and not x.is_sparse:   # the columns exchange: no shard
            if self.rows is None or self.rows.shape != (len(idx),) + x.shape[1:]:   # kept: no fresh pages a step
                self.rows = x.new_empty((len(idx),) + x.shape[1:])
            xb = torch.index_select(x, 0, idx_t, out=self.rows)    # (B, n_0): every rank draws the same batch
            yb = xb if y is x else y.index_select(0, idx_t)
            threads.for_step(net, len(idx) // self.world, xb.device)
            return net.reducer.train_whole(net, xb, yb)            # (B,), summed over the ranks in its all-reduce
        if self.world > 1:
            shard = len(idx) // self.world
            idx_t = idx_t[self.rank * shard:(self.rank + 1) * shard]
        xb = x.index_select(0, idx_t)                              # (B_r, n_0)
        yb = xb if y is x else y.index_select(0, idx_t)            # an autoencoder's rows are gathered once
        errors = net._train_step(xb, yb).abs().mean(dim=1)
        if self.world == 1:
            return errors
        import torch.distributed as dist

        every = [torch.empty_like(errors) for _ in range(self.world)]
        dist.all_gather(every, errors)
        return torch.cat(every)

    def agree(self, flag: bool) -> bool:
        """True on every rank when it is true on any (the time budget ends the run on all ranks at once)."""
        if self.world == 1:
            return flag
        import torch.distributed as dist

        t = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def save(self, net: "Zor", path: str, state: resume.TrainingState) -> None:
        net.reducer.gather_state(net)       # every rank: sharded optimiser rows made whole (zor.engine.sharded)
        if self.rank == 0:
            resume.save(net, path, state)


ENV_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE")  # what a process group is started from


def init_process_group(device: torch.device, timeout: Optional[float] = None) -> None:
    """Start torch.distributed from torchrun's environment variables: gloo on CPUs, NCCL on GPUs;
    ``timeout`` (s) bounds every collective, so a rank that died makes the others fail, not hang."""
    import datetime

    import torch.distributed as dist

    missing = [v for v in ENV_VARS if not os.environ.get(v)]
    if missing:
        raise ConfigError(f"distributed training needs the environment variables {', '.join(ENV_VARS)}; "
                          f"missing: {', '.join(missing)} (torchrun sets them all)")
    if timeout is not None and not (timeout > 0):
        raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
    kwargs: dict[str, Any] = {"timeout": datetime.timedelta(seconds=timeout)} if timeout else {}
    if device.type == "cuda":
        kwargs["device_id"] = device
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", **kwargs)


def _checked_run(run: Run) -> Run:
    """The run options checked (ConfigError naming what was expected), the checkpoint path as a str."""
    every = run.checkpoint_every
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise ConfigError(f"checkpoint_every must be an int ≥ 0 (0: write at the end only), got {every!r}")
    if run.checkpoint is None:
        if run.resume or every:
            raise ConfigError("resume=True and checkpoint_every need checkpoint=PATH: the checkpoint to "
                              "continue from and write")
        return run
    return replace(run, checkpoint=os.fspath(run.checkpoint))


def _sync_every(net: "Zor", value: Optional[int]) -> int:
    if value is None:
        return CUDA_SYNC_EVERY if net.device.type == "cuda" else 1
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"sync_every must be a positive int (steps between read-backs), got {value!r}")
    return value


def _checked_data(net: "Zor", x: "ArrayLike", y: Optional["ArrayLike"], steps: int,
                  batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fit()'s settings checked and its data as tensors on the network's device: (x, y)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"steps must be an int ≥ 0, got {steps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
    x = net._as_input(x, net.layers[0].size, "x", allow_sparse=True)
    if y is None:
        y = x.to_dense() if x.is_sparse else x
    else:
        y = net._as_input(y, net.layers[-1].size, "y")
    if y.shape[0] != x.shape[0]:
        raise ShapeError(f"y: expected {x.shape[0]} rows to match x, got {y.shape[0]}")
    return x, y


@torch.no_grad()
def check_signal(net: "Zor", x: torch.Tensor) -> None:
    """Warn (once per network) when the forward signal dies out on its way up.

    Each gated layer passes on only part of its charges; through many layers with
    a small ``init_scale`` the output charges start near zero and learning does not
    recover (``benchmarks/depth.py``: 12 layers at scale 0.5 start with output std
    1e-5 and reach 40.8 %, at 1.0 they reach 75.1 %). The check compares the std of
    the output charges with the first hidden layer's on one batch.
    """
    if net._signal_checked or len(net.layers) < 4:
        return
    net._signal_checked = True
    saved = net.state
    _, traces = net._forward(x)
    net._state = saved
    first, last = float(traces[1].c.std()), float(traces[-1].c.std())
    if first > 0 and last < SIGNAL_RATIO * first:
        warnings.warn(
            f"the forward signal dies out across {len(net.layers)} layers: the output charges' std is "
            f"{last:.2g} against {first:.2g} at the first hidden layer (expected at least {SIGNAL_RATIO:g}x); "
            f"learning may not recover. Raise init_scale (now {net.config.init_scale:g}; 1.0 trains 12 "
            "layers, see benchmarks/depth.py)", ZorWarning, stacklevel=5)


def _progress(total: int, done: int, enabled: bool) -> Any:
    """A tqdm bar over ``total`` steps (``done`` of them already), or None (disabled, or tqdm missing)."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is part of the `train` extra; train silently without it
        return None
    return tqdm(total=total, initial=done, desc="zor fit", unit="step", leave=False)
