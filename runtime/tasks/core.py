"""Task helpers driven by the ``zor.task`` metadata: pre- and post-processing.

``zor.task`` (JSON) carries ``name``, ``input {shape, range, preprocessing, image
{height, width, channels}}``, ``output {shape, range, meaning}`` and ``labels``.

- images in: ``(H, W[, C])`` or ``(B, H, W[, C])`` arrays matching ``input.image``;
  uint8 pixels p become p/255, float pixels are taken as already in [0, 1]; then
  mapped linearly onto ``input.range`` (default [0, 1]) and flattened to rows.
  Rows ``(B, n_0)`` pass through unchanged.
- :func:`reconstruct`: the output clipped to ``output.range`` (when given); given
  images, it comes back as images (B, H, W[, C]) in [0, 1].
- :func:`classify_rows`: the index of the highest output score per row, its label from
  ``labels`` (the index as text when there are none) and the scores (:class:`Classes`:
  a single image given alone has one ``str`` label, a batch a list of them).

Example:
    >>> rows_from_images(np.zeros((2, 28, 28), np.uint8), {"image": {"height": 28, "width": 28}}).shape
    (2, 784)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import numpy as np

from zor.common import format as fmt
from zor.common.errors import ConfigError, DTypeError, ShapeError

if TYPE_CHECKING:
    from ..model import Model

__all__ = ["Classes", "reconstruct", "classify_rows", "rows_from_images", "images_from_rows", "image_shape"]

_RECONSTRUCT_TASKS = ("reconstruct", "denoise", "generic")
_CLASSIFY_TASKS = ("classify", "generic")


@dataclass(frozen=True)
class Classes:
    """Result of :func:`classify`: per row the class index, its label, and all scores.

    ``label`` follows what was given: one image alone ((H, W[, C]), or a single 1-D row)
    has one label, a ``str``; a batch (rows (B, n_0), a stack or a list of images, also of
    one) has a list of B labels. ``index`` and ``scores`` always keep the batch axis.
    """

    index: np.ndarray               # (B,) int64: the class of each row (the highest score)
    label: Union[str, list[str]]    # its label (``labels`` from the metadata, else the index as text)
    scores: np.ndarray              # (B, n_classes) float32: every output score

    @classmethod
    def from_scores(cls, scores: np.ndarray, labels: Sequence, single: bool, helper: str) -> "Classes":
        """The classes of ``scores`` (B, n): the highest score per row and its label; ``single``: one
        input alone, so one ``str`` label. ConfigError when ``labels`` is not one per output unit."""
        if labels and len(labels) != scores.shape[1]:
            raise ConfigError(f"{helper}(): the metadata lists {len(labels)} labels: expected one per output "
                              f"unit ({scores.shape[1]})")
        index = np.argmax(scores, axis=1).astype(np.int64)
        names = [str(labels[i]) if labels else str(int(i)) for i in index]
        return cls(index=index, label=names[0] if single and len(names) == 1 else names, scores=scores)


def image_shape(spec: dict) -> Optional[tuple]:
    """(H, W) or (H, W, C) from ``task.input.image`` (C omitted when 1), or None."""
    img = spec.get("image") if isinstance(spec, dict) else None
    if not isinstance(img, dict) or "height" not in img or "width" not in img:
        return None
    h, w, c = int(img["height"]), int(img["width"]), int(img.get("channels", 1))
    return (h, w) if c == 1 else (h, w, c)


def _range(spec: dict, default=(0.0, 1.0)) -> tuple:
    r = spec.get("range") if isinstance(spec, dict) else None
    if isinstance(r, (list, tuple)) and len(r) == 2:
        return float(r[0]), float(r[1])
    return default


def rows_from_images(x: Any, input_spec: dict) -> np.ndarray:
    """Images (uint8 or [0, 1] floats) → (B, n_0) rows in ``input.range``; rows pass through."""
    x = np.asarray(x)
    shape = image_shape(input_spec)
    if shape is None or x.ndim < len(shape) or tuple(x.shape[x.ndim - len(shape):]) != shape:
        return x                                         # rows (or wrong shapes: Model.run reports those)
    if x.dtype.kind == "u" and x.dtype.itemsize == 1:
        pixels = x.astype(np.float32) / 255.0
    elif x.dtype.kind == "f":
        pixels = x.astype(np.float32)
    else:
        raise DTypeError(f"images: expected uint8 pixels or floats in [0, 1], got dtype {x.dtype}")
    if x.ndim == len(shape):
        pixels = pixels[None]
    lo, hi = _range(input_spec)
    rows = pixels.reshape(pixels.shape[0], -1)
    return lo + rows * (hi - lo) if (lo, hi) != (0.0, 1.0) else rows


def images_from_rows(rows: np.ndarray, output_spec: dict, shape: tuple) -> np.ndarray:
    """(B, n_L) rows in ``output.range`` → (B, *shape) images in [0, 1]."""
    lo, hi = _range(output_spec)
    img = (rows - lo) / (hi - lo) if hi > lo else rows
    n = int(np.prod(shape))
    if rows.shape[1] != n:
        raise ShapeError(f"output rows of width {rows.shape[1]} cannot form images of shape {shape}: expected {n}")
    return np.clip(img, 0.0, 1.0).reshape((rows.shape[0],) + tuple(shape))


def _check_task(model: "Model", allowed: tuple, helper: str) -> None:
    if model.task not in allowed:
        raise ConfigError(f"{helper}(): the model's task is {model.task!r}: expected one of {', '.join(allowed)}")


def reconstruct(model: "Model", x: Any) -> np.ndarray:
    """Rows → rows clipped to ``output.range``; images → images in [0, 1]."""
    _check_task(model, _RECONSTRUCT_TASKS, "reconstruct")
    task = model.metadata.task
    in_spec, out_spec = task.get("input", {}) or {}, task.get("output", {}) or {}
    arr = np.asarray(x) if not isinstance(x, np.ndarray) else x
    shape = image_shape(in_spec)
    as_images = shape is not None and arr.ndim >= len(shape) and tuple(arr.shape[arr.ndim - len(shape):]) == shape
    out = model.run(rows_from_images(arr, in_spec))[fmt.OUTPUT]
    if as_images:
        out_shape = image_shape(out_spec) or shape
        imgs = images_from_rows(out, out_spec, out_shape)
        return imgs[0] if arr.ndim == len(shape) else imgs
    if "range" in out_spec:
        lo, hi = _range(out_spec)
        out = np.clip(out, lo, hi)
    return out


def classify_rows(model: "Model", x: Any) -> Classes:
    """Class index, label and scores per row (images of the model's own size accepted as for
    :func:`reconstruct`)."""
    _check_task(model, _CLASSIFY_TASKS, "classify")
    task = model.metadata.task
    arr = np.asarray(x)
    shape = image_shape(task.get("input", {}) or {})
    single = arr.ndim == 1 or (shape is not None and arr.shape == shape)       # one image or one row alone
    scores = model.run(rows_from_images(arr, task.get("input", {}) or {}))[fmt.OUTPUT]
    return Classes.from_scores(scores, task.get("labels") or [], single, "classify")
