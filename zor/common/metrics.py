"""Quality metrics, in numpy (usable without torch, by the runtime and benchmarks).

- seed accuracy: 100 · (1 − MAE), the metric the Zor author reports
- PSNR: 10 · log10(peak² / MSE), in dB, peak 1 for images in [0, 1]
- classification accuracy: share of rows whose argmax matches the label

Example:
    >>> import numpy as np
    >>> round(reconstruction(np.full((1, 4), 0.5), np.ones((1, 4)))["accuracy"], 1)
    50.0
"""

from __future__ import annotations

import numpy as np

__all__ = ["reconstruction", "psnr", "seed_accuracy", "class_accuracy"]


def seed_accuracy(output: np.ndarray, target: np.ndarray) -> float:
    return float(100.0 * (1.0 - np.mean(np.abs(np.asarray(output, np.float64) - np.asarray(target, np.float64)))))


def psnr(output: np.ndarray, target: np.ndarray, peak: float = 1.0) -> float:
    mse = float(np.mean((np.asarray(output, np.float64) - np.asarray(target, np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(peak * peak / mse))


def reconstruction(output: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """accuracy (seed metric), mae, mse and psnr of output against target."""
    o, t = np.asarray(output, np.float64), np.asarray(target, np.float64)
    if o.shape != t.shape:
        raise ValueError(f"output and target shapes differ: {o.shape} vs {t.shape}")
    diff = o - t
    mae = float(np.mean(np.abs(diff)))
    mse = float(np.mean(diff ** 2))
    return {
        "accuracy": 100.0 * (1.0 - mae),
        "mae": mae,
        "mse": mse,
        "psnr": float("inf") if mse == 0 else float(10.0 * np.log10(1.0 / mse)),
    }


def class_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Percent of rows whose highest score is at the label index."""
    return float(100.0 * np.mean(np.argmax(scores, axis=1) == np.asarray(labels)))
