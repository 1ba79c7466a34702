"""Input checks: shape, dtype and finiteness, with "expected X, got Y" errors.

A model input is a 2-D floating array (B, n) with B ≥ 1. Any floating dtype
(float16/32/64) is accepted and converted to float32; integers, bools, complex
numbers, strings and objects are refused (:class:`~zor.common.errors.DTypeError`), as are
other ranks or widths (:class:`~zor.common.errors.ShapeError`) and NaN/inf
(:class:`~zor.common.errors.NonFiniteError`).

Example:
    >>> import numpy as np
    >>> check_array("input", np.zeros((2, 3), np.float64), 3).dtype
    dtype('float32')
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from zor.common.errors import DTypeError, NonFiniteError, ShapeError

__all__ = ["check_array"]

_F32 = np.dtype(np.float32)


def check_array(name: str, x: Any, width: int, batch: Optional[int] = None) -> np.ndarray:
    """``x`` as a C-contiguous float32 (B, width) array, or a ZorError subclass.

    ``batch``, when given, is the row count ``x`` must have (state tensors must
    match their input's batch).
    """
    if (type(x) is np.ndarray and x.dtype == _F32 and x.ndim == 2 and x.shape[1] == width and x.shape[0]
            and (batch is None or x.shape[0] == batch) and x.flags.c_contiguous
            and np.isfinite(x).all()):
        return x        # the common call: nothing to convert, so only the finiteness test runs
    want = f"({batch if batch is not None else 'B'}, {width})"
    if not isinstance(x, np.ndarray):
        if isinstance(x, (str, bytes)) or x is None:
            raise DTypeError(f"{name}: expected a float32 array of shape {want}, got {type(x).__name__}")
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as exc:   # ragged nested lists and the like
            raise ShapeError(f"{name}: expected a float32 array of shape {want}, got a "
                             f"{type(x).__name__} numpy cannot make an array of ({exc})") from None
    if x.dtype.kind != "f":
        hint = " (scale integer images to [0, 1] floats first)" if x.dtype.kind in "ui" else ""
        raise DTypeError(f"{name}: expected a floating-point array (float32), got dtype {x.dtype}{hint}")
    if x.ndim != 2 or x.shape[1] != width:
        hint = ""
        if x.ndim == 1 and x.shape[0] == width:
            hint = " (one sample? add a batch axis: x[None])"
        elif x.ndim > 2 and int(np.prod(x.shape[1:])) == width:
            hint = f" (images? flatten them: x.reshape(len(x), {width}))"
        raise ShapeError(f"{name}: expected shape {want}, got {tuple(x.shape)}{hint}")
    if x.shape[0] == 0:
        raise ShapeError(f"{name}: expected at least one row, got an empty batch {tuple(x.shape)}")
    if batch is not None and x.shape[0] != batch:
        raise ShapeError(f"{name}: expected shape {want} to match the input's batch, got {tuple(x.shape)}")
    if not np.isfinite(x).all():
        bad = ~np.isfinite(x)
        n_nan = int(np.isnan(x).sum())
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise NonFiniteError(f"{name}: expected finite values, got {n_nan} NaN and {int(bad.sum()) - n_nan} inf "
                             f"entries (first at {first})")
    with np.errstate(over="ignore"):
        x32 = np.ascontiguousarray(x, dtype=np.float32)
    if x.dtype.itemsize > 4 and not np.isfinite(x32).all():
        first = tuple(int(i) for i in np.argwhere(~np.isfinite(x32))[0])
        raise NonFiniteError(f"{name}: expected values within float32 range (|x| < 3.4e38), got "
                             f"{x[first]!r} at {first}, which overflows to inf")
    return x32
