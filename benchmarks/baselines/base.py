"""What every baseline shares: input checks, the timed training loop, its result.

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

from zor.errors import ConfigError, DTypeError, NonFiniteError, ShapeError

__all__ = ["FitResult", "as_images", "timed_loop", "check_budget"]

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
    """``x`` as a float32 CPU tensor (N, width), or a :mod:`zor.errors` error saying why not."""
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
