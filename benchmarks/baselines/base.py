"""What every baseline shares: input checks, the optimizer, the timed training loop, its result.

A baseline is any object with

    fit(x, y=None, *, time_budget=None, steps=None) -> FitResult
    reconstruct(x) -> np.ndarray (N, n_out)

``fit`` runs training steps (one mini-batch each) until ``steps`` are done or
``time_budget`` seconds have passed, whichever comes first (at least one of the two
must be given). The clock is checked after every step, as :meth:`zor.Zor.fit` does,
so a step that has started always finishes.

Example:
    >>> r = timed_loop(lambda i: None, steps=3)
    >>> (r.steps, r.seconds >= 0.0)
    (3, True)
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Union

import numpy as np
import torch

from zor.common.errors import ConfigError, DTypeError, NonFiniteError, ShapeError
from zor.engine.averaging import WeightAverage

__all__ = ["FitResult", "as_images", "paired_images", "make_adamw", "minibatch_fit", "fit_zor", "timed_loop", "check_budget"]

ArrayLike = Union[np.ndarray, torch.Tensor]


@dataclass
class FitResult:
    """What one ``fit`` call did: steps run, wall seconds, samples seen."""

    steps: int
    seconds: float
    samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def as_images(x: Any, width: int, what: str = "x") -> torch.Tensor:
    """``x`` as a float32 CPU tensor (N, width), or a :mod:`zor.common.errors` error saying why not."""
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.floating):
            raise DTypeError(f"{what}: expected a floating-point array (images scaled to [0, 1]), got dtype {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, torch.Tensor):
        if not x.is_floating_point():
            raise DTypeError(f"{what}: expected a floating-point tensor (images scaled to [0, 1]), got {x.dtype}")
    else:
        raise DTypeError(f"{what}: expected a numpy array or torch tensor, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] != width:
        raise ShapeError(f"{what}: expected shape (N, {width}), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ShapeError(f"{what}: expected at least one row, got an empty array {tuple(x.shape)}")
    x = x.detach().to(device="cpu", dtype=torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteError(f"{what}: expected finite values, got {int((~torch.isfinite(x)).sum())} NaN/inf entries")
    return x


def paired_images(x: Any, y: Any, n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) checked as by :func:`as_images` (y defaults to x) and with the same row count."""
    x = as_images(x, n_in, "x")
    y = x if y is None else as_images(y, n_out, "y")
    if y.shape[0] != x.shape[0]:
        raise ShapeError(f"y: expected {x.shape[0]} rows to match x, got {y.shape[0]}")
    return x, y


def make_adamw(params: Any, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, fused where this torch build has the kernel."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel in this build
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def minibatch_fit(
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    batch_size: int,
    *,
    time_budget: Optional[float] = None,
    steps: Optional[int] = None,
    weight_average: float = 0.0,
) -> FitResult:
    """Backprop on ``loss(x[idx], y[idx])``, idx drawn uniformly with replacement, under :func:`timed_loop`.

    ``weight_average`` = β > 0 averages the parameters over the run and ends with the average,
    as ``ZorConfig.weight_average`` does for Zor (:class:`zor.engine.averaging.WeightAverage`).
    """
    n = x.shape[0]
    avg = None
    if weight_average:
        avg = WeightAverage([p for group in optimizer.param_groups for p in group["params"]], weight_average)

    def step(_: int) -> None:
        idx = torch.randint(0, n, (batch_size,), generator=generator)
        value = loss(x[idx], y[idx])
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        if avg is not None:
            avg.update()

    result = timed_loop(step, time_budget=time_budget, steps=steps, batch_size=batch_size)
    if avg is not None:
        avg.apply()
    return result


def fit_zor(net: Any, x: Any, y: Any, batch_size: int, *, time_budget: Optional[float] = None,
            steps: Optional[int] = None, curriculum: bool = True) -> FitResult:
    """:meth:`zor.Zor.fit` behind the baselines' interface: ``steps`` batches or ``time_budget`` seconds."""
    check_budget(time_budget, steps)
    hist = net.fit(x, y, steps=steps if steps is not None else 10 ** 12, batch_size=batch_size,
                   curriculum=curriculum, progress=False, time_budget=time_budget)
    return FitResult(steps=hist.steps, seconds=hist.seconds, samples=hist.steps * batch_size)


def check_budget(time_budget: Optional[float], steps: Optional[int]) -> None:
    """Validate a (time_budget, steps) pair: at least one given, each well-formed."""
    if time_budget is None and steps is None:
        raise ConfigError("fit needs time_budget (seconds) or steps (or both), got neither")
    if time_budget is not None:
        if isinstance(time_budget, bool) or not isinstance(time_budget, (int, float)) \
                or not math.isfinite(time_budget) or time_budget <= 0:
            raise ConfigError(f"time_budget must be a finite number of seconds > 0, got {time_budget!r}")
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ConfigError(f"steps must be an int ≥ 0, got {steps!r}")


def timed_loop(
    step: Callable[[int], None],
    *,
    time_budget: Optional[float] = None,
    steps: Optional[int] = None,
    batch_size: int = 0,
    sync: Optional[Callable[[], None]] = None,
) -> FitResult:
    """Call ``step(i)`` for i = 0, 1, ... until ``steps`` or ``time_budget`` runs out.

    ``sync`` (e.g. ``torch.cuda.synchronize``) runs before the clock stops.
    """
    check_budget(time_budget, steps)
    n = 0
    start = time.perf_counter()
    while steps is None or n < steps:
        step(n)
        n += 1
        if time_budget is not None and time.perf_counter() - start >= time_budget:
            break
    if sync is not None:
        sync()
    return FitResult(steps=n, seconds=time.perf_counter() - start, samples=n * batch_size)
