"""Backprop baselines for the image-task benchmarks: an MLP and a small CNN, equal in size to Zor.

Classifiers (cross-entropy on the labels, the loss a practitioner writes first):

    MLPClassifier  sizes (n_0, ..., n_L):  h_{k+1} = relu(W_k h_k + b_k), scores = W_{L−1} h_{L−1} + b_{L−1}
    CNNClassifier  (C, H, W) → conv k×k, stride s, `channels` maps → relu → linear → scores

Regressors (mean squared error, for colorization and denoising):

    MLPRegressor   the same MLP with a sigmoid (or linear) output, trained on MSE

Every one trains with AdamW (lr 1e-3 by default, weight decay 0.01, batches of 48 drawn
uniformly with replacement), for ``steps`` mini-batches or ``time_budget`` seconds,
whichever comes first (:func:`benchmarks.baselines.base.timed_loop`); the classifiers'
``weight_average`` = β > 0 ends the run with the moving average of the weights, as
``ZorConfig.weight_average`` does for Zor. "Equal size"
means the same layer widths as the Zor network it is compared with (and the same
kernel for the CNN); the backprop networks have biases on top.

Example:
    >>> import numpy as np
    >>> m = MLPClassifier((4, 3, 2), seed=0)
    >>> r = m.fit(np.random.default_rng(0).random((6, 4), dtype=np.float32), np.array([0, 1] * 3), steps=3)
    >>> r.steps, m.scores(np.zeros((5, 4), np.float32)).shape
    (3, (5, 2))
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from zor.common.errors import ConfigError, DTypeError, ShapeError
from zor.engine.averaging import check_beta

from .base import (
    ArrayLike,
    FitResult,
    as_images,
    make_adamw,
    minibatch_fit,
    paired_images,
)

__all__ = ["MLPClassifier", "CNNClassifier", "MLPRegressor"]


def _labels(y: ArrayLike, n: int, n_classes: int) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(y))
    if y.ndim != 1 or y.shape[0] != n or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ShapeError(f"labels: expected {n} integer labels (N,), got {y.dtype} {tuple(y.shape)}")
    if n and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ShapeError(f"labels: expected values in [0, {n_classes}), got {int(y.min())}..{int(y.max())}")
    return y.long()


class _Classifier:
    net: nn.Module
    n_in: int
    n_classes: int

    def _setup(self, lr: float, weight_decay: float, batch_size: int, seed: int, weight_average: float) -> None:
        if not (lr > 0 and batch_size > 0):
            raise ConfigError(f"lr and batch_size must be > 0, got lr={lr}, batch_size={batch_size}")
        self.batch_size = batch_size
        self.weight_average = check_beta(weight_average)
        self.optimizer = make_adamw(self.net.parameters(), lr, weight_decay)
        self.generator = torch.Generator().manual_seed(seed)

    def fit(self, x: ArrayLike, labels: ArrayLike, *, time_budget: Optional[float] = None,
            steps: Optional[int] = None) -> FitResult:
        """Train on (x, labels) with cross-entropy for ``steps`` batches or ``time_budget`` seconds."""
        x = as_images(x, self.n_in, "x")
        y = _labels(labels, x.shape[0], self.n_classes)
        return minibatch_fit(lambda xb, yb: nn.functional.cross_entropy(self.net(xb), yb), x, y,
                             self.optimizer, self.generator, self.batch_size, time_budget=time_budget, steps=steps,
                             weight_average=self.weight_average)

    @torch.no_grad()
    def scores(self, x: ArrayLike) -> np.ndarray:
        """Class scores (logits) per row.  (N, n_classes)"""
        return self.net(as_images(x, self.n_in, "x")).numpy()


class MLPClassifier(_Classifier):
    """ReLU MLP with the given widths (n_0, ..., n_L), cross-entropy + AdamW."""

    name = "mlp"

    def __init__(self, sizes: Sequence[int] = (784, 256, 10), lr: float = 1e-3, weight_decay: float = 0.01,
                 batch_size: int = 48, seed: int = 0, weight_average: float = 0.0) -> None:
        sizes = tuple(int(s) for s in sizes)
        if len(sizes) < 2 or min(sizes) <= 0:
            raise ConfigError(f"sizes must be at least two positive widths, got {sizes}")
        layers: list[nn.Module] = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for k in range(len(sizes) - 1):
                layers.append(nn.Linear(sizes[k], sizes[k + 1]))
                if k < len(sizes) - 2:
                    layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)
        self.sizes, self.n_in, self.n_classes = sizes, sizes[0], sizes[-1]
        self._setup(lr, weight_decay, batch_size, seed, weight_average)


class CNNClassifier(_Classifier):
    """conv(k, stride) → relu → linear, on (C, H, W) maps flattened to rows; cross-entropy + AdamW."""

    name = "cnn"

    def __init__(self, in_shape: Sequence[int] = (1, 28, 28), channels: int = 16, kernel_size: int = 5,
                 stride: int = 2, padding: int = 0, n_classes: int = 10, lr: float = 1e-3,
                 weight_decay: float = 0.01, batch_size: int = 48, seed: int = 0, weight_average: float = 0.0) -> None:
        c, h, w = (int(v) for v in in_shape)
        ho = (h + 2 * padding - kernel_size) // stride + 1
        wo = (w + 2 * padding - kernel_size) // stride + 1
        if min(c, h, w, channels, n_classes) <= 0 or ho <= 0 or wo <= 0:
            raise ConfigError(f"CNNClassifier: kernel {kernel_size} (stride {stride}) does not fit {tuple(in_shape)}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = nn.Sequential(nn.Unflatten(1, (c, h, w)),
                                     nn.Conv2d(c, channels, kernel_size, stride=stride, padding=padding),
                                     nn.ReLU(), nn.Flatten(), nn.Linear(channels * ho * wo, n_classes))
        self.n_in, self.n_classes = c * h * w, n_classes
        self._setup(lr, weight_decay, batch_size, seed, weight_average)


class MLPRegressor:
    """ReLU MLP (n_0, ..., n_L) with a sigmoid (or linear) output, trained on the MSE with AdamW."""

    name = "mlp"

    def __init__(self, sizes: Sequence[int], output: str = "sigmoid", lr: float = 1e-3, weight_decay: float = 0.01,
                 batch_size: int = 48, seed: int = 0) -> None:
        if output not in ("sigmoid", "linear"):
            raise ConfigError(f"output must be 'sigmoid' or 'linear', got {output!r}")
        self.body = MLPClassifier(sizes, lr=lr, weight_decay=weight_decay, batch_size=batch_size, seed=seed)
        self.sizes, self.output, self.batch_size = self.body.sizes, output, batch_size
        self.optimizer, self.generator = self.body.optimizer, self.body.generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body.net(x)
        return torch.sigmoid(out) if self.output == "sigmoid" else out

    def fit(self, x: ArrayLike, y: ArrayLike, *, time_budget: Optional[float] = None,
            steps: Optional[int] = None) -> FitResult:
        """Train on (x, y) with the MSE for ``steps`` batches or ``time_budget`` seconds."""
        if y is None:
            raise DTypeError("y: expected a numpy array or torch tensor, got NoneType")
        x, y = paired_images(x, y, self.sizes[0], self.sizes[-1])
        return minibatch_fit(lambda xb, yb: nn.functional.mse_loss(self.forward(xb), yb), x, y,
                             self.optimizer, self.generator, self.batch_size, time_budget=time_budget, steps=steps)

    @torch.no_grad()
    def predict(self, x: ArrayLike) -> np.ndarray:
        """The output rows.  (N, n_L)"""
        return self.forward(as_images(x, self.sizes[0], "x")).numpy()
