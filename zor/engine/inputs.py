"""Input checks of the engine: a batch is a float (B, width) tensor or array of finite values.

Every public entry of :class:`~zor.engine.network.Zor` (forward, train_batch, fit,
predict, evaluate, reinforce) passes its arrays through :func:`as_batch`, so bad input
fails early with an error that names what was expected and what was given.

Example:
    >>> import numpy as np, torch
    >>> as_batch(np.zeros((2, 3), np.float32), 3, "input", torch.device("cpu")).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from zor.common.errors import DTypeError, NonFiniteError, ShapeError

__all__ = ["as_batch"]

_INTEGER_HINT = " (scale integer images to [0, 1] first)"


def as_batch(x: Any, width: int, what: str, device: torch.device) -> torch.Tensor:
    """x as a float32 (B, width) tensor on ``device``; DTypeError, ShapeError or NonFiniteError otherwise."""
    if isinstance(x, np.ndarray):
        if not (np.issubdtype(x.dtype, np.floating)):
            raise DTypeError(f"{what}: expected a floating-point array, got dtype {x.dtype}"
                             + (_INTEGER_HINT if np.issubdtype(x.dtype, np.integer) else ""))
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        raise DTypeError(f"{what}: expected a torch.Tensor or numpy array, got {type(x).__name__}")
    if not x.is_floating_point():
        raise DTypeError(f"{what}: expected a floating-point tensor, got {x.dtype}"
                         + (_INTEGER_HINT if x.dtype in (torch.uint8, torch.int32, torch.int64) else ""))
    if x.ndim != 2 or x.shape[1] != width:
        raise ShapeError(f"{what}: expected shape (B, {width}), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ShapeError(f"{what}: expected at least one row, got an empty batch {tuple(x.shape)}")
    x = x.to(device=device, dtype=torch.float32)
    if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():  # sum first: cheap
        bad = int((~torch.isfinite(x)).sum())
        raise NonFiniteError(f"{what}: expected finite values, got {bad} NaN/inf entries")
    return x
