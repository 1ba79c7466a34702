"""Curriculum sampling: batches favour the samples with the highest recent error.

Each sample i keeps e_i, an EMA of its mean absolute error the last times it was in
a batch (samples not yet seen count as the worst). A batch is drawn (with
replacement, by inverse CDF: O(N) per batch) from

    p_i = (1 − u) · (e_i + ε)^α / Σ_j (e_j + ε)^α  +  u / N

so hard samples come back more often while every sample keeps a floor u/N.

Example:
    >>> import numpy as np
    >>> s = CurriculumSampler(4, rng=np.random.default_rng(0))
    >>> s.update(np.array([0, 1, 2, 3]), np.array([0.0, 0.0, 0.0, 1.0]))
    >>> s.probabilities().argmax()
    3
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["CurriculumSampler"]


class CurriculumSampler:
    def __init__(
        self,
        n: int,
        rng: Optional[np.random.Generator] = None,
        enabled: bool = True,
        alpha: float = 1.0,       # sharpness: 0 = uniform, larger = harder samples dominate
        uniform: float = 0.2,     # u: share of probability spread evenly over all samples
        momentum: float = 0.5,    # EMA factor of each sample's error
        eps: float = 1e-3,        # ε keeps zero-error samples drawable
    ) -> None:
        self.n = n
        self.rng = rng if rng is not None else np.random.default_rng()
        self.enabled = enabled
        self.alpha, self.uniform, self.momentum, self.eps = alpha, uniform, momentum, eps
        self.error = np.full(n, np.nan)   # (N,) NaN until seen

    def probabilities(self) -> np.ndarray:
        if not self.enabled:
            return np.full(self.n, 1.0 / self.n)
        seen = self.error[~np.isnan(self.error)]
        worst = seen.max() if seen.size else 1.0
        e = np.where(np.isnan(self.error), worst, self.error)
        w = (e + self.eps) ** self.alpha
        return (1.0 - self.uniform) * w / w.sum() + self.uniform / self.n

    def sample(self, batch_size: int) -> np.ndarray:
        if not self.enabled:
            return self.rng.integers(0, self.n, size=batch_size)
        cdf = np.cumsum(self.probabilities())
        idx = np.searchsorted(cdf, self.rng.random(batch_size) * cdf[-1], side="right")
        return np.minimum(idx, self.n - 1)

    def update(self, idx: np.ndarray, errors: np.ndarray) -> None:
        """Record the mean absolute errors of samples idx (repeats: last wins)."""
        old = self.error[idx]
        self.error[idx] = np.where(np.isnan(old), errors, self.momentum * old + (1 - self.momentum) * errors)
