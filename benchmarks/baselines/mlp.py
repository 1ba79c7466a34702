"""An equal-size backprop MLP autoencoder, trained with AdamW on the MSE.

For sizes (n_0, n_1, n_2) (784, 64, 784 against ``Zor([Layer(784), Layer(64), Layer(784)])``):

    h  = relu(W_1 x + b_1)                    (n_1,)
    x̂  = W_2 h + b_2                          (n_2,)  (``output="sigmoid"``: σ(W_2 h + b_2))
    L  = mean_{batch, pixels} (x̂ − y)²
    θ ← AdamW(θ, ∇_θ L)                       lr 1e-3, betas (0.9, 0.999), weight decay 0.01

Weights start from torch's ``nn.Linear`` default (uniform ±1/sqrt(fan_in)); the
optimizer uses torch's fused AdamW kernel when this torch build has one. Each step
draws a mini-batch (48 by default) uniformly, with replacement, from the training
set. This is the plain setting a practitioner would write first; the benchmark runs
it at lr 1e-3 and 3e-3 and compares Zor with the better of the two.

Same size as the Zor network means the same layer widths and so the same weight
matrices (784·64 + 64·784); the MLP has 848 biases on top.

Example:
    >>> import numpy as np
    >>> m = MLP((4, 2, 4), seed=0)
    >>> r = m.fit(np.random.default_rng(0).random((8, 4), dtype=np.float32), steps=5)
    >>> (r.steps, m.reconstruct(np.zeros((3, 4), np.float32)).shape)
    (5, (3, 4))
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from zor.common.errors import ConfigError

from .base import (
    ArrayLike,
    FitResult,
    as_images,
    make_adamw,
    minibatch_fit,
    paired_images,
)

__all__ = ["MLP"]


class MLP:
    """784-64-784 ReLU MLP trained by backprop + AdamW on the mean squared error."""

    name = "mlp"

    def __init__(
        self,
        sizes: Sequence[int] = (784, 64, 784),
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        batch_size: int = 48,
        output: str = "linear",
        seed: int = 0,
    ) -> None:
        sizes = tuple(int(s) for s in sizes)
        if len(sizes) != 3 or min(sizes) <= 0:
            raise ConfigError(f"sizes must be three positive widths (in, hidden, out), got {sizes}")
        if output not in ("linear", "sigmoid"):
            raise ConfigError(f"output must be 'linear' or 'sigmoid', got {output!r}")
        if not (lr > 0 and batch_size > 0):
            raise ConfigError(f"lr and batch_size must be > 0, got lr={lr}, batch_size={batch_size}")
        self.sizes, self.lr, self.batch_size, self.output = sizes, lr, batch_size, output
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.fc1 = nn.Linear(sizes[0], sizes[1])
            self.fc2 = nn.Linear(sizes[1], sizes[2])
        self.optimizer = make_adamw(list(self.fc1.parameters()) + list(self.fc2.parameters()), lr, weight_decay)
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x̂ = W_2 relu(W_1 x + b_1) + b_2 (through σ when output="sigmoid").  (B, n_2)"""
        out = self.fc2(torch.relu(self.fc1(x)))
        return torch.sigmoid(out) if self.output == "sigmoid" else out

    def fit(self, x: ArrayLike, y: Optional[ArrayLike] = None, *, time_budget: Optional[float] = None,
            steps: Optional[int] = None) -> FitResult:
        """Train on (x, y) (y defaults to x) for ``steps`` batches or ``time_budget`` seconds."""
        x, y = paired_images(x, y, self.sizes[0], self.sizes[2])
        return minibatch_fit(lambda xb, yb: torch.nn.functional.mse_loss(self.forward(xb), yb), x, y,
                             self.optimizer, self.generator, self.batch_size, time_budget=time_budget, steps=steps)

    @torch.no_grad()
    def reconstruct(self, x: ArrayLike) -> np.ndarray:
        """x̂ for each row of x.  (N, n_2)"""
        return self.forward(as_images(x, self.sizes[0], "x")).numpy()
