"""Input checks: shape, dtype and finiteness, with "expected X, got Y" errors.

A model input is a 2-D floating array (B, n) with B ≥ 1. Any floating dtype
(float16/32/64) is accepted and converted to float32; integers, bools, complex
numbers, strings and objects are refused (:class:`~zor.common.errors.DTypeError`), as are
other ranks or widths (:class:`~zor.common.errors.ShapeError`) and NaN/inf
(:class:`~zor.common.errors.NonFiniteError`).

After a call, :func:`check_outputs` catches what finite inputs can still do: charges
that overflow float32 (inputs near 3.4e38 give inf, then NaN) raise NonFiniteError
instead of returning NaN rows; :func:`run_failure` turns onnxruntime's failures into
errors that say what happened (memory running out names the batch and what it needed).

Example:
    >>> import numpy as np
    >>> check_array("input", np.zeros((2, 3), np.float64), 3).dtype
    dtype('float32')
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from zor.common.errors import (
    ConfigError,
    DTypeError,
    InputError,
    ModelFileError,
    NonFiniteError,
    ShapeError,
)

from .weightfile import memory_budget

__all__ = ["check_array", "all_finite", "check_outputs", "run_failure", "batch_bytes", "check_batch_memory"]

_F32 = np.dtype(np.float32)
_ONES = np.ones(0, np.float32)


def all_finite(x: np.ndarray) -> bool:
    """Whether every element of the float array ``x`` is finite.

    Σ x·1 is finite only when every x is (NaN and ±inf propagate through IEEE products
    and sums), and from a few thousand floats up one BLAS dot costs less than
    ``np.isfinite(x).all()`` (6.3 vs 9.3 µs for 64 × 784; no gain for one row of 784);
    a non-finite sum may be an overflow of finite values, so then the exact test decides.
    """
    global _ONES
    if x.size >= 4096 and x.dtype == _F32 and x.flags.c_contiguous:
        if _ONES.size < x.size:
            _ONES = np.ones(max(x.size, 2 * _ONES.size), np.float32)
        if np.isfinite(np.vdot(x, _ONES[:x.size])):
            return True
    return bool(np.isfinite(x).all())


def check_array(name: str, x: Any, width: int, batch: Optional[int] = None) -> np.ndarray:
    """``x`` as a C-contiguous float32 (B, width) array, or a ZorError subclass.

    ``batch``, when given, is the row count ``x`` must have (state tensors must
    match their input's batch).
    """
    if (type(x) is np.ndarray and x.dtype == _F32 and x.ndim == 2 and x.shape[1] == width and x.shape[0]
            and (batch is None or x.shape[0] == batch) and x.flags.c_contiguous
            and all_finite(x)):
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


def check_outputs(out: Mapping[str, np.ndarray], names: Sequence[str], feeds: Mapping[str, np.ndarray]) -> None:
    """NonFiniteError when an output in ``names`` holds NaN/inf although every feed was finite (checked by
    :func:`check_array`): the charges overflowed float32. One pass over the outputs only."""
    for name in names:
        value = out[name]
        if value.dtype.kind == "f" and not all_finite(value):
            n_nan = int(np.isnan(value).sum())
            n_inf = int(np.isinf(value).sum())
            largest = max(float(np.abs(f).max()) for f in feeds.values())
            raise NonFiniteError(f"{name}: the model gave {n_nan} NaN and {n_inf} inf values from finite inputs "
                                 f"(largest |value| fed: {largest:.3g}): the charges overflowed float32 "
                                 "(|c| > 3.4e38); expected inputs on the scale the model was trained on: scale "
                                 "them down")


def batch_bytes(batch: int, sizes: Sequence[int]) -> int:
    """Bytes the charges of one call take at least: ``batch`` rows × every layer's units × 4 bytes (float32)."""
    return int(batch) * int(sum(sizes)) * 4


def check_batch_memory(batch: int, sizes: Sequence[int], what: str = "batch",
                       budget: Optional[int] = None) -> None:
    """ConfigError when ``batch`` rows cannot fit: their inputs and charges (``batch`` × (n_0 + Σ n_i) ×
    4 bytes) against ``budget`` bytes (default: what this process may still take, :func:`memory_budget`)."""
    need = batch_bytes(batch, [sizes[0], *sizes])
    budget = memory_budget() if budget is None else budget
    if budget is not None and need > budget:
        raise ConfigError(f"{what} {batch:,}: a batch that large needs at least {need / 2**30:,.2f} GiB ({batch:,} rows "
                          f"× {sizes[0] + sum(sizes):,} input and unit values × 4 bytes), but this process may take "
                          f"{budget / 2**30:,.2f} GiB: expected a batch of at most {budget // max(1, need // batch):,}")


_ALLOC = re.compile(r"allocate memory for requested buffer of size (\d+)")


def run_failure(path: Union[str, os.PathLike], exc: BaseException, feeds: Mapping[str, np.ndarray],
                sizes: Sequence[int]) -> Exception:
    """The error to raise for ``exc`` from onnxruntime on validated ``feeds``.

    Memory running out (onnxruntime's "Failed to allocate memory", ``bad_alloc``, or a
    numpy MemoryError) is an InputError naming the batch and what its charges need
    (rows × units × 4 bytes); anything else is a ModelFileError about the model.
    """
    text = str(exc)
    batch = next(iter(feeds.values())).shape[0]
    if isinstance(exc, MemoryError) or "bad_alloc" in text or "Failed to allocate" in text \
            or "out of memory" in text.lower():
        need = batch_bytes(batch, sizes)
        asked = _ALLOC.search(text)
        extra = f"; onnxruntime could not get a buffer of {int(asked.group(1)) / 2**20:,.0f} MiB" if asked else ""
        return InputError(f"{path}: memory ran out running a batch of {batch:,} rows: its charges need at least "
                          f"{need / 2**20:,.0f} MiB ({batch:,} rows × {sum(sizes):,} units × 4 bytes){extra}; "
                          "expected a batch that fits the memory left: split it into smaller calls")
    first = (text.strip().splitlines() or [type(exc).__name__])[0]
    return ModelFileError(f"{path}: onnxruntime failed on valid inputs "
                          f"({', '.join(f'{k} {v.shape}' for k, v in feeds.items())}): {first[:300]}")
