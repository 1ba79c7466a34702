"""Training a Zor network on a data set: the loop behind :meth:`Zor.fit <zor.engine.network.Zor.fit>`.

One step draws a batch of rows (more often the ones with a high recent error:
:mod:`zor.common.curriculum`), runs ``train_batch`` on it (forward, error = y − output,
the learning step of :mod:`zor.engine.learning`), and records the training accuracy
100·(1 − mean|error|). With ``config.weight_average`` = β > 0 the weights are averaged
over the run and the run ends with the average (:mod:`zor.engine.averaging`).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import torch

from zor.common.errors import ConfigError, ShapeError, ZorWarning

from .averaging import WeightAverage
from zor.common.curriculum import CurriculumSampler

if TYPE_CHECKING:
    from .network import ArrayLike, Zor

__all__ = ["History", "fit", "check_signal"]

SIGNAL_RATIO = 1e-3  # fit() warns when std(output charges) < this × std(first hidden charges)


@dataclass
class History:
    """What :meth:`Zor.fit` did: per-step training accuracy and timings."""

    steps: int = 0
    seconds: float = 0.0
    train_accuracy: list = field(default_factory=list)     # 100·(1 − mean|error|) per step
    val: list = field(default_factory=list)                # (step, metrics dict) pairs


def fit(net: "Zor", x: "ArrayLike", y: Optional["ArrayLike"], steps: int, batch_size: int, curriculum: bool,
        validation: Optional[tuple], eval_every: int, progress: bool, time_budget: Optional[float]) -> History:
    """Train ``net`` on (x, y) (y None: x) for ``steps`` batches; the arguments are :meth:`Zor.fit`'s."""
    x, y = _checked_data(net, x, y, steps, batch_size)
    sampler = CurriculumSampler(x.shape[0], rng=net._sampler_rng, enabled=curriculum)
    check_signal(net, x[: min(batch_size, x.shape[0])] if not x.is_sparse else x.narrow_copy(0, 0, 1))
    hist = History()
    average = WeightAverage(net.weights, net.config.weight_average) if net.config.weight_average else None
    bar = _progress(steps, progress)
    start = time.perf_counter()
    for step in range(steps):
        idx = sampler.sample(batch_size)
        idx_t = torch.as_tensor(idx, device=net.device)
        err = net._train_step(x.index_select(0, idx_t), y[idx_t])
        if average is not None:
            average.update()
        per_sample = err.abs().mean(dim=1)
        sampler.update(idx, per_sample.detach().cpu().numpy())
        acc = 100.0 * (1.0 - float(per_sample.mean()))
        hist.train_accuracy.append(acc)
        hist.steps = step + 1
        if validation is not None and eval_every and (step + 1) % eval_every == 0:
            hist.val.append((step + 1, net.evaluate(*validation)))
        if bar is not None:
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(acc=f"{acc:.1f}%")
        if time_budget is not None and time.perf_counter() - start >= time_budget:
            break
    if average is not None:
        average.apply()
    if net.device.type == "cuda":
        torch.cuda.synchronize(net.device)
    hist.seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    return hist


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


def _progress(total: int, enabled: bool) -> Any:
    """A tqdm bar over ``total`` steps, or None (disabled, or tqdm missing)."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is part of the `train` extra; train silently without it
        return None
    return tqdm(total=total, desc="zor fit", unit="step", leave=False)
