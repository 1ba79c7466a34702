"""Image maths shared by training and the torch-free runtime: colour spaces, noise, patches.

Numpy only. Images are float arrays in [0, 1], (H, W) grey or (H, W, 3) RGB, unless a
function says otherwise.

Colour (sRGB, D65 white, 2° observer; the same constants as scikit-image):

    linear   c_lin = c / 12.92 if c ≤ 0.04045 else ((c + 0.055) / 1.055)^2.4
    XYZ      [X, Y, Z] = M · [r, g, b]_lin,  then divided by the white (0.95047, 1, 1.08883)
    Lab      L = 116 f(Y) − 16,  a = 500 (f(X) − f(Y)),  b = 200 (f(Y) − f(Z))
             f(t) = t^(1/3) if t > 0.008856 else 7.787 t + 16/116
    YCbCr    (BT.601 full range, JPEG) Y = 0.299 R + 0.587 G + 0.114 B,
             Cb = 0.5 + (B − Y)/1.772,  Cr = 0.5 + (R − Y)/1.402

The colorization model sees L/100 and predicts (a, b) encoded into [0, 1] as
(a/AB_SCALE + 1)/2 (:func:`encode_ab`); "predicting grey" is a = b = 0, i.e. 0.5.

Noise (denoising):

    gaussian        x̃ = clip(x + σ·n, 0, 1),   n ~ N(0, 1) per pixel
    salt_and_pepper each pixel with probability p is replaced, by 1 (salt) or 0
                    (pepper) with equal odds

Example:
    >>> import numpy as np
    >>> np.round(rgb_to_lab(np.array([1.0, 0.0, 0.0])), 1)
    array([53.2, 80.1, 67.2])
    >>> salt_and_pepper(np.full((2, 3), 0.5), 1.0, np.random.default_rng(0)).tolist()
    [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import DataError, ShapeError

__all__ = ["AB_SCALE", "srgb_to_linear", "linear_to_srgb", "rgb_to_lab", "lab_to_rgb", "rgb_to_ycbcr",
           "ycbcr_to_rgb", "encode_ab", "decode_ab", "lab_planes", "rgb_from_planes", "gaussian_noise",
           "salt_and_pepper", "add_noise", "NOISES", "noisy_pairs", "downscale", "patches", "colour_error",
           "one_hot"]


AB_SCALE = 128.0            # a, b ∈ [−128, 128] ↔ [0, 1]

_M = np.array([[0.412453, 0.357580, 0.180423],
               [0.212671, 0.715160, 0.072169],
               [0.019334, 0.119193, 0.950227]])
_M_INV = np.linalg.inv(_M)
_WHITE = np.array([0.95047, 1.0, 1.08883])
_YCC = np.array([[0.299, 0.587, 0.114],
                 [-0.299 / 1.772, -0.587 / 1.772, 0.886 / 1.772],
                 [0.701 / 1.402, -0.587 / 1.402, -0.114 / 1.402]])
_YCC_INV = np.linalg.inv(_YCC)


# --------------------------------------------------------------------------- colour
def _colour(x: Any, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0 or x.shape[-1] != 3:
        raise ShapeError(f"{what}: expected colours on the last axis (..., 3), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise DataError(f"{what}: expected finite values, got {int((~np.isfinite(x)).sum())} NaN/inf entries")
    return x


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB gamma → linear light (elementwise, [0, 1])."""
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((np.maximum(c, 0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """Linear light → sRGB gamma (elementwise; negative light clips to 0)."""
    c = np.maximum(np.asarray(c, dtype=np.float64), 0.0)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.maximum(c, 0.0031308) ** (1 / 2.4) - 0.055)


def rgb_to_lab(rgb: Any) -> np.ndarray:
    """sRGB in [0, 1] (..., 3) → CIE Lab (..., 3): L ∈ [0, 100], a, b ≈ [−128, 128]."""
    rgb = _colour(rgb, "rgb_to_lab")
    xyz = srgb_to_linear(np.clip(rgb, 0.0, 1.0)) @ _M.T / _WHITE
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])],
                    axis=-1)


def lab_to_rgb(lab: Any) -> np.ndarray:
    """CIE Lab (..., 3) → sRGB in [0, 1] (..., 3); colours outside the sRGB gamut are clipped."""
    lab = _colour(lab, "lab_to_rgb")
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
    xyz = np.where(f > 0.206893, f ** 3, (f - 16.0 / 116.0) / 7.787) * _WHITE
    return np.clip(linear_to_srgb(xyz @ _M_INV.T), 0.0, 1.0)


def rgb_to_ycbcr(rgb: Any) -> np.ndarray:
    """sRGB in [0, 1] (..., 3) → YCbCr in [0, 1] (BT.601 full range, as JPEG)."""
    return _colour(rgb, "rgb_to_ycbcr") @ _YCC.T + np.array([0.0, 0.5, 0.5])


def ycbcr_to_rgb(ycc: Any) -> np.ndarray:
    """YCbCr in [0, 1] (..., 3) → sRGB in [0, 1] (clipped)."""
    ycc = _colour(ycc, "ycbcr_to_rgb") - np.array([0.0, 0.5, 0.5])
    return np.clip(ycc @ _YCC_INV.T, 0.0, 1.0)


def encode_ab(ab: np.ndarray) -> np.ndarray:
    """a, b ∈ [−AB_SCALE, AB_SCALE] → [0, 1]: (ab / AB_SCALE + 1) / 2 (grey, ab = 0, is 0.5)."""
    return (np.asarray(ab, dtype=np.float64) / AB_SCALE + 1.0) * 0.5


def decode_ab(code: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_ab` (the code is clipped into [0, 1] first)."""
    return (np.clip(np.asarray(code, dtype=np.float64), 0.0, 1.0) * 2.0 - 1.0) * AB_SCALE


def lab_planes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RGB images (N, H, W, 3) → (L/100 rows (N, H·W), encoded ab rows (N, 2·H·W), a plane then b plane)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 4 or rgb.shape[-1] != 3:
        raise ShapeError(f"lab_planes: expected RGB images (N, H, W, 3), got shape {rgb.shape}")
    lab = rgb_to_lab(rgb)
    n = len(rgb)
    grey = (lab[..., 0] / 100.0).reshape(n, -1)
    ab = encode_ab(np.moveaxis(lab[..., 1:], -1, 1)).reshape(n, -1)     # (N, 2, H, W) flattened
    return grey.astype(np.float32), ab.astype(np.float32)


def rgb_from_planes(grey: np.ndarray, ab_code: np.ndarray, height: int, width: int) -> np.ndarray:
    """Inverse of :func:`lab_planes`: L/100 rows and encoded ab rows → RGB (N, H, W, 3) in [0, 1]."""
    grey, ab_code = np.asarray(grey), np.asarray(ab_code)
    n = grey.shape[0]
    if grey.shape != (n, height * width) or ab_code.shape != (n, 2 * height * width):
        raise ShapeError(f"rgb_from_planes: expected grey ({n}, {height * width}) and ab ({n}, {2 * height * width}), "
                         f"got {grey.shape} and {ab_code.shape}")
    lab = np.empty((n, height, width, 3))
    lab[..., 0] = np.clip(grey.reshape(n, height, width), 0.0, 1.0) * 100.0
    lab[..., 1:] = np.moveaxis(decode_ab(ab_code.reshape(n, 2, height, width)), 1, -1)
    return lab_to_rgb(lab)


# --------------------------------------------------------------------------- noise
def _unit_images(x: Any, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise DataError(f"{what}: expected float pixels in [0, 1], got dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise DataError(f"{what}: expected finite pixels, got {int((~np.isfinite(x)).sum())} NaN/inf entries")
    return x


def gaussian_noise(x: Any, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """clip(x + σ·n, 0, 1) with n ~ N(0, 1) per pixel; same shape and dtype as x."""
    x = _unit_images(x, "gaussian_noise")
    if not (np.isfinite(sigma) and sigma >= 0):
        raise DataError(f"gaussian_noise: sigma must be a finite number ≥ 0, got {sigma!r}")
    return np.clip(x + sigma * rng.standard_normal(x.shape), 0.0, 1.0).astype(x.dtype)


def salt_and_pepper(x: Any, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Each pixel with probability ``amount`` becomes 1 or 0 (equal odds); the rest are kept."""
    x = _unit_images(x, "salt_and_pepper")
    if not (np.isfinite(amount) and 0.0 <= amount <= 1.0):
        raise DataError(f"salt_and_pepper: amount must lie in [0, 1], got {amount!r}")
    hit = rng.random(x.shape) < amount
    salt = rng.random(x.shape) < 0.5
    return np.where(hit, salt.astype(x.dtype), x).astype(x.dtype)


NOISES = {"gaussian": gaussian_noise, "salt_and_pepper": salt_and_pepper}


def add_noise(x: Any, kind: str, level: float, rng: np.random.Generator) -> np.ndarray:
    """``NOISES[kind](x, level, rng)``: σ for gaussian, the hit probability for salt_and_pepper."""
    if kind not in NOISES:
        raise DataError(f"unknown noise {kind!r}: expected one of {sorted(NOISES)}")
    return NOISES[kind](x, level, rng)


def noisy_pairs(x: np.ndarray, kind: str, level: float, seed: int, copies: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean) rows: each clean row repeated ``copies`` times, each copy with fresh noise."""
    rng = np.random.default_rng(seed)
    clean = np.repeat(np.asarray(x), copies, axis=0) if copies > 1 else np.asarray(x)
    return add_noise(clean, kind, level, rng).astype(np.float32), clean.astype(np.float32)


# --------------------------------------------------------------------------- patches
def downscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Area downsampling by an integer factor (block means); the ragged border is cut off."""
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise DataError(f"downscale: factor must be an int ≥ 1, got {factor!r}")
    img = np.asarray(image, dtype=np.float64)
    h, w = img.shape[0] // factor, img.shape[1] // factor
    if h == 0 or w == 0:
        raise ShapeError(f"downscale: a {img.shape[0]}x{img.shape[1]} image is smaller than the factor {factor}")
    img = img[:h * factor, :w * factor]
    return img.reshape(h, factor, w, factor, *img.shape[2:]).mean(axis=(1, 3))


def patches(image: np.ndarray, size: int, stride: int) -> np.ndarray:
    """All size×size patches at the given stride, (N, size, size[, C]), row-major order."""
    img = np.asarray(image)
    if img.ndim not in (2, 3):
        raise ShapeError(f"patches: expected an (H, W) or (H, W, C) image, got shape {img.shape}")
    if size < 1 or stride < 1:
        raise DataError(f"patches: size and stride must be ≥ 1, got {size} and {stride}")
    h, w = img.shape[:2]
    if h < size or w < size:
        raise ShapeError(f"patches: a {h}x{w} image is smaller than one {size}x{size} patch")
    ys = range(0, h - size + 1, stride)
    xs = range(0, w - size + 1, stride)
    return np.stack([img[y:y + size, x:x + size] for y in ys for x in xs])


def colour_error(rgb_pred: Any, rgb_true: Any) -> dict[str, float]:
    """How far predicted colours are from the truth, for RGB images (..., 3) in [0, 1].

        psnr          10 log10(1 / MSE) of the RGB values, dB
        delta_e_ab    mean √((a_p − a_t)² + (b_p − b_t)²) per pixel, CIE Lab units
        chroma_ratio  mean C_p / mean C_t, C = √(a² + b²): 0 for a grey prediction, 1 when
                      as colourful as the truth (regression to the mean desaturates)
    """
    p, t = np.asarray(rgb_pred, np.float64), np.asarray(rgb_true, np.float64)
    if p.shape != t.shape:
        raise ShapeError(f"colour_error: prediction {p.shape} and truth {t.shape} differ in shape")
    lab_p, lab_t = rgb_to_lab(p), rgb_to_lab(t)
    mse = float(np.mean((p - t) ** 2))
    chroma_t = float(np.sqrt((lab_t[..., 1:] ** 2).sum(axis=-1)).mean())
    return {"psnr": float("inf") if mse == 0 else float(10.0 * np.log10(1.0 / mse)),
            "delta_e_ab": float(np.sqrt(((lab_p[..., 1:] - lab_t[..., 1:]) ** 2).sum(axis=-1)).mean()),
            "chroma_ratio": float(np.sqrt((lab_p[..., 1:] ** 2).sum(axis=-1)).mean() / max(chroma_t, 1e-12))}


def one_hot(labels: Any, n_classes: int = 10) -> np.ndarray:
    """(N,) int labels → (N, n_classes) float32 one-hot rows (the classification target)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"one_hot: expected 1-D integer labels, got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"one_hot: labels must lie in [0, {n_classes}), got {labels.min()}..{labels.max()}")
    out = np.zeros((len(labels), n_classes), np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out
