"""Whole images for patch-sized image models, torch-free: reading, grey, resizing, tiling.

An image model sees fixed-size inputs (a 28×28 item, a 16×16 patch). This module
turns a whole image of any size into those inputs and the outputs back into a whole
image, driven by the model's ``zor.task`` metadata. Numpy only (plus the runtime's
own PNG reader).

Tiling (:func:`tile` / :func:`untile`), for patch size p and stride s ≤ p:

    the image is padded by reflection, m = ⌊(p − s)/2⌋ on every side plus what the
    grid needs at the bottom/right, and cut into p×p patches every s pixels; a model
    output patch o_k is blended back with the window w(u, v) = ω(u) ω(v),
    ω(u) = sin²(π (u + ½) / p) > 0:

        out(y, x) = Σ_k w_k(y, x) o_k(y, x) / Σ_k w_k(y, x)

    so overlapping predictions fade into each other without seams, and untile(tile(x))
    = x. An image exactly p×p is one patch, unpadded.

Image inputs (:func:`as_float_image`): uint8 → /255, uint16 (16-bit PNG) → /65535,
floats must lie in [0, 1]; (H, W), (H, W, 1), grey+alpha (H, W, 2), RGB (H, W, 3),
RGBA (H, W, 4) (alpha dropped). Colour → grey is the CIE lightness L/100 for
colorization (what that model was trained on) and BT.601 luma elsewhere.

Example:
    >>> img = np.arange(30.0).reshape(5, 6) / 30
    >>> patches, t = tile(img, patch=4, stride=2)
    >>> patches.shape, np.allclose(untile(patches, t), img)
    ((9, 4, 4), True)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from zor.common.errors import ConfigError, DataError, DTypeError, ShapeError
from zor.common.imagemath import rgb_to_lab

from ..png import DEFAULT_MAX_PIXELS, read_png, write_png

__all__ = ["Tiling", "tile", "untile", "window", "as_float_image", "luma", "lightness", "resize", "load_image",
           "save_image", "check_patch"]

_LUMA = np.array([0.299, 0.587, 0.114])


# --------------------------------------------------------------------------- images in
def as_float_image(image: Any, what: str = "image") -> np.ndarray:
    """``image`` as float64 in [0, 1], (H, W) grey or (H, W, 3) RGB (see the module docstring)."""
    if isinstance(image, (str, bytes)) or image is None:
        raise DTypeError(f"{what}: expected an image array (H, W) or (H, W, 3), got {type(image).__name__}")
    img = np.asarray(image)
    if img.dtype == np.uint8:
        img = img.astype(np.float64) / 255.0
    elif img.dtype == np.uint16:
        img = img.astype(np.float64) / 65535.0
    elif img.dtype == np.bool_:
        img = img.astype(np.float64)
    elif img.dtype.kind == "f":
        img = img.astype(np.float64)
        if not np.isfinite(img).all():
            raise DataError(f"{what}: expected finite pixels, got {int((~np.isfinite(img)).sum())} NaN/inf values")
        if img.size and (img.min() < -1e-6 or img.max() > 1 + 1e-6):
            raise DataError(f"{what}: expected float pixels in [0, 1], got values in [{img.min():.3g}, {img.max():.3g}]"
                            " (scale 8-bit pixels by 1/255)")
        img = np.clip(img, 0.0, 1.0)
    else:
        raise DTypeError(f"{what}: expected uint8, uint16 or float pixels, got dtype {img.dtype}")
    if img.ndim == 3 and img.shape[2] in (1, 2):
        img = img[..., 0]                                   # grey, or grey + alpha
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]                                  # RGBA: alpha dropped
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ShapeError(f"{what}: expected an image (H, W) grey or (H, W, 3) RGB (also (H, W, 1|2|4)), "
                         f"got shape {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ShapeError(f"{what}: expected at least one pixel, got an empty image of shape {img.shape}")
    return img


def luma(image: np.ndarray) -> np.ndarray:
    """BT.601 luma of an RGB image (H, W, 3) → (H, W); a grey image is returned as it is."""
    return image if image.ndim == 2 else image @ _LUMA


def lightness(image: np.ndarray) -> np.ndarray:
    """CIE lightness L/100 ∈ [0, 1] (H, W): of each RGB pixel, or of the sRGB grey (v, v, v)."""
    rgb = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image
    return rgb_to_lab(rgb)[..., 0] / 100.0


def _resample_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) weights: area (box) averaging when shrinking, linear interpolation when growing.

    Shrinking by s = n_in / n_out: output j averages the input interval [j·s, (j + 1)·s),
    each input pixel weighted by how much of it lies inside. Growing: output j samples
    the input at (j + ½)·s − ½ by linear interpolation, edges held.
    """
    scale = n_in / n_out
    if scale >= 1.0:
        lo = np.arange(n_out)[:, None] * scale
        x = np.arange(n_in)[None, :]
        overlap = np.clip(np.minimum(x + 1, lo + scale) - np.maximum(x, lo), 0.0, None)
        return overlap / scale
    centres = np.clip((np.arange(n_out) + 0.5) * scale - 0.5, 0.0, n_in - 1)
    w = np.maximum(0.0, 1.0 - np.abs(np.arange(n_in)[None, :] - centres[:, None]))
    return w / w.sum(axis=1, keepdims=True)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resample (H, W[, C]) to (height, width[, C]): area averaging when shrinking, bilinear when growing."""
    if min(height, width) < 1:
        raise ShapeError(f"resize: target size must be ≥ 1x1, got {height}x{width}")
    img = np.asarray(image, dtype=np.float64)
    if img.shape[:2] == (height, width):
        return img
    rh = _resample_matrix(height, img.shape[0])
    rw = _resample_matrix(width, img.shape[1])
    return np.einsum("yh,hw...,xw->yx...", rh, img, rw)


# --------------------------------------------------------------------------- tiling
@dataclass(frozen=True)
class Tiling:
    """Where the patches of :func:`tile` came from: enough to stitch outputs back."""

    height: int                  # the original image
    width: int
    patch: int
    stride: int
    top: int                     # padding added before cutting
    left: int
    rows: int                    # patch positions down and across
    cols: int

    @property
    def count(self) -> int:
        return self.rows * self.cols


def window(patch: int) -> np.ndarray:
    """w(u, v) = ω(u) ω(v), ω(u) = sin²(π (u + ½) / p): the blending weights, all > 0.  (p, p)"""
    w1 = np.sin(np.pi * (np.arange(patch) + 0.5) / patch) ** 2
    return np.outer(w1, w1)


def check_patch(patch: Any, stride: Any) -> tuple[int, int]:
    for name, v in (("patch", patch), ("stride", stride)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ConfigError(f"tiling: {name} must be an int ≥ 1, got {v!r}")
    if stride > patch:
        raise ConfigError(f"tiling: stride {stride} larger than the patch {patch} would leave gaps: expected ≤ {patch}")
    return int(patch), int(stride)


def _span(n: int, patch: int, stride: int, margin: int) -> tuple[int, int, int]:
    """(patch positions, padding before, padding after) covering n pixels plus the margin."""
    need = n + 2 * margin
    positions = max(1, math.ceil(max(need - patch, 0) / stride) + 1)
    total = (positions - 1) * stride + patch
    before = margin
    return positions, before, total - n - before


def tile(image: np.ndarray, patch: int, stride: int) -> tuple[np.ndarray, Tiling]:
    """Cut (H, W[, C]) into (N, p, p[, C]) overlapping patches (see the module docstring)."""
    patch, stride = check_patch(patch, stride)
    img = np.asarray(image)
    if img.ndim not in (2, 3) or img.shape[0] == 0 or img.shape[1] == 0:
        raise ShapeError(f"tile: expected an (H, W) or (H, W, C) image, got shape {img.shape}")
    h, w = img.shape[:2]
    if (h, w) == (patch, patch):
        return img[None].copy(), Tiling(h, w, patch, stride, 0, 0, 1, 1)
    margin = (patch - stride) // 2
    rows, top, bottom = _span(h, patch, stride, margin)
    cols, left, right = _span(w, patch, stride, margin)
    pad = [(top, bottom), (left, right)] + [(0, 0)] * (img.ndim - 2)
    padded = np.pad(img, pad, mode="symmetric")
    out = np.stack([padded[r * stride:r * stride + patch, c * stride:c * stride + patch]
                    for r in range(rows) for c in range(cols)])
    return out, Tiling(h, w, patch, stride, top, left, rows, cols)


def untile(patches: np.ndarray, tiling: Tiling) -> np.ndarray:
    """Blend (N, p, p[, C]) patches back into the (H, W[, C]) image they were cut from."""
    p = np.asarray(patches, dtype=np.float64)
    t = tiling
    if p.ndim not in (3, 4) or p.shape[0] != t.count or p.shape[1:3] != (t.patch, t.patch):
        raise ShapeError(f"untile: expected {t.count} patches of {t.patch}x{t.patch} (N, p, p[, C]), got {p.shape}")
    if t.count == 1 and (t.height, t.width) == (t.patch, t.patch):
        return p[0]
    extra = p.shape[3:]
    hp, wp = (t.rows - 1) * t.stride + t.patch, (t.cols - 1) * t.stride + t.patch
    acc = np.zeros((hp, wp) + extra)
    weight = np.zeros((hp, wp))
    win = window(t.patch)
    winx = win.reshape(win.shape + (1,) * len(extra))
    k = 0
    for r in range(t.rows):
        for c in range(t.cols):
            ys, xs = slice(r * t.stride, r * t.stride + t.patch), slice(c * t.stride, c * t.stride + t.patch)
            acc[ys, xs] += winx * p[k]
            weight[ys, xs] += win
            k += 1
    out = acc / weight.reshape(weight.shape + (1,) * len(extra))
    return out[t.top:t.top + t.height, t.left:t.left + t.width]


# --------------------------------------------------------------------------- files
def load_image(path: Union[str, os.PathLike], max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Pixels of a PNG file (uint8, (H, W) or (H, W, 3)): palette, 16-bit and alpha PNGs included.

    An empty, truncated or non-PNG file raises :class:`~zor.common.errors.DataError` saying so, as does
    one of more than ``max_pixels`` pixels (default 64 Mpx; None: no limit), refused before decoding.
    """

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such image file (expected a PNG)")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes): expected a PNG image")
    return read_png(path, max_pixels=max_pixels)


def save_image(path: Union[str, os.PathLike], image: np.ndarray) -> None:
    """Write a float image in [0, 1] ((H, W) or (H, W, 3)) as an 8-bit PNG, atomically."""

    img = as_float_image(image, "save_image")
    write_png(path, np.round(img * 255.0).astype(np.uint8))
