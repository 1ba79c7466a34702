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

import math
import os
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from zor.common import metrics
from zor.common.errors import (
    CheckpointError,
    ConfigError,
    NonFiniteError,
    ShapeError,
    StateError,
)

from . import (
    activations,
    buffers,
    checkpoint_file,
    events,
    inputs,
    learning,
    neuron,
    rules,
    training,
)
from . import distributed as distributed_
from . import plan as plan_
from . import threads as threads_
from .config import OPTIMIZERS, ZorConfig, resolve_device, with_overrides
from .connections import Connection, connect
from .layer import Layer, WeightList, check_layers, place_layers
from .training import History

__all__ = ["Zor", "ZorConfig", "History"]

ArrayLike = Union[torch.Tensor, np.ndarray]

_HIDDEN_ETA = 1e-3   # default homeostasis speed of hidden layers (benchmarks/rule_variants.py)


class Zor(nn.Module):
    """A Zor spiking network: ``Zor([Layer(784), Layer(64), Layer(784)])``."""

    def __init__(
        self,
        layers: Sequence[Layer],
        config: Optional[ZorConfig] = None,
        task: Optional[dict] = None,
        *,
        distributed: bool = False,
        threads: Optional[int] = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        check_layers(layers)
        config = with_overrides(config or ZorConfig(), overrides)
        self.layers: list[Layer] = place_layers(layers)
        self.connections: list[Connection] = [connect(pre, post) for pre, post in zip(self.layers[:-1], self.layers[1:])]
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
        self.weights = WeightList(weights)
        for i, layer in enumerate(self.layers):
            theta = layer.threshold if layer.threshold is not None else (-math.inf if i == last else 0.0)
            shape = layer.threshold_shape                   # (n_i,), or (C_i,) for a Conv layer
            self.register_buffer(f"threshold_{i}", torch.full(shape, float(theta)))
            self.register_buffer(f"rate_{i}", torch.full(shape, float(layer.target_activation)))
        for i, w in enumerate(self.weights):
            self.register_buffer(f"novelty_{i}", torch.zeros_like(w))
        self.to(resolve_device(config.device))
        self._make_optimizer()
        self._state: list[Optional[torch.Tensor]] = [None] * len(self.layers)  # stateful charges (B, n_i)
        self._traces: Optional[list[rules.Trace]] = None
        self._sampler_rng = np.random.default_rng(config.seed)
        self._grad_buffers, self._scratch = {}, {}   # W_i's own gradient buffers; the shared ones (zor.engine.buffers)
        self._signal_checked = False   # fit() checks once that the forward signal reaches the output
        self._always: dict[int, tuple] = {}   # layer -> (θ state, all θ = −inf): zor.engine.learning.always_spikes
        self._spike_sums: Optional[list[torch.Tensor]] = None   # distributed: Σ_b s_i per layer, for the rates
        self._thread_plan: Optional[tuple] = None   # zor.engine.threads.for_step's last choice, and what it rests on
        self._plan: Optional[plan_.StepPlan] = None   # the training step's plan (zor.engine.plan)
        self.threads = threads_.check(threads)   # torch threads for training; None: zor.engine.threads decides
        self.reducer: distributed_.Reducer = distributed_.start(self) if distributed else distributed_.OFF

    # ------------------------------------------------------------------ accessors
    @property
    def device(self) -> torch.device:
        return self._modules["weights"][0].device   # (not self.weights: nn.Module's attribute lookup costs ~1 µs)

    @property
    def sizes(self) -> list[int]:
        return [layer.size for layer in self.layers]

    @property
    def distributed(self) -> bool:
        """Whether train_batch all-reduces its batch statistics over the process group (zor.engine.distributed)."""
        return self.reducer.active

    def set_distributed(self, flag: bool) -> None:
        """Exact data parallelism on (needs a default process group, the same net on every rank) or off."""
        self.reducer = distributed_.start(self) if flag else distributed_.OFF
        self._spike_sums = None

    @property
    def stateful(self) -> bool:
        return any(layer.stateful for layer in self.layers)

    def threshold(self, i: int) -> torch.Tensor:
        """θ_i: (n_i,) for a dense layer, (C_i,) per channel for a Conv layer."""
        return self._buffers[f"threshold_{i}"]   # not getattr: nn.Module's lookup costs ~0.8 µs, ~20 reads a step

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
        return self._buffers[f"rate_{i}"]

    def novelty_trace(self, i: int) -> torch.Tensor:
        """R_i (n_i, n_{i+1}): EMA of |co-activity| of connection i."""
        return self._buffers[f"novelty_{i}"]

    @property
    def state(self) -> list[Optional[torch.Tensor]]:
        """Charges carried between calls by stateful layers (None where stateless or fresh)."""
        return list(self._state)

    def set_state(self, state: Sequence[Optional[torch.Tensor]]) -> None:
        """Set the charges stateful layers carry (copies; checked by zor.engine.inputs.as_state)."""
        self._state = inputs.as_state(state, self.layers, self.device)

    def reset_state(self) -> None:
        """Forget the charges stateful layers carry between calls."""
        self._state = [None] * len(self.layers)

    def _make_optimizer(self) -> None:
        make = OPTIMIZERS[self.config.optimizer]
        try:  # the fused kernels are several times faster for these small updates
            self.optimizer = make(list(self.weights), self.config, True)
        except (RuntimeError, TypeError, ValueError):
            self.optimizer = make(list(self.weights), self.config, None)

    # ------------------------------------------------------------------ input checks
    def _as_input(self, x: ArrayLike, width: int, what: str, allow_sparse: bool = False) -> torch.Tensor:
        """x checked (zor.engine.inputs) as a (B, width) batch on this network's device; a sparse batch
        (only where ``allow_sparse``) becomes the event input of zor.engine.events."""
        if events.is_sparse(x):
            return events.input_batch(self, x, width, what, allow_sparse)
        return inputs.as_batch(x, width, what, self.device)

    # ------------------------------------------------------------------ forward
    @torch.no_grad()
    def run(self, x: ArrayLike) -> tuple[torch.Tensor, list[rules.Trace]]:
        """Forward pass returning (output, per-layer traces); learns nothing.

        Stateful layers still advance their charges, as on a device.
        """
        x = self._as_input(x, self.layers[0].size, "input", allow_sparse=True)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[rules.Trace]]:
        """(output, traces) of a checked input. A dense layer whose every θ is −inf (the output, by default) spikes
        everywhere: s = 1 (a read-only broadcast) and a = f(c ⊙ 1) = f(c), no pass for either (the output: f(c))."""
        traces: list[rules.Trace] = []
        h = x                                                   # (B, n_0)
        last, state, acts, weights = len(self.layers) - 1, self._state, self._acts, list(self.weights)
        for i, layer in enumerate(self.layers):
            if h.is_sparse:                                     # event input (i = 0): see zor.engine.events
                h = h.coalesce()                                # a no-op when already coalesced
                s, a = events.gate(h, self.unit_threshold(0), acts[0])
                traces.append(rules.Trace(c=h, s=s, a=a))       # COO (B, n_0), one set of indices
                h = self.connections[0].forward(a, weights[0])  # (B, n_1)
                continue
            prev = state[i] if state[i] is not None and state[i].shape[0] == h.shape[0] else None   # B changed: rest
            c = neuron.charge(h, prev, layer.decay)             # (B, n_i)
            always = learning.always_spikes(self, i)            # every θ_i = −inf: every unit spikes
            if always and layer.kind == "dense":
                s, a = buffers.ones(self, c.shape, c), acts[i](c)   # (B, n_i): s ≡ 1, a = f(c)
            else:
                theta = self._buffers[f"threshold_{i}"] if layer.kind == "dense" else self.unit_threshold(i)
                s = neuron.fire(c, theta)                       # (B, n_i) 0./1.
                a = acts[i](neuron.gate(c, s))                  # (B, n_i)
            if layer.stateful:
                state[i] = neuron.reset(c, s > 0, layer.refractory, layer.min_charge, layer.reset_on_spike)
            traces.append(rules.Trace(c, s, a, always))
            if i < last:
                h = self.connections[i].forward(a, weights[i])  # (B, n_{i+1})
            else:
                out = a if always and layer.kind == "dense" else acts[i](c)   # (B, n_L) f(output charges)
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
        if self.reducer.owns_forward:                       # the columns exchange: the forward on own columns
            return self.reducer.forward_train(self, x)
        out, traces = self._forward(x)
        learning.update_rates(self, traces)
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
        return learning.learn(self, traces, delta, return_signal)

    def train_batch(self, x: ArrayLike, target: ArrayLike) -> torch.Tensor:
        """One step: forward(x), error = target − output, reinforce(error). Returns the error."""
        given, width = x, self.layers[-1].size
        if not inputs.ready_pair(x, target, self.layers[0].size, width, self.device):   # else checked one by one:
            x = self._as_input(x, self.layers[0].size, "input", allow_sparse=True)
            target = x if target is given and not x.is_sparse and width == x.shape[1] else \
                self._as_input(target, width, "target")         # an autoencoder's target: the same array
            if target.shape[0] != x.shape[0]:
                raise ShapeError(f"target: expected shape {(x.shape[0], width)}, got {tuple(target.shape)}")
        if self._traces is not None:                            # (an nn.Module attribute write costs ~1 µs)
            self._traces = None
        return self._train_step(x, target)

    def _train_step(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """train_batch on checked inputs (fit checks its whole data set once, not every batch)."""
        threads_.for_step(self, x.shape[0], x.device)         # zor.engine.threads: the step's torch threads
        plan = plan_.for_step(self, x)                          # zor.engine.plan: a common network's planned step
        if plan is not None:
            return plan.step(self, x, target)
        out, traces = self._forward_train(x)
        errors = target - out                                   # finite: both sides were checked
        learning.learn(self, traces, errors, False)
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
        *, distributed: bool = False, checkpoint: Optional[Union[str, os.PathLike]] = None,
        checkpoint_every: int = 0, resume: bool = False, sync_every: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> History:
        """Train on (x, y) for ``steps`` batches (y defaults to x: an autoencoder).

        Batches are drawn by a :class:`~zor.common.curriculum.CurriculumSampler` that favours
        the samples with the highest recent error (``curriculum=False``: uniform).
        ``validation=(x_val, y_val)`` is evaluated every ``eval_every`` steps.
        ``time_budget`` (seconds) stops early when the wall time runs out.
        With ``config.weight_average`` = β > 0 the weights are averaged over the run
        (:mod:`zor.engine.averaging`) and fit ends with that average in place of the last
        iterate; ``validation`` scores along the way see the iterates.
        ``distributed=True``: data parallel, batch_size the global batch; ``checkpoint``,
        ``checkpoint_every``, ``resume``: an exact resume; ``sync_every``: steps between host
        read-backs; ``timeout``: of collectives (s). See :mod:`zor.engine.training`.
        """
        run = training.Run(distributed, checkpoint, checkpoint_every, resume, sync_every, timeout)
        return training.fit(self, x, y, steps, batch_size, curriculum, validation, eval_every, progress,
                            time_budget, run)

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
        checkpoint_file.save(self, path)

    @classmethod
    def load(cls, path: Union[str, os.PathLike], device: str = "auto") -> "Zor":
        """Read a checkpoint written by :meth:`save`; never unpickles."""
        ckpt = checkpoint_file.read(path, device)
        try:
            model = cls(ckpt.layers, ckpt.config, task=ckpt.task)
        except ConfigError as exc:
            raise CheckpointError(f"{ckpt.path}: invalid config in checkpoint ({exc})") from exc
        return checkpoint_file.restore(model, ckpt)

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, rule={self.config.rule!r}, optimizer={self.config.optimizer!r}"

