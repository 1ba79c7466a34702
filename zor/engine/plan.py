"""The planned training step: ``train_batch`` of a common network with the general path's per-step Python
work done once per network and batch size.

The general path (:meth:`Zor._forward_train`, :func:`zor.engine.learning.learn`) rebuilds on every
step what does not change between steps: the list of weights, a trace object per layer, the buffers'
views, the lookups of thresholds and rates, the fused optimizer's arguments. At the sizes the engine
is for (784-256-10 at batch 48: under 1 ms a step) that Python work costs as much as a weight product,
and more than its warm cost: it runs after the AdamW pass over W_0 has evicted the interpreter's data
(docs/notes/step-cost.md). A plan keeps it and runs

    c_i = h_i;  s_i = [c_i > θ_i] (s ≡ 1 where every θ_i = −inf);  a_i = f_i(c_i ⊙ s_i);  h_{i+1} = a_i W_i
    r_i ← r_i + (1 − m_i)(mean_b s_i − r_i)                      (mean_b s_i = 1 where s ≡ 1)
    δ = target − f_L(c_L)

then, for the ``post_spikes`` and ``gated`` rules (the default) with a fused Adam/AdamW on a CPU, the
learning step as one loop (:meth:`StepPlan._learn`: threshold homeostasis first, which reads nothing
the rule changes, then per connection from the top δ̂, δ̂ W_iᵀ, U = G ⊙ clip(E, 0, 1) on the post units
that spiked, the norm clip and error scale, W_i's AdamW step and clamp), and for any other rule or
optimizer ``learning.learn`` with the plan's buffer views. Both run the general path's tensor
operations in the same order, so the results are the same (bit-identical: tests/test_engine_plan.py).
Which steps (:func:`for_step`): one process (not distributed), a dense input batch, and every layer
dense and stateless without novelty gating (read on every step: a layer's settings may change between
steps); the optimizer's arguments are looked up again whenever a value of its group changed. Anything
else takes the general path.

Example:
    >>> import torch
    >>> from zor import Zor, Layer
    >>> net = Zor([Layer(4), Layer(3), Layer(4)], seed=0, device="cpu")
    >>> x = torch.rand(8, 4)
    >>> for_step(net, x) is not None
    True
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F
from torch.optim import optimizer as torch_optimizer

from . import buffers, learning, rules

if TYPE_CHECKING:
    from .network import Zor

__all__ = ["StepPlan", "for_step"]


class StepPlan:
    """What every training step of ``net`` at batch size B reads: per layer (layer, θ_i, r_i, f_i, its trace
    refilled each step, a (B, n_i) broadcast of 1, buffers for s_i and c_i ⊙ s_i: a step's traces live until
    the next step), the weights, and the learning step's buffer views."""

    def __init__(self, net: "Zor", x: torch.Tensor) -> None:
        b, weights, self.held = x.shape[0], list(net.weights), net.weights   # held: the WeightList itself
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
        self.cpu, self.memo = x.device.type == "cpu", None     # memo: (optimizer, state, group values, #params, fused)
        # the masked co-activity (learning._active_columns): a rule whose E vanishes on a silent post unit, on a
        # CPU, where at most MASKED_BELOW of the post units spiked (2K ≤ n_{i+1}: E and G fit the scratch)
        self.flat = type(net.rule) in (rules.PostSpikesRule, rules.GatedRule) and self.cpu
        self.gated = type(net.rule) is rules.GatedRule
        self.masked_limit = [min(learning.MASKED_BELOW, 0.5) * layer.size for layer in net.layers[1:]]
        self.views = (buffers.flat(net, "work", (b, net.layers[-1].size), x),
                      [buffers.flat(net, "grad", w.shape, w) for w in weights],
                      [buffers.flat(net, "work", w.shape, w) for w in weights])

    def step(self, net: "Zor", x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """One training step on the checked batch x (B, n_0) toward ``target`` (B, n_L); returns the error."""
        h, last, known = x, self.last, net._always
        for i, (layer, theta, rate, act, t, one, s_buf, g_buf) in enumerate(self.layers):
            hit = known.get(i)              # every θ_i = −inf: every unit spikes (learning.always_spikes' cache)
            always = hit[1] if hit is not None and hit[0] == learning._key(theta) else learning.always_spikes(net, i)
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
        fused = self._fused(net.optimizer)                            # None: the general learning step
        if fused is None or not self.flat:
            learning.learn(net, self.traces, errors, False, self.views)
        else:                       # θ is read by no part of the learning step: homeostasis first, while warm
            self._homeostasis(net)
            self._learn(net, errors, fused)
        return errors

    def _fused(self, opt: torch.optim.Optimizer) -> Optional[tuple]:
        """learning._fused_plan(opt, weights), kept while the optimizer, its state dict and its one group's
        values are the same objects (a scheduler's new lr is a new object: looked up again) and no step hook is
        registered."""
        memo = self.memo
        if memo is not None and memo[0] is opt and memo[1] is opt.state and len(opt.param_groups) == 1:
            g = opt.param_groups[0]
            if len(g) == len(memo[2]) and all(map(operator.is_, g.values(), memo[2])) \
                    and len(g["params"]) == memo[3] and not (
                        opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks
                        or torch_optimizer._global_optimizer_pre_hooks or torch_optimizer._global_optimizer_post_hooks):
                return memo[4]
        fused = learning._fused_plan(opt, self.weights)
        self.memo = None if fused is None else \
            (opt, opt.state, tuple(opt.param_groups[0].values()), len(opt.param_groups[0]["params"]), fused)
        return fused

    def _learn(self, net: "Zor", delta: torch.Tensor, fused: tuple) -> None:
        """learning.learn of a ``post_spikes``/``gated`` rule with a fused Adam/AdamW on a CPU, as one loop: the
        same operations in the same order (the rule's signal and direction, learning._update, _active_columns and
        _adam_step written out; homeostasis ran before); what does not change between steps is the plan's."""
        cfg, traces, weights = net.config, self.traces, self.weights
        kernel, kwargs, (m, v, steps) = fused
        # −ε̄ = −max(mean |error|, floor), a 0-d tensor (no read-back)
        scale = torch.abs(delta, out=self.views[0]).mean().clamp_min_(cfg.min_error_scale).neg_() \
            if cfg.error_scaling else -1.0
        torch._foreach_add_(steps, 1)                                 # every W_i's step count, once
        flush = self.cpu and learning._TINY * learning._ONE != 0.0    # denormals flushed for each Adam step
        top, grads, works, gated = self.last - 1, self.views[1], self.views[2], self.gated
        try:
            for i in range(top, -1, -1):
                w, pre, post, layer = weights[i], traces[i], traces[i + 1], net.layers[i]
                d = delta if i == top or not gated else delta * post.s  # δ̂ (B, n_{i+1}) (GatedRule.signal)
                if i > 0:
                    delta = F.linear(d, w)                            # δ̂ W_iᵀ (B, n_i), before W_i changes
                a, inv_b = pre.a, 1.0 / d.shape[0]
                if post.always:             # E′ = clip(mean_b a_i, 0, 1) per pre unit (PostSpikesRule.direction)
                    rows = a.mean(dim=0).clamp_(0.0, 1.0)
                    u = torch.mm((a * rows.mul_(inv_b)).T, d, out=grads[i])                  # (n_i, n_{i+1})
                    u = rules.clip_norm(u, layer.max_update_norm, scale)
                else:
                    cols = torch.nonzero(post.mean)                   # (K, 1) post units that spiked
                    n, k = w.shape[0], cols.shape[0]
                    if k > self.masked_limit[i]:                      # U = G ⊙ clip(E, 0, 1) (Rule.direction)
                        e = torch.addmm(works[i], a.t(), post.s, beta=0.0, alpha=inv_b, out=works[i])
                        u = torch.addmm(grads[i], a.t(), d, beta=0.0, alpha=inv_b, out=grads[i])
                        u = rules.clip_norm(u.mul_(e.clamp_(0.0, 1.0)), layer.max_update_norm, scale)
                    else:                   # on the K columns, clipped there, scattered (learning._update)
                        u = buffers.masked(net, i, w, post.mean)
                        if k:
                            cols, flat = cols.squeeze(1), works[i].view(-1)
                            g_k, e_k = flat[:n * k].view(n, k), flat[n * k:2 * n * k].view(n, k)
                            e_k = torch.addmm(e_k, a.t(), post.s.index_select(1, cols), beta=0.0, alpha=inv_b, out=e_k)
                            g_k = torch.addmm(g_k, a.t(), d.index_select(1, cols), beta=0.0, alpha=inv_b, out=g_k)
                            u.scatter_(1, cols.expand(n, k),
                                       rules.clip_norm(g_k.mul_(e_k.clamp_(0.0, 1.0)), layer.max_update_norm, scale))
                if flush:
                    torch.set_flush_denormal(True)
                kernel([w], [u], [m[i]], [v[i]], [], [steps[i]], **kwargs)
                if flush:
                    torch.set_flush_denormal(False)
                if layer.max_weight is not None:
                    w.clamp_(-layer.max_weight, layer.max_weight)
        finally:
            if flush:
                torch.set_flush_denormal(False)

    def _homeostasis(self, net: "Zor") -> None:
        """θ_i ← θ_i − η_i (target_i − r_i) where it can move θ (learning._homeostasis), the always-spiking
        cache kept valid: this step's forward pass read it for every layer."""
        for i, (layer, theta, rate, *_, ) in enumerate(self.layers):
            eta, bounds = net._eta[i], layer.threshold_range
            if eta == 0.0 and bounds is None:
                continue
            rules.homeostasis(theta, rate, layer.target_activation, eta, bounds)
            net._always[i] = (learning._key(theta), self.traces[i].always and (bounds is None or bounds[0] is None))


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
    if plan is None or plan.key != (x.shape[0], x.device, x.dtype) or net._modules["weights"] is not plan.held \
            or plan.held._parameters.get("0") is not plan.weights[0] or plan.theta is not net.threshold(0):
        plan = net._plan = StepPlan(net, x)
    return plan
