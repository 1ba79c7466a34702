"""Weight averaging: the weights a training run ends with are the mean of its last iterates.

An update driven by mini-batches leaves the weights jittering around where they
settle; the last iterate carries the noise of its last few batches. An exponential
moving average of the iterates, debiased, keeps the trend and drops most of the
jitter:

    w̄_t = β w̄_{t−1} + (1 − β) w_t,    w̄_0 = 0
    ŵ_t = w̄_t / (1 − β^t)              a weighted mean of w_1..w_t (weights β^(t−k)), so
                                        short runs average what they visited, not w_0

About the last 1 / (1 − β) steps count (β = 0.995: ~200 steps). ``Zor.fit`` keeps one
when ``ZorConfig.weight_average`` = β > 0 and ends with ŵ in place of the last
iterate (thresholds and other state are not averaged).

Example (β = 0.5, one weight taking the values 2 then 4):
    >>> import torch
    >>> w = torch.tensor([2.0])
    >>> avg = WeightAverage([w], 0.5)
    >>> avg.update()                      # w̄_1 = 0.5·0 + 0.5·2 = 1
    >>> _ = w.fill_(4.0)
    >>> avg.update()                      # w̄_2 = 0.5·1 + 0.5·4 = 2.5
    >>> avg.apply(); round(float(w), 4)   # ŵ_2 = 2.5 / (1 − 0.25) = (0.5·2 + 1·4) / 1.5
    3.3333
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from zor.common.errors import ConfigError

__all__ = ["WeightAverage", "check_beta"]


def check_beta(beta: object, name: str = "weight_average") -> float:
    """β as a float in [0, 1), or ConfigError naming what was expected."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) \
            or not 0.0 <= beta < 1.0:
        raise ConfigError(f"{name} must be a number in [0, 1) (0 = off; 0.995 averages about the last 200 "
                          f"steps), got {beta!r}")
    return float(beta)


class WeightAverage:
    """A debiased exponential moving average of ``params`` (updated in place by their optimizer)."""

    def __init__(self, params: Sequence[torch.Tensor], beta: float) -> None:
        self.beta = check_beta(beta)
        self.params = list(params)
        self.sums = [torch.zeros_like(p) for p in self.params]   # w̄, one per parameter, like it
        self.steps = 0

    @torch.no_grad()
    def update(self) -> None:
        """w̄ ← β w̄ + (1 − β) w for every parameter (call after each optimizer step)."""
        for s, p in zip(self.sums, self.params):
            s.lerp_(p.detach(), 1.0 - self.beta)
        self.steps += 1

    @torch.no_grad()
    def averages(self) -> list[torch.Tensor]:
        """ŵ = w̄ / (1 − β^t) per parameter (the parameters themselves before any update)."""
        if self.steps == 0:
            return [p.detach().clone() for p in self.params]
        debias = 1.0 - self.beta ** self.steps
        return [s / debias for s in self.sums]

    @torch.no_grad()
    def apply(self) -> None:
        """Write ŵ into the parameters (nothing changes before the first update)."""
        if self.steps == 0:
            return
        for p, a in zip(self.params, self.averages()):
            p.copy_(a)
