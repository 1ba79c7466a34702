"""The mean training image: the reconstruction every learner must beat.

    x̂(x) = (1/N) Σ_n x_n      for every input x (the input is ignored)

It learns in one pass (one "step") and predicts the same image for everything; its
seed metric and PSNR are the floor of the Fashion-MNIST reconstruction benchmark.

Example:
    >>> import numpy as np
    >>> m = MeanImage(width=2)
    >>> _ = m.fit(np.array([[0.0, 1.0], [1.0, 1.0]], np.float32), steps=1)
    >>> m.reconstruct(np.zeros((1, 2), np.float32)).tolist()
    [[0.5, 1.0]]
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np

from .base import ArrayLike, FitResult, as_images, check_budget

__all__ = ["MeanImage"]


class MeanImage:
    """Predicts the mean of the training targets for every input."""

    name = "mean image"

    def __init__(self, width: int = 784) -> None:
        self.width = width
        self.mean: Optional[np.ndarray] = None   # (width,)

    def fit(self, x: ArrayLike, y: Optional[ArrayLike] = None, *, time_budget: Optional[float] = None,
            steps: Optional[int] = 1) -> FitResult:
        """Store the mean of y (default x); budget and steps only count as one step."""
        check_budget(time_budget, steps)
        start = time.perf_counter()
        x = as_images(x, self.width, "x")
        target = x if y is None else as_images(y, self.width, "y")
        self.mean = target.double().mean(dim=0).float().numpy()
        return FitResult(steps=1, seconds=time.perf_counter() - start, samples=int(target.shape[0]))

    def reconstruct(self, x: ArrayLike) -> np.ndarray:
        """The stored mean, once per row of x.  (N, width)"""
        if self.mean is None:
            from zor.common.errors import StateError

            raise StateError("MeanImage.reconstruct() needs fit() first")
        x = as_images(x, self.width, "x")
        return np.repeat(self.mean[None, :], x.shape[0], axis=0)
