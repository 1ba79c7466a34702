"""Zor: a list of layers, the forward pass, and learning without backprop.

Forward, for a batch x (B, n_0), layer by layer (see :mod:`zor.engine.neuron`):

    c_i = charge(h_i)            h_0 = x, h_{i+1} = a_i W_i
    s_i = [c_i > θ_i]
    a_i = f_i(c_i ⊙ s_i)         what layer i sends on (and what learning uses)
    output = f_L(c_L)            the output layer returns its charges

A batch that is mostly zeros can come as a torch sparse tensor (COO/CSR): the input
layer then works on its nonzeros only and learning touches only the rows of W_0 whose
units had an event (:mod:`zor.engine.events`; same results as the dense path).

Learning (``reinforce(error)``, error = target − output) follows
:mod:`zor.engine.rules`: the error goes down through the transposes of the current forward
weights, each connection moves along (a_iᵀ δ / B) ⊙ E′ with E′ the novelty-gated
co-activity, and every layer's thresholds drift toward their target firing rate.

Example (the seed's quick start):
    >>> import torch
    >>> from zor import Zor, Layer
    >>> snn = Zor([Layer(784), Layer(64), Layer(784)], seed=0)
    >>> batch = torch.rand(48, 784)
    >>> errors = snn.train_batch(batch, batch)          # forward + reinforce
    >>> snn.forward(batch, train=False).shape
    torch.Size([48, 784])
"""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from zor.common import metrics
from zor.common.errors import (
    ConfigError,
    DTypeError,
    NonFiniteError,
    ShapeError,
    StateError,
    ZorWarning,
)

from . import activations, events, neuron, rules
from .averaging import WeightAverage, check_beta
from .connections import Connection, Conv2d, Dense
from .curriculum import CurriculumSampler
from .layer import Conv, Layer

__all__ = ["Zor", "ZorConfig", "History"]

ArrayLike = Union[torch.Tensor, np.ndarray]


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
        if self.optimizer not in _OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}: expected one of {sorted(_OPTIMIZERS)}")
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


_HIDDEN_ETA = 1e-3   # default homeostasis speed of hidden layers (benchmarks/rule_variants.py)
_SIGNAL_RATIO = 1e-3  # fit() warns when std(output charges) < this × std(first hidden charges)

_OPTIMIZERS = {
    "adam": lambda params, c, f: torch.optim.Adam(params, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay, fused=f),
    "adamw": lambda params, c, f: torch.optim.AdamW(params, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay, fused=f),
    "sgd": lambda params, c, f: torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay, fused=f),
}


@dataclass
class History:
    """What :meth:`Zor.fit` did: per-step training accuracy and timings."""

    steps: int = 0
    seconds: float = 0.0
    train_accuracy: list = field(default_factory=list)     # 100·(1 − mean|error|) per step
    val: list = field(default_factory=list)                # (step, metrics dict) pairs


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown torch device {device!r}: expected 'auto', 'cpu' or 'cuda[:N]'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but torch sees no CUDA GPU: use 'auto' or 'cpu'")
    return dev


class Zor(nn.Module):
    """A Zor spiking network: ``Zor([Layer(784), Layer(64), Layer(784)])``."""

    def __init__(
        self,
        layers: Sequence[Layer],
        config: Optional[ZorConfig] = None,
        task: Optional[dict] = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        if isinstance(layers, Layer) or not isinstance(layers, (list, tuple)):
            raise ConfigError(f"Zor takes a list of Layer objects, got {type(layers).__name__}")
        if len(layers) < 2:
            raise ConfigError(f"a Zor network needs at least 2 layers (input and output), got {len(layers)}")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise ConfigError(f"layer {i} must be a zor.Layer, got {type(layer).__name__}")
        config = config or ZorConfig()
        if overrides:
            known = {f.name for f in fields(ZorConfig)}
            unknown = set(overrides) - known
            if unknown:
                raise ConfigError(f"unknown Zor settings {sorted(unknown)}: expected some of {sorted(known)}")
            config = replace(config, **overrides)
        self.layers: list[Layer] = _place(layers)
        self.connections: list[Connection] = [_connect(pre, post) for pre, post in zip(self.layers[:-1], self.layers[1:])]
        self.config = config
        # What the network is for (name, input/output meaning, preprocessing); plain JSON
        # data carried by checkpoints into the exported file (see zor.common.format).
        self.task: dict = dict(task) if task else {"name": "generic"}
        self.rule = rules.get_rule(config.rule)
        self._acts = [activations.get(layer.activation) for layer in self.layers]
        last = len(self.layers) - 1
        # homeostasis speed η per layer; None resolves to the measured default (hidden layers only)
        self._eta = [float(layer.homeostasis_rate) if layer.homeostasis_rate is not None
                     else (_HIDDEN_ETA if 0 < i < last else 0.0) for i, layer in enumerate(self.layers)]

        gen = torch.Generator().manual_seed(config.seed) if config.seed is not None else None
        weights = []
        for conn in self.connections:
            fan_in, fan_out = conn.fan()
            std = config.init_scale * math.sqrt(2.0 / (fan_in + fan_out))
            w = torch.randn(*conn.weight_shape(), generator=gen) * std          # dense: (n_i, n_{i+1})
            weights.append(nn.Parameter(w, requires_grad=False))
        self.weights = nn.ParameterList(weights)
        for i, layer in enumerate(self.layers):
            theta = layer.threshold if layer.threshold is not None else (-math.inf if i == last else 0.0)
            shape = layer.threshold_shape                   # (n_i,), or (C_i,) for a Conv layer
            self.register_buffer(f"threshold_{i}", torch.full(shape, float(theta)))
            self.register_buffer(f"rate_{i}", torch.full(shape, float(layer.target_activation)))
        for i, w in enumerate(self.weights):
            self.register_buffer(f"novelty_{i}", torch.zeros_like(w))
        self.to(_resolve_device(config.device))
        self._make_optimizer()
        self._state: list[Optional[torch.Tensor]] = [None] * len(self.layers)  # stateful charges (B, n_i)
        self._traces: Optional[list[rules.Trace]] = None
        self._sampler_rng = np.random.default_rng(config.seed)
        self._grad_buffers: dict[int, torch.Tensor] = {}
        self._signal_checked = False   # fit() checks once that the forward signal reaches the output

    # ------------------------------------------------------------------ accessors
    @property
    def device(self) -> torch.device:
        return self.weights[0].device

    @property
    def sizes(self) -> list[int]:
        return [layer.size for layer in self.layers]

    @property
    def stateful(self) -> bool:
        return any(layer.stateful for layer in self.layers)

    def threshold(self, i: int) -> torch.Tensor:
        """θ_i: (n_i,) for a dense layer, (C_i,) per channel for a Conv layer."""
        return getattr(self, f"threshold_{i}")

    @torch.no_grad()
    def set_threshold(self, i: int, value: Union[float, ArrayLike]) -> None:
        """Set θ_i to a number (every unit or channel) or an array of θ_i's shape.

        Thresholds set the spike rate (and with it the cost of the sparse path);
        homeostasis keeps moving them while training unless ``homeostasis_rate=0``.
        """
        if not 0 <= i < len(self.layers):
            raise ConfigError(f"layer index must be in [0, {len(self.layers) - 1}], got {i}")
        theta = self.threshold(i)
        v = torch.as_tensor(np.asarray(value, dtype=np.float32)).to(theta.device)
        if v.ndim and tuple(v.shape) != tuple(theta.shape):
            raise ShapeError(f"threshold of layer {i}: expected a number or shape {tuple(theta.shape)}, "
                             f"got shape {tuple(v.shape)}")
        if torch.isnan(v).any() or (v == float("inf")).any():
            raise NonFiniteError(f"threshold of layer {i}: expected numbers < inf (−inf: always spike), got NaN/+inf")
        theta.copy_(v.expand_as(theta))

    def unit_threshold(self, i: int) -> torch.Tensor:
        """θ_i expanded to one value per unit (n_i,)."""
        theta = self.threshold(i)
        layer = self.layers[i]
        if layer.kind == "conv":
            return theta.repeat_interleave(layer.size // layer.channels)
        return theta

    def rate(self, i: int) -> torch.Tensor:
        """r_i: EMA of each unit's (each channel's, for Conv) firing rate during training."""
        return getattr(self, f"rate_{i}")

    def novelty_trace(self, i: int) -> torch.Tensor:
        """R_i (n_i, n_{i+1}): EMA of |co-activity| of connection i."""
        return getattr(self, f"novelty_{i}")

    @property
    def state(self) -> list[Optional[torch.Tensor]]:
        """Charges carried between calls by stateful layers (None where stateless or fresh)."""
        return list(self._state)

    def set_state(self, state: Sequence[Optional[torch.Tensor]]) -> None:
        if len(state) != len(self.layers):
            raise StateError(f"expected {len(self.layers)} state entries (one per layer), got {len(state)}")
        new: list[Optional[torch.Tensor]] = []
        for i, (layer, s) in enumerate(zip(self.layers, state)):
            if s is None or not layer.stateful:
                new.append(None)
                continue
            s = torch.as_tensor(s, dtype=torch.float32, device=self.device)
            if s.ndim != 2 or s.shape[1] != layer.size:
                raise StateError(f"state of layer {i}: expected shape (B, {layer.size}), got {tuple(s.shape)}")
            new.append(s.clone())
        self._state = new

    def reset_state(self) -> None:
        """Forget the charges stateful layers carry between calls."""
        self._state = [None] * len(self.layers)

    def _make_optimizer(self) -> None:
        make = _OPTIMIZERS[self.config.optimizer]
        try:  # the fused kernels are several times faster for these small updates
            self.optimizer = make(list(self.weights), self.config, True)
        except (RuntimeError, TypeError, ValueError):
            self.optimizer = make(list(self.weights), self.config, None)

    # ------------------------------------------------------------------ input checks
    def _as_input(self, x: ArrayLike, width: int, what: str, allow_sparse: bool = False) -> torch.Tensor:
        if events.is_sparse(x):
            if not allow_sparse:
                raise DTypeError(f"{what}: expected a dense tensor or array, got a sparse {x.layout} tensor "
                                 "(only the input batch may be sparse)")
            x = events.as_events(x, width, self.device, what)
            events.check_input_layer(self.layers[0].stateful, self.unit_threshold(0), self._acts[0],
                                     self.connections[0].kind)
            return x
        if isinstance(x, np.ndarray):
            if not (np.issubdtype(x.dtype, np.floating)):
                raise DTypeError(f"{what}: expected a floating-point array, got dtype {x.dtype}"
                                 + (" (scale integer images to [0, 1] first)" if np.issubdtype(x.dtype, np.integer) else ""))
            x = torch.from_numpy(np.ascontiguousarray(x))
        elif not isinstance(x, torch.Tensor):
            raise DTypeError(f"{what}: expected a torch.Tensor or numpy array, got {type(x).__name__}")
        if not x.is_floating_point():
            raise DTypeError(f"{what}: expected a floating-point tensor, got {x.dtype}"
                             + (" (scale integer images to [0, 1] first)" if x.dtype in (torch.uint8, torch.int32, torch.int64) else ""))
        if x.ndim != 2 or x.shape[1] != width:
            raise ShapeError(f"{what}: expected shape (B, {width}), got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ShapeError(f"{what}: expected at least one row, got an empty batch {tuple(x.shape)}")
        x = x.to(device=self.device, dtype=torch.float32)
        if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():  # sum first: cheap
            bad = int((~torch.isfinite(x)).sum())
            raise NonFiniteError(f"{what}: expected finite values, got {bad} NaN/inf entries")
        return x

    # ------------------------------------------------------------------ forward
    @torch.no_grad()
    def run(self, x: ArrayLike) -> tuple[torch.Tensor, list[rules.Trace]]:
        """Forward pass returning (output, per-layer traces); learns nothing.

        Stateful layers still advance their charges, as on a device.
        """
        x = self._as_input(x, self.layers[0].size, "input", allow_sparse=True)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[rules.Trace]]:
        traces: list[rules.Trace] = []
        h = x                                                   # (B, n_0)
        last = len(self.layers) - 1
        out = h
        for i, layer in enumerate(self.layers):
            if h.is_sparse:                                     # event input (i = 0): see zor.engine.events
                h = h.coalesce()                                # a no-op when already coalesced
                s, a = events.gate(h, self.unit_threshold(0), self._acts[0])
                traces.append(rules.Trace(c=h, s=s, a=a))       # COO (B, n_0), one set of indices
                h = self.connections[0].forward(a, self.weights[0])  # (B, n_1)
                continue
            prev = self._state[i]
            if prev is not None and prev.shape[0] != h.shape[0]:
                prev = None                                     # batch size changed: start from rest
            c = neuron.charge(h, prev, layer.decay)             # (B, n_i)
            s = neuron.fire(c, self.unit_threshold(i))          # (B, n_i) 0./1.
            a = self._acts[i](neuron.gate(c, s))                # (B, n_i)
            if layer.stateful:
                self._state[i] = neuron.reset(c, s > 0, layer.refractory, layer.min_charge, layer.reset_on_spike)
            traces.append(rules.Trace(c=c, s=s, a=a))
            if i < last:
                h = self.connections[i].forward(a, self.weights[i])  # (B, n_{i+1})
            else:
                out = self._acts[i](c)                          # (B, n_L) output charges
        return out, traces

    @torch.no_grad()
    def forward(self, x: ArrayLike, train: bool = True) -> torch.Tensor:
        """Output (B, n_L) for input x (B, n_0).

        With ``train=True`` the pass is kept for the next :meth:`reinforce` and the
        firing-rate averages move; with ``train=False`` nothing learns. x may be a
        torch sparse (COO/CSR) tensor: the event-driven input path of :mod:`zor.engine.events`.
        """
        x = self._as_input(x, self.layers[0].size, "input", allow_sparse=True)
        if not train:
            return self._forward(x)[0]
        out, self._traces = self._forward_train(x)
        return out

    def _forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, list[rules.Trace]]:
        """Forward pass on a checked input, moving the firing-rate averages; returns (output, traces)."""
        out, traces = self._forward(x)
        for i, (layer, t) in enumerate(zip(self.layers, traces)):
            s_units = t.s if layer.kind == "dense" else t.s.reshape(t.s.shape[0] * layer.channels, -1)
            if layer.kind == "conv":   # per channel: (B·C, H·W) → mean over positions, back to (B, C)
                s_units = s_units.mean(dim=1).reshape(t.s.shape[0], layer.channels)
            rules.update_rate(self.rate(i), s_units, layer.rate_momentum)
        return out, traces

    # ------------------------------------------------------------------ learning
    @torch.no_grad()
    def reinforce(self, errors: ArrayLike, return_signal: bool = False) -> Optional[torch.Tensor]:
        """Learn from error = target − output of the last ``forward(train=True)``.

        With ``return_signal=True`` returns the signal that reached the input layer
        (B, n_0) (skipped otherwise: it costs a matmul nobody needs).
        """
        if self._traces is None:
            raise StateError("reinforce() needs a forward(x, train=True) first: no training pass is pending")
        traces = self._traces
        batch = traces[-1].c.shape[0]
        delta = self._as_input(errors, self.layers[-1].size, "errors")
        if delta.shape[0] != batch:
            raise ShapeError(f"errors: expected shape ({batch}, {self.layers[-1].size}) to match the "
                             f"last forward batch, got {tuple(delta.shape)}")
        self._traces = None
        return self._learn(traces, delta, return_signal)

    def _learn(self, traces: list[rules.Trace], delta: torch.Tensor, return_signal: bool) -> Optional[torch.Tensor]:
        cfg = self.config
        scale = max(float(delta.abs().mean()), cfg.min_error_scale) if cfg.error_scaling else 1.0

        top = len(self.weights) - 1
        for i in reversed(range(len(self.weights))):
            layer, w, conn = self.layers[i], self.weights[i], self.connections[i]
            pre, post = traces[i], traces[i + 1]
            d = self.rule.signal(delta, post, i == top)                  # δ̂ (B, n_{i+1})
            if i > 0 or return_signal:
                delta = conn.backward(d, w)                              # (B, n_i), before W_i changes
            units = None
            if pre.a.is_sparse:             # event input: only the rows of the active units (zor.engine.events)
                units, (c0, s0, a0) = events.compact(pre.c, pre.s, pre.a)
                pre = rules.Trace(c=c0, s=s0, a=a0)                      # (B, n_u)
            if self._always_spikes(i + 1):  # θ = −inf: s_{i+1} ≡ 1, O(a_i, s_{i+1}) is a column
                post = rules.Trace(c=post.c, s=post.s, a=post.a, always=True)
            e, g = self.rule.correlate(pre, post, d, conn)               # E, O(a_i, δ̂): like W_i (rows: units)
            if layer.novelty_factor != 0.0:
                trace = self.novelty_trace(i)
                if units is None:
                    e, r = rules.novelty(e, trace, layer.novelty_factor, layer.novelty_momentum)
                    trace.copy_(r)
                else:                       # rows without events: E = 0, so R ← ρ R there
                    e, r = rules.novelty(e, trace[units], layer.novelty_factor, layer.novelty_momentum)
                    trace.mul_(layer.novelty_momentum).index_copy_(0, units, r)
            else:
                e = e.clamp_(0.0, 1.0)                                   # E′ = clip(E, 0, 1), in place
            # grad = −U: U = G ⊙ E′ (a fresh, contiguous tensor), norm-clipped and
            # error-level scaled in one multiply
            u = rules.clip_norm(g * e, layer.max_update_norm, -scale)
            w.grad = u if units is None else self._row_grad(i, w).index_copy_(0, units, u)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        for layer, w in zip(self.layers, self.weights):
            if layer.max_weight is not None:
                w.clamp_(-layer.max_weight, layer.max_weight)
        for i, layer in enumerate(self.layers):
            rules.homeostasis(self.threshold(i), self.rate(i), layer.target_activation,
                              self._eta[i], layer.threshold_range)
        return delta if return_signal else None

    def _row_grad(self, i: int, w: torch.Tensor) -> torch.Tensor:
        """A zeroed gradient buffer for W_i, reused between event-input steps (no fresh 4-byte·|W_i|
        allocation, and with it no page faults, per step)."""
        buf = self._grad_buffers.get(i)
        if buf is None or buf.shape != w.shape or buf.device != w.device:
            buf = self._grad_buffers[i] = torch.empty_like(w)
        return buf.zero_()

    def _always_spikes(self, i: int) -> bool:
        """Whether every unit of layer i spikes on every input (all θ_i = −inf, e.g. the output)."""
        return bool(torch.isneginf(self.threshold(i)).all())

    def train_batch(self, x: ArrayLike, target: ArrayLike) -> torch.Tensor:
        """One step: forward(x), error = target − output, reinforce(error). Returns the error."""
        x = self._as_input(x, self.layers[0].size, "input", allow_sparse=True)
        target = self._as_input(target, self.layers[-1].size, "target")
        if target.shape[0] != x.shape[0]:
            raise ShapeError(f"target: expected shape {(x.shape[0], self.layers[-1].size)}, "
                             f"got {tuple(target.shape)}")
        self._traces = None
        return self._train_step(x, target)

    def _train_step(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """train_batch on checked inputs (fit checks its whole data set once, not every batch)."""
        out, traces = self._forward_train(x)
        errors = target - out                                   # finite: both sides were checked
        self._learn(traces, errors, False)
        return errors

    # ------------------------------------------------------------------ training loop
    def fit(
        self,
        x: ArrayLike,
        y: Optional[ArrayLike] = None,
        steps: int = 500,
        batch_size: int = 48,
        curriculum: bool = True,
        validation: Optional[tuple] = None,
        eval_every: int = 0,
        progress: bool = True,
        time_budget: Optional[float] = None,
    ) -> History:
        """Train on (x, y) for ``steps`` batches (y defaults to x: an autoencoder).

        Batches are drawn by a :class:`~zor.engine.curriculum.CurriculumSampler` that favours
        the samples with the highest recent error (``curriculum=False``: uniform).
        ``validation=(x_val, y_val)`` is evaluated every ``eval_every`` steps.
        ``time_budget`` (seconds) stops early when the wall time runs out.
        With ``config.weight_average`` = β > 0 the weights are averaged over the run
        (:mod:`zor.engine.averaging`) and fit ends with that average in place of the last
        iterate; ``validation`` scores along the way see the iterates.
        """
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ConfigError(f"steps must be an int ≥ 0, got {steps!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
        x = self._as_input(x, self.layers[0].size, "x", allow_sparse=True)
        if y is None:
            y = x.to_dense() if x.is_sparse else x
        else:
            y = self._as_input(y, self.layers[-1].size, "y")
        if y.shape[0] != x.shape[0]:
            raise ShapeError(f"y: expected {x.shape[0]} rows to match x, got {y.shape[0]}")
        sampler = CurriculumSampler(x.shape[0], rng=self._sampler_rng, enabled=curriculum)
        self._check_signal(x[: min(batch_size, x.shape[0])] if not x.is_sparse else x.narrow_copy(0, 0, 1))
        hist = History()
        average = WeightAverage(self.weights, self.config.weight_average) if self.config.weight_average else None
        bar = _progress(steps, progress)
        start = time.perf_counter()
        for step in range(steps):
            idx = sampler.sample(batch_size)
            idx_t = torch.as_tensor(idx, device=self.device)
            err = self._train_step(x.index_select(0, idx_t), y[idx_t])
            if average is not None:
                average.update()
            per_sample = err.abs().mean(dim=1)
            sampler.update(idx, per_sample.detach().cpu().numpy())
            acc = 100.0 * (1.0 - float(per_sample.mean()))
            hist.train_accuracy.append(acc)
            hist.steps = step + 1
            if validation is not None and eval_every and (step + 1) % eval_every == 0:
                hist.val.append((step + 1, self.evaluate(*validation)))
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(acc=f"{acc:.1f}%")
            if time_budget is not None and time.perf_counter() - start >= time_budget:
                break
        if average is not None:
            average.apply()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        hist.seconds = time.perf_counter() - start
        if bar is not None:
            bar.close()
        return hist

    @torch.no_grad()
    def _check_signal(self, x: torch.Tensor) -> None:
        """Warn (once per network) when the forward signal dies out on its way up.

        Each gated layer passes on only part of its charges; through many layers with
        a small ``init_scale`` the output charges start near zero and learning does not
        recover (``benchmarks/depth.py``: 12 layers at scale 0.5 start with output std
        1e-5 and reach 40.8 %, at 1.0 they reach 75.1 %). The check compares the std of
        the output charges with the first hidden layer's on one batch.
        """
        if self._signal_checked or len(self.layers) < 4:
            return
        self._signal_checked = True
        saved = self.state
        _, traces = self._forward(x)
        self._state = saved
        first, last = float(traces[1].c.std()), float(traces[-1].c.std())
        if first > 0 and last < _SIGNAL_RATIO * first:
            warnings.warn(
                f"the forward signal dies out across {len(self.layers)} layers: the output charges' std is "
                f"{last:.2g} against {first:.2g} at the first hidden layer (expected at least {_SIGNAL_RATIO:g}x); "
                f"learning may not recover. Raise init_scale (now {self.config.init_scale:g}; 1.0 trains 12 "
                "layers, see benchmarks/depth.py)", ZorWarning, stacklevel=3)

    @torch.no_grad()
    def predict(self, x: ArrayLike, batch_size: int = 1024) -> torch.Tensor:
        """forward(x, train=False) in chunks; stateful charges are restored afterwards."""
        x = self._as_input(x, self.layers[0].size, "x", allow_sparse=True)
        saved = self.state
        outs = [self._forward(x.narrow_copy(0, i, min(batch_size, x.shape[0] - i)) if x.is_sparse
                              else x[i:i + batch_size])[0] for i in range(0, x.shape[0], batch_size)]
        self._state = saved
        return torch.cat(outs)

    def evaluate(self, x: ArrayLike, y: Optional[ArrayLike] = None) -> dict[str, float]:
        """Reconstruction metrics of the output against y (default x).

        ``accuracy`` is the seed's metric 100·(1 − MAE); also ``mae``, ``mse`` and
        ``psnr`` (dB, peak 1). Learns nothing; stateful charges are restored.
        """
        out = self.predict(x)
        if y is None and events.is_sparse(x):
            x = x.to_dense()
        target = self._as_input(x if y is None else y, self.layers[-1].size, "y")
        return metrics.reconstruction(out.cpu().numpy(), target.cpu().numpy())

    # ------------------------------------------------------------------ persistence
    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write a checkpoint (one safetensors file with a JSON config), atomically."""
        from .checkpoint import save

        save(self, path)

    @classmethod
    def load(cls, path: Union[str, os.PathLike], device: str = "auto") -> "Zor":
        """Read a checkpoint written by :meth:`save`; never unpickles."""
        from .checkpoint import load

        return load(path, device=device)

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, rule={self.config.rule!r}, optimizer={self.config.optimizer!r}"


def _place(layers: Sequence[Layer]) -> list[Layer]:
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


def _connect(pre: Layer, post: Layer) -> Connection:
    if isinstance(post, Conv):
        return Conv2d(pre.map_shape, post.map_shape, post.kernel_size, post.stride, post.padding)
    return Dense(pre.size, post.size)


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is part of the `train` extra; train silently without it
        return None
    return tqdm(total=total, desc="zor fit", unit="step", leave=False)
