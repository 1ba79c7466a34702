"""The planned training step: ``train_batch`` of a common network with the general path's per-step Python
work done once per network and batch size.

The general path (:meth:`Zor._forward_train`, :func:`zor.engine.learning.learn`) rebuilds on every
step what does not change between steps: the list of weights, a trace object per layer, the buffers'
views, the lookups of thresholds and rates. At the sizes the engine is for (784-64-784 at batch 48:
a few hundred µs a step) that Python work costs as much as a weight product. A plan keeps it and runs

    c_i = h_i;  s_i = [c_i > θ_i] (s ≡ 1 where every θ_i = −inf);  a_i = f_i(c_i ⊙ s_i);  h_{i+1} = a_i W_i
    r_i ← r_i + (1 − m_i)(mean_b s_i − r_i)                      (mean_b s_i = 1 where s ≡ 1)
    δ = target − f_L(c_L);  learning.learn(…) with the plan's buffer views

with the same tensor operations in the same order as the general path, so the results are the same
(bit-identical: tests/test_engine_plan.py). Which steps (:func:`for_step`): one process (not
distributed), a dense input batch, and every layer dense and stateless without novelty gating
(read on every step: a layer's settings may change between steps); the learning step itself
checks its optimizer. Anything else takes the general path.

Example:
    >>> import torch
    >>> from zor import Zor, Layer
    >>> net = Zor([Layer(4), Layer(3), Layer(4)], seed=0, device="cpu")
    >>> x = torch.rand(8, 4)
    >>> for_step(net, x) is not None
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from . import buffers, learning, rules

if TYPE_CHECKING:
    from .network import Zor

__all__ = ["StepPlan", "for_step"]


class StepPlan:
    """What every training step of ``net`` at batch size B reads: per layer (layer, θ_i, r_i, f_i, its trace
    refilled each step, a (B, n_i) broadcast of 1, buffers for s_i and c_i ⊙ s_i: a step's traces live until
    the next step), the weights, and the learning step's buffer views."""

    def __init__(self, net: "Zor", x: torch.Tensor) -> None:
        b, weights = x.shape[0], list(net.weights)
        self.key, self.theta = (b, x.device, x.dtype), net.threshold(0)
        self.weights, self.last = weights, len(net.layers) - 1
        empty = x[:0]
        self.traces = [rules.Trace(c=empty, s=empty, a=empty) for _ in net.layers]
        self.layers = [(layer, net.threshold(i), net.rate(i), net._acts[i], self.traces[i],
                        buffers.ones(net, (b, layer.size), x), x.new_empty(b, layer.size), x.new_empty(b, layer.size))
                       for i, layer in enumerate(net.layers)]     # … s ≡ 1, and the buffers of s_i and c_i ⊙ s_i
        self.one = buffers.ones(net, (), x)
        largest = max([w.numel() for w in weights] + [b * net.layers[-1].size])
        buffers.flat(net, "work", (largest,), x)                     # the scratch at its final size first
        self.views = (buffers.flat(net, "work", (b, net.layers[-1].size), x),
                      [buffers.flat(net, "grad", w.shape, w) for w in weights],
                      [buffers.flat(net, "work", w.shape, w) for w in weights])

    def step(self, net: "Zor", x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """One training step on the checked batch x (B, n_0) toward ``target`` (B, n_L); returns the error."""
        h, last = x, self.last
        for i, (layer, theta, rate, act, t, one, s_buf, g_buf) in enumerate(self.layers):
            always = learning.always_spikes(net, i)                   # every θ_i = −inf: every unit spikes
            if always:
                s, a, mean = one, act(h), None                        # (B, n_i): s ≡ 1, a = f(c)
                rate.lerp_(self.one, 1.0 - layer.rate_momentum)
            else:
                s = torch.gt(h, theta, out=s_buf)                     # (B, n_i) 0./1. (neuron.fire)
                a = act(torch.mul(h, s, out=g_buf))                   # (B, n_i) f(c ⊙ s) (neuron.gate)
                mean = s.mean(dim=0)                                  # (n_i,) (learning.update_rates)
                rate.lerp_(mean, 1.0 - layer.rate_momentum)
            t.c, t.s, t.a, t.always, t.mean = h, s, a, always, mean
            if i < last:
                h = a @ self.weights[i]                               # (B, n_{i+1}) (Dense.forward)
        errors = target - (a if always else act(h))                   # target − f_L(c_L)
        learning.learn(net, self.traces, errors, False, self.views)
        return errors


def for_step(net: "Zor", x: torch.Tensor) -> Optional[StepPlan]:
    """The plan for a training step of ``net`` on the checked batch ``x``, kept in ``net._plan`` while the batch
    size, device and dtype, the weights and thresholds stay the same objects; None where the step must take
    the general path (see the module docstring)."""
    if net.reducer.active or x.is_sparse:
        return None
    for layer in net.layers:
        if layer.kind != "dense" or layer.decay != 0.0 or layer.novelty_factor != 0.0:
            return None
    plan = net._plan
    if plan is None or plan.key != (x.shape[0], x.device, x.dtype) or plan.weights[0] is not net.weights[0] \
            or plan.theta is not net.threshold(0):
        plan = net._plan = StepPlan(net, x)
    return plan
