"""Layer: the configuration of one group of Zor units.

A network is a list of layers. Layer i has ``size`` units, a per-unit threshold
vector θ_i, and (when a layer follows it) owns the weight matrix W_i of shape
(n_i, n_{i+1}) and the learning settings of that connection. The last layer is the
output: it returns its charges (through its activation), and still computes spikes
for learning.

Every mechanism is a named field here and can be switched off:

- homeostasis:   θ ← θ − η (target_activation − r)         off with ``activation_rate=0``
- novelty:       E′ = clip(E − ν R, 0, 1)                   off with ``novelty_factor=0``
- norm clipping: U ← U · min(1, learning_range / ‖U‖)       off with ``learning_range=None``
- weight clamp:  W ← clamp(W, −max_weight, max_weight)      off with ``max_weight=None``
- state:         c_t = λ c̃_{t−1} + x_t                      stateless with ``decay=0``

Example:
    >>> from zor import Layer
    >>> Layer(64, target_activation=0.5, activation_rate=0.05).size
    64
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Optional, Tuple, Union

from . import activations
from .errors import ConfigError

__all__ = ["Layer"]


@dataclass
class Layer:
    size: int                                  # n_i: number of units
    activation_function: Union[str, Callable, None] = None  # f applied to gated charges; stored by name
    threshold: Optional[float] = None          # initial θ (spike when c > θ); None: 0 for input and
                                               #   hidden layers, −inf for the output (every output unit learns)
    target_activation: float = 0.5             # homeostasis: firing rate each unit drifts toward
    activation_rate: float = 0.0               # homeostasis speed η; 0 switches homeostasis off
    rate_momentum: float = 0.9                 # EMA factor of the per-unit firing rate r
    threshold_range: Optional[Tuple[float, float]] = None  # clamp θ into [lo, hi]; None = no clamp
    learning_range: Optional[float] = 1.0      # max Frobenius norm of one update U of W_i; None = no clip
    max_weight: Optional[float] = 1.0          # clamp |W_i| ≤ max_weight; None = no clamp
    novelty_factor: float = 0.0                # ν in E′ = clip(E − ν R, 0, 1); 0 = no novelty gating
    novelty_momentum: float = 0.9              # ρ in R ← ρ R + (1 − ρ)|E|
    decay: float = 0.0                         # λ: charge kept between calls; 0 = stateless (c = x)
    min_charge: Optional[float] = None         # stateful: a non-spiking charge below this resets to 0
    refractory: float = 0.0                    # stateful: a unit that spiked resets to −refractory
    reset_on_spike: bool = True                # stateful: a unit that spiked resets (else keeps c)

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise ConfigError(f"Layer size must be an int, got {type(self.size).__name__} {self.size!r}")
        if self.size <= 0:
            raise ConfigError(f"Layer size must be a positive int, got {self.size}")
        self.activation_function = activations.name_of(self.activation_function)
        _check_range("target_activation", self.target_activation, 0.0, 1.0)
        _check_range("rate_momentum", self.rate_momentum, 0.0, 1.0)
        _check_range("novelty_momentum", self.novelty_momentum, 0.0, 1.0)
        _check_range("decay", self.decay, 0.0, 1.0)
        for name in ("activation_rate", "novelty_factor", "refractory"):
            _check_finite(name, getattr(self, name))
        if self.threshold is not None:
            if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) \
                    or math.isnan(self.threshold) or self.threshold == math.inf:
                raise ConfigError(f"threshold must be a number < inf (−inf: always spike) or None, got {self.threshold!r}")
            self.threshold = float(self.threshold)
        if self.activation_rate < 0:
            raise ConfigError(f"activation_rate must be ≥ 0, got {self.activation_rate}")
        if self.refractory < 0:
            raise ConfigError(f"refractory must be ≥ 0, got {self.refractory}")
        for name in ("learning_range", "max_weight"):
            value = getattr(self, name)
            if value is not None:
                _check_finite(name, value)
                if value <= 0:
                    raise ConfigError(f"{name} must be > 0 or None, got {value}")
        if self.min_charge is not None:
            _check_finite("min_charge", self.min_charge)
        if self.threshold_range is not None:
            lo, hi = (float(v) for v in self.threshold_range)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise ConfigError(f"threshold_range must be (lo, hi) with lo ≤ hi, got {self.threshold_range}")
            self.threshold_range = (lo, hi)

    @property
    def stateful(self) -> bool:
        """True when charges persist between calls (decay > 0)."""
        return self.decay > 0

    @property
    def activation(self) -> str:
        """The activation's name ("identity" when none)."""
        return str(self.activation_function)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["threshold_range"] is not None:
            d["threshold_range"] = list(d["threshold_range"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Layer":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown Layer fields {sorted(unknown)}: expected a subset of {sorted(known)}")
        d = dict(d)
        if d.get("threshold_range") is not None:
            d["threshold_range"] = tuple(d["threshold_range"])
        return cls(**d)


def _check_finite(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")


def _check_range(name: str, value: Any, lo: float, hi: float) -> None:
    _check_finite(name, value)
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must lie in [{lo}, {hi}], got {value}")
