"""Activation functions a layer may apply, by name.

Activations are stored by name so that checkpoints stay plain data and the exporter
can map each one to an ONNX operator. A layer accepts the name (``"sigmoid"``) or
one of the functions below (``from zor.engine.activations import sigmoid``).

    identity(x) = x
    sigmoid(x)  = 1 / (1 + e^(−x))
    tanh(x)     = (e^x − e^(−x)) / (e^x + e^(−x))
    relu(x)     = max(x, 0)

Example:
    >>> import torch
    >>> from zor.engine.activations import get
    >>> get("relu")(torch.tensor([-1.0, 2.0]))
    tensor([0., 2.])
"""

from __future__ import annotations

from typing import Callable

import torch

from zor.common.errors import ConfigError

__all__ = ["ACTIVATIONS", "get", "name_of", "identity", "sigmoid", "tanh", "relu"]


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x)


def tanh(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x)


def relu(x: torch.Tensor) -> torch.Tensor:
    return torch.relu(x)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": identity,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "relu": relu,
}

# torch's own functions are accepted too, so `activation_function=torch.sigmoid` works.
_ALIASES: dict[Callable, str] = {
    torch.sigmoid: "sigmoid",
    torch.tanh: "tanh",
    torch.relu: "relu",
    torch.nn.functional.relu: "relu",
}


def name_of(activation: str | Callable | None) -> str:
    """Normalise an activation given by name, function or None to its name."""
    if activation is None:
        return "identity"
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ConfigError(
                f"unknown activation {activation!r}: expected one of {sorted(ACTIVATIONS)}"
            )
        return activation
    for name, fn in ACTIVATIONS.items():
        if activation is fn:
            return name
    if activation in _ALIASES:
        return _ALIASES[activation]
    raise ConfigError(
        f"activation {getattr(activation, '__name__', activation)!r} is not a known "
        f"function: expected a name from {sorted(ACTIVATIONS)} (activations are stored "
        "by name so checkpoints and ONNX export can carry them)"
    )


def get(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function for an activation name."""
    return ACTIVATIONS[name_of(name)]
