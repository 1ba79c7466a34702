"""The Zor neuron: charge, spike, analog-spike gate, and reset.

For one layer with thresholds θ (n,) and input x (B, n):

    charge:  c_t = λ c̃_{t−1} + x_t          (stateless when λ = 0: c = x)
    spike:   s_t = [c_t > θ]                 binary, per unit
    gate:    g_t = c_t ⊙ s_t                 the analog charge passes only where it spiked
    reset:   c̃_t = −p     where s_t          a unit that spiked resets, minus the refractory penalty p
             c̃_t = 0      where ¬s_t and c_t < m   (the min_charge floor m, when set)
             c̃_t = c_t    elsewhere

The gate keeps the efficiency of binary spikes (only spiking units send anything)
while the value sent, and learned from, is analog.

Example (stateless, θ = 0.5):
    >>> import torch
    >>> c = torch.tensor([[0.2, 0.7, 1.5]])
    >>> s = spike(c, torch.tensor([0.5, 0.5, 0.5]))
    >>> gate(c, s)
    tensor([[0.0000, 0.7000, 1.5000]])

Example (stateful, λ = 0.5, p = 0.1, one unit, θ = 1): inputs 0.8 then 0.8 give
c = 0.8 (no spike, kept), then c = 0.5·0.8 + 0.8 = 1.2 > 1 (spike, g = 1.2,
reset to −0.1).
"""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["charge", "spike", "fire", "gate", "reset"]


def charge(x: torch.Tensor, prev: Optional[torch.Tensor], decay: float) -> torch.Tensor:
    """c_t = λ c̃_{t−1} + x_t; with no previous state (or λ = 0), c = x.  (B, n)"""
    if prev is None or decay == 0.0:
        return x
    return decay * prev + x


def spike(c: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """s = [c > θ] as a bool tensor.  (B, n) against θ (n,)"""
    return c > threshold


def fire(c: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """s = [c > θ] as 0./1. floats in c's dtype (the form learning uses).  (B, n)

    Written straight into a float tensor: several times faster on a CPU than a bool
    comparison followed by a conversion."""
    return torch.gt(c, threshold, out=torch.empty_like(c))


def gate(c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """g = c ⊙ s: the charge where the unit spiked, 0 elsewhere; s bool or 0./1. floats.  (B, n)

    With float spikes this is a product (a spike-free negative charge gives −0.0, equal
    to 0); charges are finite, as every input is checked."""
    if s.dtype == torch.bool:
        return torch.where(s, c, 0.0)
    return c * s


def reset(
    c: torch.Tensor,
    s: torch.Tensor,
    refractory: float = 0.0,
    min_charge: Optional[float] = None,
    reset_on_spike: bool = True,
) -> torch.Tensor:
    """The charge carried to the next call (see the module docstring).  (B, n)"""
    kept = c
    if min_charge is not None:
        kept = torch.where(kept < min_charge, torch.zeros((), dtype=c.dtype, device=c.device), kept)
    if reset_on_spike:
        spiked = torch.full((), -float(refractory), dtype=c.dtype, device=c.device)
    else:
        spiked = c - float(refractory)
    return torch.where(s, spiked, kept)
