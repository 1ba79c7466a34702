"""Input checks of the engine: a batch is a float (B, width) tensor or array of finite values.

Every public entry of :class:`~zor.engine.network.Zor` (forward, train_batch, fit,
predict, evaluate, reinforce) passes its arrays through :func:`as_batch`, so bad input
fails early with an error that names what was expected and what was given.

The checks cost a few µs a batch, so a training step can afford them every time:
dtype and shape are read from the tensor's header, and finiteness takes one reduction,

    Σ_bj x_bj finite  ⇒  every x_bj finite      (a NaN or ±inf entry makes the sum NaN/±inf)

with the elementwise isfinite(x) run only when the sum is not finite (a bad entry, or
finite entries whose float32 sum overflows).

Example:
    >>> import numpy as np, torch
    >>> as_batch(np.zeros((2, 3), np.float32), 3, "input", torch.device("cpu")).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
import torch

from zor.common.errors import DTypeError, NonFiniteError, ShapeError, StateError

__all__ = ["as_batch", "ready_pair", "as_state"]

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
    # Σ x is finite when every x is (one fused reduction read back as a number, ~2 µs at 48 × 784); only a
    # NaN/inf sum (a bad entry, or finite values whose sum overflows) pays for the elementwise check
    if not math.isfinite(x.sum().item()) and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise NonFiniteError(f"{what}: expected finite values, got {bad} NaN/inf entries")
    return x


def ready_pair(x: Any, target: Any, n_in: int, n_out: int, device: torch.device) -> bool:
    """Whether a training step's x (B, n_in) and target (B, n_out) are already what :func:`as_batch` would give
    (dense float32 tensors on ``device``, B ≥ 1 rows each) and finite, read back in one number (Σ x + Σ target:
    a training step's common case, checked in one read instead of two). False sends both through
    :func:`as_batch`, which names what is wrong."""
    if type(x) is not torch.Tensor or type(target) is not torch.Tensor or x.layout != torch.strided \
            or target.layout != torch.strided or x.dtype != torch.float32 or target.dtype != torch.float32:
        return False
    if x.ndim != 2 or target.ndim != 2 or x.shape[1] != n_in or target.shape[1] != n_out \
            or x.shape[0] != target.shape[0] or x.shape[0] == 0 or x.device != device or target.device != device:
        return False
    total = x.sum() if target is x else x.sum().add_(target.sum())
    return math.isfinite(total.item())


def as_state(state: Sequence[Any], layers: Sequence[Any], device: torch.device) -> list[Optional[torch.Tensor]]:
    """Charges for Zor.set_state: one entry per layer, a float32 (B, n_i) copy on ``device`` where layer i is
    stateful and the entry is given, None elsewhere; StateError otherwise."""
    if len(state) != len(layers):
        raise StateError(f"expected {len(layers)} state entries (one per layer), got {len(state)}")
    new: list[Optional[torch.Tensor]] = []
    for i, (layer, s) in enumerate(zip(layers, state)):
        if s is None or not layer.stateful:
            new.append(None)
            continue
        s = torch.as_tensor(s, dtype=torch.float32, device=device)
        if s.ndim != 2 or s.shape[1] != layer.size:
            raise StateError(f"state of layer {i}: expected shape (B, {layer.size}), got {tuple(s.shape)}")
        new.append(s.clone())
    return new
