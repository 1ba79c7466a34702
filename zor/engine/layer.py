"""Layer: the configuration of one group of Zor units.

A network is a list of layers. Layer i has ``size`` units, a per-unit threshold
vector θ_i, and (when a layer follows it) owns the weight matrix W_i of shape
(n_i, n_{i+1}) and the learning settings of that connection. The last layer is the
output: it returns its charges (through its activation), and still computes spikes
for learning. The network keeps the W_i in a :class:`WeightList` (an nn.ParameterList
that reads its items without nn.Module's attribute walk).

Every mechanism is a named field here and can be switched off:

- homeostasis:   θ ← θ − η (target_activation − r)         off with ``homeostasis_rate=0``
                 (default: η = 1e-3 toward 0.75 on hidden layers, off on input and output)
- novelty:       E′ = clip(E − ν R, 0, 1)                   off with ``novelty_factor=0``
- norm clipping: U ← U · min(1, max_update_norm / ‖U‖)      off with ``max_update_norm=None``
- weight clamp:  W ← clamp(W, −max_weight, max_weight)      off with ``max_weight=None``
- state:         c_t = λ c̃_{t−1} + x_t                      stateless with ``decay=0``

Renamed (the old names still work until the next release, with a DeprecationWarning;
checkpoints that use them still load): ``activation_rate`` → ``homeostasis_rate``,
``learning_range`` → ``max_update_norm``.

Example:
    >>> from zor import Layer
    >>> Layer(64, target_activation=0.5, homeostasis_rate=0.05).size
    64
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple, Union

from torch import nn

from zor.common.deprecation import rename_keys, renamed_parameters
from zor.common.errors import ConfigError

from . import activations

__all__ = ["Layer", "Conv", "RENAMED", "check_layers", "place_layers", "WeightList"]

# old parameter name -> new name (the old ones are accepted until the next release)
RENAMED = {"activation_rate": "homeostasis_rate", "learning_range": "max_update_norm"}


@renamed_parameters(RENAMED)
@dataclass
class Layer:
    size: int                                  # n_i: number of units
    activation_function: Union[str, Callable, None] = None  # f applied to gated charges; stored by name
    threshold: Optional[float] = None          # initial θ (spike when c > θ); None: 0 for input and
                                               #   hidden layers, −inf for the output (every output unit learns)
    target_activation: float = 0.75            # homeostasis: firing rate each unit drifts toward
    homeostasis_rate: Optional[float] = None   # homeostasis speed η; 0 = off; None: 1e-3 on hidden
                                               #   layers, 0 on input and output (measured best:
                                               #   benchmarks/rule_variants.py)
    rate_momentum: float = 0.9                 # EMA factor of the per-unit firing rate r
    threshold_range: Optional[Tuple[Optional[float], Optional[float]]] = None  # clamp θ into [lo, hi]; None =
                                               #   no clamp; a None bound leaves that side open, e.g.
                                               #   (0.0, None): θ ≥ 0, so only positive charges pass
    max_update_norm: Optional[float] = 1.0     # max Frobenius norm of one update U of W_i; None = no clip
    max_weight: Optional[float] = 1.0          # clamp |W_i| ≤ max_weight; None = no clamp
    novelty_factor: float = 0.0                # ν in E′ = clip(E − ν R, 0, 1); 0 = no novelty gating
    novelty_momentum: float = 0.9              # ρ in R ← ρ R + (1 − ρ)|E|
    decay: float = 0.0                         # λ: charge kept between calls; 0 = stateless (c = x)
    min_charge: Optional[float] = None         # stateful: a non-spiking charge below this resets to 0
    refractory: float = 0.0                    # stateful: a unit that spiked resets to −refractory
    reset_on_spike: bool = True                # stateful: a unit that spiked resets (else keeps c)
    shape: Optional[Tuple[int, ...]] = None    # the units as a map, e.g. (1, 28, 28) before a Conv layer

    kind = "dense"                             # how this layer is reached from the one before

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
        for name in ("novelty_factor", "refractory"):
            _check_finite(name, getattr(self, name))
        if self.homeostasis_rate is not None:
            _check_finite("homeostasis_rate", self.homeostasis_rate)
        if self.threshold is not None:
            if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) \
                    or math.isnan(self.threshold) or self.threshold == math.inf:
                raise ConfigError(f"threshold must be a number < inf (−inf: always spike) or None, got {self.threshold!r}")
            self.threshold = float(self.threshold)
        if self.homeostasis_rate is not None and self.homeostasis_rate < 0:
            raise ConfigError(f"homeostasis_rate must be ≥ 0, got {self.homeostasis_rate}")
        if self.refractory < 0:
            raise ConfigError(f"refractory must be ≥ 0, got {self.refractory}")
        for name in ("max_update_norm", "max_weight"):
            value = getattr(self, name)
            if value is not None:
                _check_finite(name, value)
                if value <= 0:
                    raise ConfigError(f"{name} must be > 0 or None, got {value}")
        if self.min_charge is not None:
            _check_finite("min_charge", self.min_charge)
        if self.shape is not None:
            shape = tuple(self.shape)
            if not shape or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in shape):
                raise ConfigError(f"shape must be positive ints, got {self.shape!r}")
            if math.prod(shape) != self.size:
                raise ConfigError(f"shape {shape} holds {math.prod(shape)} units, expected size {self.size}")
            self.shape = shape
        if self.threshold_range is not None:
            self.threshold_range = _bounds(self.threshold_range)

    @property
    def stateful(self) -> bool:
        """True when charges persist between calls (decay > 0)."""
        return self.decay > 0

    @property
    def activation(self) -> str:
        """The activation's name ("identity" when none)."""
        return str(self.activation_function)

    @property
    def map_shape(self) -> Tuple[int, ...]:
        """The units' shape: ``shape`` when given, else (size,)."""
        return self.shape if self.shape is not None else (self.size,)

    @property
    def threshold_shape(self) -> Tuple[int, ...]:
        """Shape of θ: one per unit."""
        return (self.size,)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("threshold_range", "shape"):
            if d.get(key) is not None:
                d[key] = list(d[key])
        d["kind"] = self.kind
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Layer":
        """Rebuild a Layer or Conv from :meth:`to_dict` output (old parameter names are read too)."""
        d = rename_keys("Layer", d, RENAMED, warn=False)   # checkpoints written before the renames
        kind = d.pop("kind", "dense")
        cls = {"dense": Layer, "conv": Conv}.get(kind)
        if cls is None:
            raise ConfigError(f"unknown layer kind {kind!r}: expected 'dense' or 'conv'")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} fields {sorted(unknown)}: expected a subset of {sorted(known)}")
        for key in ("threshold_range", "shape"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        if cls is Conv:
            d.pop("size", None)
            d.pop("shape", None)
            return Conv(**d)
        return Layer(**d)


def _bounds(value: Any) -> Tuple[Optional[float], Optional[float]]:
    """(lo, hi) of threshold_range: finite numbers or None (no bound on that side), lo ≤ hi."""
    expected = "(lo, hi) of finite numbers or None (no bound on that side) with lo ≤ hi"
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise ConfigError(f"threshold_range must be {expected}, got {value!r}") from None
    if lo is None and hi is None:
        raise ConfigError(f"threshold_range must bound at least one side (or be None), got {value!r}")
    if not all(v is None or _is_finite(v) for v in (lo, hi)) or (lo is not None and hi is not None and lo > hi):
        raise ConfigError(f"threshold_range must be {expected}, got {value!r}")
    return (None if lo is None else float(lo)), (None if hi is None else float(hi))


def _is_finite(value: Any) -> bool:
    """A real, finite number (bools excluded)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _check_finite(name: str, value: Any) -> None:
    if not _is_finite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")


def _check_range(name: str, value: Any, lo: float, hi: float) -> None:
    _check_finite(name, value)
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must lie in [{lo}, {hi}], got {value}")


@renamed_parameters(RENAMED)
@dataclass(init=False)
class Conv(Layer):
    """A convolutional layer: ``channels`` feature maps reached by a shared k×k kernel.

    The previous layer must be a map (C, H, W) (give the input layer ``shape=``).
    This layer's map is (channels, H′, W′), H′ = ⌊(H + 2·padding − k)/stride⌋ + 1;
    the network fills in ``shape`` and ``size``. Thresholds, firing rates and
    homeostasis are per channel; every other field means what it means on
    :class:`Layer` (its learning settings apply to the connection *out of* it).

    Example:
        >>> from zor import Zor, Layer, Conv
        >>> net = Zor([Layer(784, shape=(1, 28, 28)), Conv(4, kernel_size=5, stride=2), Layer(10)])
        >>> net.layers[1].shape
        (4, 12, 12)
    """

    channels: int = 1          # C: number of feature maps
    kernel_size: int = 3       # k: the kernel is k × k
    stride: int = 1            # s: step between applications of the kernel
    padding: int = 0           # p: zeros added on each side of the input map

    kind = "conv"

    def __init__(self, channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 0,
                 **layer_fields: Any) -> None:
        for name, value, lo in (("channels", channels, 1), ("kernel_size", kernel_size, 1),
                                ("stride", stride, 1), ("padding", padding, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ConfigError(f"Conv {name} must be an int ≥ {lo}, got {value!r}")
        for name in ("size", "shape"):
            if name in layer_fields:
                raise ConfigError(f"Conv {name} is derived from the previous layer; do not pass it")
        self.channels, self.kernel_size, self.stride, self.padding = channels, kernel_size, stride, padding
        super().__init__(size=channels, **layer_fields)   # size/shape set by place_after()

    def place_after(self, prev_shape: Tuple[int, ...]) -> None:
        """Derive this layer's map shape from the previous layer's."""
        if len(prev_shape) != 3:
            raise ConfigError(f"a Conv layer needs a (C, H, W) map before it, got shape {prev_shape} "
                              "(give the previous layer shape=(C, H, W))")
        _, h, w = prev_shape
        ho = (h + 2 * self.padding - self.kernel_size) // self.stride + 1
        wo = (w + 2 * self.padding - self.kernel_size) // self.stride + 1
        if ho <= 0 or wo <= 0:
            raise ConfigError(f"Conv kernel {self.kernel_size} (stride {self.stride}, padding {self.padding}) "
                              f"does not fit a {h}×{w} map")
        self.shape = (self.channels, ho, wo)
        self.size = self.channels * ho * wo

    @property
    def threshold_shape(self) -> Tuple[int, ...]:
        """Shape of θ: one per channel."""
        return (self.channels,)


def check_layers(layers: Any) -> None:
    """Raise ConfigError unless ``layers`` is a list (or tuple) of at least two Layer objects."""
    if isinstance(layers, Layer) or not isinstance(layers, (list, tuple)):
        raise ConfigError(f"Zor takes a list of Layer objects, got {type(layers).__name__}")
    if len(layers) < 2:
        raise ConfigError(f"a Zor network needs at least 2 layers (input and output), got {len(layers)}")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise ConfigError(f"layer {i} must be a zor.Layer, got {type(layer).__name__}")


def place_layers(layers: Sequence[Layer]) -> list[Layer]:
    """Copies of the layers with every Conv's map shape derived from the layer before."""
    placed: list[Layer] = []
    for i, layer in enumerate(layers):
        layer = copy.copy(layer)
        if isinstance(layer, Conv):
            if i == 0:
                raise ConfigError("the first layer cannot be a Conv: give Layer(n, shape=(C, H, W)) as the input")
            layer.place_after(placed[-1].map_shape)
        placed.append(layer)
    return placed


class WeightList(nn.ParameterList):
    """The W_i of a network, layer i's outgoing weights: an nn.ParameterList (same items, state-dict keys
    ``weights.i`` and behaviour) whose items are read from its parameter dict directly. The stock indexing and
    iteration walk nn.Module attribute lookups in Python (~1.6 µs an item); a training step reads W_i ~10 times."""

    def __getitem__(self, idx: Any) -> Any:
        if type(idx) is int and 0 <= idx < self._size:
            w = self._parameters.get(str(idx))
            if w is not None:
                return w
        return super().__getitem__(idx)

    def __iter__(self) -> Iterator[Any]:
        params = self._parameters   # keys "0", "1", ... in order, when every item is a parameter
        return iter(list(params.values())) if len(params) == self._size else super().__iter__()
