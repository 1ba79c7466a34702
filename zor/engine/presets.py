"""Networks the project uses again and again, built in one place.

``seed_autoencoder`` is the few-shot autoencoder of the author's README: 784-128-784
with a sigmoid output and the README's layer settings (homeostasis targets 0.9 / 0.5 /
0.5, max update norm 0.5, homeostasis rate 0.2). The golden-model tests, the runtime
benchmark and the ARM check all export this network.

Example:
    >>> net = seed_autoencoder(seed=0, device="cpu")
    >>> net.sizes
    [784, 128, 784]
"""

from __future__ import annotations

from typing import Any

from .layer import Layer
from .network import Zor

__all__ = ["seed_autoencoder"]


def seed_autoencoder(seed: int = 0, device: str = "cpu", **config: Any) -> Zor:
    """``Zor([Layer(784, ...), Layer(128, ...), Layer(784, sigmoid, ...)])`` with the README's layer settings;
    ``config`` goes to :class:`zor.Zor` (task, rule, lr, ...)."""
    return Zor([Layer(784, target_activation=0.9, max_update_norm=0.5, homeostasis_rate=0.2),
                Layer(128, target_activation=0.5, max_update_norm=0.5, homeostasis_rate=0.2),
                Layer(784, target_activation=0.5, activation_function="sigmoid", max_update_norm=0.5,
                      homeostasis_rate=0.2)], seed=seed, device=device, **config)
