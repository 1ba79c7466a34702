"""The learning step of a Zor network: the rule of :mod:`zor.engine.rules` applied to every connection.

From the top connection down, with δ the error signal reaching layer i+1 (at the top:
δ = target − output) and ε̄ = mean |error| of the batch:

    δ̂       = rule.signal(δ)                        (B, n_{i+1})
    δ       ← δ̂ W_iᵀ                                 sent on down, before W_i changes
    E, G    = rule.correlate(pre, post, δ̂)           like W_i; G = O(a_i, δ̂)
    E′      = clip(E − ν R, 0, 1)                    novelty gating (R ← ρ R + (1 − ρ)|E|)
    W_i.grad = −U,  U = G ⊙ E′ · min(1, max_update_norm / ‖G ⊙ E′‖) · max(ε̄, min_error_scale)

then one optimizer step for all connections, the weight clamp |W_i| ≤ max_weight and
threshold homeostasis θ ← θ − η (target_activation − r) on every layer.

With an event (sparse) input batch the first connection's update touches only the rows
of W_0 whose units had an event (:mod:`zor.engine.events`); the result is the same as
the dense path's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from . import events, rules

if TYPE_CHECKING:
    from .network import Zor

__all__ = ["learn", "always_spikes"]


def learn(net: "Zor", traces: list[rules.Trace], delta: torch.Tensor, return_signal: bool) -> Optional[torch.Tensor]:
    """One learning step of ``net`` from the error ``delta`` (B, n_L) of the pass in ``traces``.

    Returns the signal that reached the input layer (B, n_0) when ``return_signal``.
    """
    cfg = net.config
    scale = max(float(delta.abs().mean()), cfg.min_error_scale) if cfg.error_scaling else 1.0

    top = len(net.weights) - 1
    for i in reversed(range(len(net.weights))):
        w, conn = net.weights[i], net.connections[i]
        d = net.rule.signal(delta, traces[i + 1], i == top)             # δ̂ (B, n_{i+1})
        if i > 0 or return_signal:
            delta = conn.backward(d, w)                                 # (B, n_i), before W_i changes
        _set_update(net, i, traces[i], traces[i + 1], d, scale)
    net.optimizer.step()
    net.optimizer.zero_grad(set_to_none=True)
    for layer, w in zip(net.layers, net.weights):
        if layer.max_weight is not None:
            w.clamp_(-layer.max_weight, layer.max_weight)
    for i, layer in enumerate(net.layers):
        rules.homeostasis(net.threshold(i), net.rate(i), layer.target_activation,
                          net._eta[i], layer.threshold_range)
    return delta if return_signal else None


def _set_update(net: "Zor", i: int, pre: rules.Trace, post: rules.Trace, d: torch.Tensor, scale: float) -> None:
    """W_i.grad = −U for connection i, from its pre and post traces and the signal δ̂ ``d``."""
    layer, w, conn = net.layers[i], net.weights[i], net.connections[i]
    units = None
    if pre.a.is_sparse:             # event input: only the rows of the active units (zor.engine.events)
        units, (c0, s0, a0) = events.compact(pre.c, pre.s, pre.a)
        pre = rules.Trace(c=c0, s=s0, a=a0)                          # (B, n_u)
    if always_spikes(net, i + 1):   # θ = −inf: s_{i+1} ≡ 1, O(a_i, s_{i+1}) is a column
        post = rules.Trace(c=post.c, s=post.s, a=post.a, always=True)
    e, g = net.rule.correlate(pre, post, d, conn)                   # E, O(a_i, δ̂): like W_i (rows: units)
    if layer.novelty_factor != 0.0:
        trace = net.novelty_trace(i)
        if units is None:
            e, r = rules.novelty(e, trace, layer.novelty_factor, layer.novelty_momentum)
            trace.copy_(r)
        else:                       # rows without events: E = 0, so R ← ρ R there
            e, r = rules.novelty(e, trace[units], layer.novelty_factor, layer.novelty_momentum)
            trace.mul_(layer.novelty_momentum).index_copy_(0, units, r)
    else:
        e = e.clamp_(0.0, 1.0)                                       # E′ = clip(E, 0, 1), in place
    # grad = −U: U = G ⊙ E′ (a fresh, contiguous tensor), norm-clipped and
    # error-level scaled in one multiply
    u = rules.clip_norm(g * e, layer.max_update_norm, -scale)
    w.grad = u if units is None else _row_grad(net, i, w).index_copy_(0, units, u)


def _row_grad(net: "Zor", i: int, w: torch.Tensor) -> torch.Tensor:
    """A zeroed gradient buffer for W_i, reused between event-input steps (no fresh 4-byte·|W_i|
    allocation, and with it no page faults, per step)."""
    buf = net._grad_buffers.get(i)
    if buf is None or buf.shape != w.shape or buf.device != w.device:
        buf = net._grad_buffers[i] = torch.empty_like(w)
    return buf.zero_()


def always_spikes(net: "Zor", i: int) -> bool:
    """Whether every unit of layer i spikes on every input (all θ_i = −inf, e.g. the output)."""
    return bool(torch.isneginf(net.threshold(i)).all())
