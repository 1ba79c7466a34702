"""Event tensors through a stateful model: one stream step per time step (``zor-run`` on a NIR import).

A NIR import's file is one time step; an input file holds T steps of events:

    xs (T, B, *input_shape) or (T, *input_shape)   (also flat: (T, B, n_0) or (T, n_0))
    y_t = stream.step(xs_t)["output"]               for t = 0 .. T − 1, from the fresh state
    result (T, B, n_out) or (T, n_out)              the output node's value at every step

Example:
    >>> ys = run_events(Model("net.onnx"), np.load("events.npy"))     # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from zor.common import format as fmt
from zor.common.errors import DataError, DTypeError, NonFiniteError, ShapeError

if TYPE_CHECKING:
    from .model import Model

__all__ = ["is_event_model", "load_events", "event_batches", "run_events"]


def is_event_model(model: "Model") -> bool:
    """Whether ``model`` takes event tensors over time (a stateful NIR import)."""
    return model.stateful and model.metadata.task.get("source") == "nir"


def load_events(path: Any) -> np.ndarray:
    """The array of a .npy file (never unpickled); an unreadable file is a DataError."""
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: expected a .npy array file of events, could not read it ({exc})") from None


def _event_shape(model: "Model") -> tuple[int, ...]:
    shape = model.metadata.task.get("input", {}).get("shape")
    return tuple(int(v) for v in shape) if isinstance(shape, list) and shape else (model.sizes[0],)


def event_batches(model: "Model", xs: Any) -> tuple[np.ndarray, bool]:
    """(``xs`` as float32 (T, B, n_0), whether it had a batch axis); a bad shape, dtype or value names what was
    expected."""
    xs = np.asarray(xs)
    shape, n0 = _event_shape(model), model.sizes[0]
    want = f"(T, B, {', '.join(map(str, shape))}) or (T, {', '.join(map(str, shape))})"
    if xs.dtype.kind not in "fiub":
        raise DTypeError(f"events: expected numbers {want}, got dtype {xs.dtype}")
    if xs.ndim >= 2 and xs.shape[0] >= 1 and math.prod(xs.shape[1:]) == n0 and xs.shape[1:] in (shape, (n0,)):
        batched = False
        xs = xs.reshape(xs.shape[0], 1, n0)
    elif xs.ndim >= 3 and xs.shape[0] >= 1 and xs.shape[1] >= 1 and xs.shape[2:] in (shape, (n0,)):
        batched = True
        xs = xs.reshape(xs.shape[0], xs.shape[1], n0)
    else:
        raise ShapeError(f"events: expected {want}, got {tuple(xs.shape)}")
    xs = xs.astype(np.float32)
    if not np.isfinite(xs).all():
        raise NonFiniteError(f"events: {int((~np.isfinite(xs)).sum())} non-finite value(s): expected finite {want}")
    return xs, batched


def run_events(model: "Model", xs: Any) -> np.ndarray:
    """The output at every step of ``xs`` (see the module docstring); a bad shape or dtype names what was expected."""
    xs, batched = event_batches(model, xs)
    stream = model.stream()
    ys = np.stack([stream.step(np.ascontiguousarray(x))[fmt.OUTPUT] for x in xs])   # (T, B, n_out)
    return ys if batched else ys[:, 0]
