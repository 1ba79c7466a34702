"""ZorConfig: the network-wide settings of a Zor network, and the optimizers it can use.

Per-layer settings live on :class:`~zor.engine.layer.Layer`. The optimizer applies the
learning rule's update U through grad = −U (:mod:`zor.engine.rules`).

Example:
    >>> ZorConfig(lr=3e-3).optimizer
    'adamw'
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Optional

import torch

from zor.common.errors import ConfigError

from . import rules
from .averaging import check_beta

__all__ = ["ZorConfig", "OPTIMIZERS", "resolve_device", "with_overrides"]

# name -> optimizer over the weights (params, config, fused) -> torch.optim.Optimizer
OPTIMIZERS = {
    "adam": lambda params, c, f: torch.optim.Adam(params, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay, fused=f),
    "adamw": lambda params, c, f: torch.optim.AdamW(params, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay, fused=f),
    "sgd": lambda params, c, f: torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay, fused=f),
}


@dataclass
class ZorConfig:
    """Network-wide settings (per-layer settings live on :class:`Layer`)."""

    rule: str = "gated"               # learning-rule variant, a name from zor.engine.rules.RULES (measured best:
                                      #   benchmarks/rule_variants.py)
    optimizer: str = "adamw"          # "adam", "adamw" or "sgd": applies U through grad = −U
    lr: float = 1e-3                  # optimizer learning rate
    betas: tuple = (0.9, 0.999)       # Adam/AdamW moment factors
    weight_decay: float = 0.01        # AdamW/SGD weight decay (AdamW's own default)
    momentum: float = 0.9             # SGD momentum
    error_scaling: bool = True        # scale U by the current error level max(mean|error|, floor)
    min_error_scale: float = 0.01     # floor of the error-level scale
    init_scale: float = 0.5           # W_i ~ N(0, init_scale · sqrt(2 / (n_i + n_{i+1}))); 1.0 for networks
                                      #   deeper than ~8 layers, where 0.5 lets the forward signal die out
                                      #   (benchmarks/depth.py: 12 layers 40.8 → 75.1 %)
    weight_average: float = 0.0       # β of fit()'s moving average of the weights, which fit() ends with
                                      #   (zor.engine.averaging; 0 = off: the last iterate; 0.995 ≈ the last 200 steps)
    seed: Optional[int] = 0           # seeds weight init and fit()'s sampling; None = nondeterministic
    device: str = "auto"              # "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...

    def __post_init__(self) -> None:
        rules.get_rule(self.rule)  # raises ConfigError on an unknown name
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}: expected one of {sorted(OPTIMIZERS)}")
        for name in ("lr", "weight_decay", "momentum", "min_error_scale", "init_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number ≥ 0, got {value!r}")
        self.weight_average = check_beta(self.weight_average)
        self.betas = tuple(float(b) for b in self.betas)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {self.betas}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d



def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown torch device {device!r}: expected 'auto', 'cpu' or 'cuda[:N]'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but torch sees no CUDA GPU: use 'auto' or 'cpu'")
    return dev


def with_overrides(config: ZorConfig, overrides: dict[str, Any]) -> ZorConfig:
    """``config`` with the keyword settings given to Zor(...) in place (unknown names raise ConfigError)."""
    if not overrides:
        return config
    known = {f.name for f in fields(ZorConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise ConfigError(f"unknown Zor settings {sorted(unknown)}: expected some of {sorted(known)}")
    return replace(config, **overrides)
