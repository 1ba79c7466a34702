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

No host read-backs: ε̄ stays a 0-d device tensor, and whether a layer always spikes
(all θ = −inf) is cached and re-read only when its thresholds were changed by
something other than homeostasis (which keeps −inf at −inf). Under
``distributed=True`` the batch statistics are summed over the ranks first
(:mod:`zor.engine.distributed`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Union

import torch

from . import events, rules

if TYPE_CHECKING:
    from .network import Zor

__all__ = ["learn", "always_spikes", "update_rates"]

Scale = Union[torch.Tensor, float]


def learn(net: "Zor", traces: list[rules.Trace], delta: torch.Tensor, return_signal: bool) -> Optional[torch.Tensor]:
    """One learning step of ``net`` from the error ``delta`` (B, n_L) of the pass in ``traces``.

    Returns the signal that reached the input layer (B, n_0) when ``return_signal``.
    """
    if net.reducer.active:
        return _learn_distributed(net, traces, delta, return_signal)
    cfg = net.config
    # ε̄ = max(mean |error|, floor) as a 0-d tensor: no read-back to the host
    scale: Scale = delta.abs().mean().clamp_min(cfg.min_error_scale) if cfg.error_scaling else 1.0
    top = len(net.weights) - 1
    for i in reversed(range(len(net.weights))):
        w, conn = net.weights[i], net.connections[i]
        d = net.rule.signal(delta, traces[i + 1], i == top)             # δ̂ (B, n_{i+1})
        if i > 0 or return_signal:
            delta = conn.backward(d, w)                                 # (B, n_i), before W_i changes
        e, g, units = _correlate(net, i, traces[i], traces[i + 1], d)
        _set_update(net, i, e, g, units, scale)
    _finish(net)
    return delta if return_signal else None


def _learn_distributed(net: "Zor", traces: list[rules.Trace], delta: torch.Tensor,
                       return_signal: bool) -> Optional[torch.Tensor]:
    """learn() with the batch statistics summed over the ranks (zor.engine.distributed): local sums,
    one flattened all-reduce, then the same update as one process on the global batch."""
    red, cfg, rule = net.reducer, net.config, net.rule
    b_local, top = delta.shape[0], len(net.weights) - 1
    err = delta.abs().sum().reshape(1)                                  # Σ|error| of this shard
    local = []
    for i in reversed(range(len(net.weights))):
        d = rule.signal(delta, traces[i + 1], i == top, red)            # δ̂ (B_r, n_{i+1})
        if i > 0 or return_signal:
            delta = net.connections[i].backward(d, net.weights[i])      # (B_r, n_i)
        e, g, _ = _correlate(net, i, traces[i], traces[i + 1], d)
        e_sum = e if rule.e_sum else e * b_local                        # Σ_b pre × post (normalized: E is a sum)
        local.append((i, e_sum, g * b_local))                           # Σ_b a_iᵀ δ̂
    spikes = net._spike_sums or []                                      # Σ_b s_i per layer, from the forward pass
    net._spike_sums = None
    count = torch.full((1,), float(b_local), device=delta.device)
    flat = [count, err] + spikes + [t for _, e, g in local for t in (e, g)]
    summed = red.sum_all(flat)
    b = summed[0]                                                       # global B, (1,)
    n_out = net.layers[-1].size
    scale: Scale = (summed[1] / (b * n_out)).clamp_min(cfg.min_error_scale).reshape(()) if cfg.error_scaling else 1.0
    for j, layer in enumerate(net.layers[:len(spikes)]):
        net.rate(j).mul_(layer.rate_momentum).add_(summed[2 + j] / b, alpha=1.0 - layer.rate_momentum)
    rest = summed[2 + len(spikes):]
    for k, (i, _, _) in enumerate(local):
        e = rest[2 * k] if rule.e_sum else rest[2 * k] / b
        _set_update(net, i, e, rest[2 * k + 1] / b, None, scale)
    _finish(net)
    return delta if return_signal else None


def update_rates(net: "Zor", traces: list[rules.Trace]) -> None:
    """r_i ← m r_i + (1 − m) mean_b(s_i) after a training forward pass (a Conv layer: per channel, its
    spikes averaged over positions). Distributed: keeps Σ_b s_i for learn(), which sums it over the ranks."""
    sums: Optional[list[torch.Tensor]] = [] if net.reducer.active else None
    for i, (layer, t) in enumerate(zip(net.layers, traces)):
        s_units = t.s if layer.kind == "dense" else t.s.reshape(t.s.shape[0] * layer.channels, -1)
        if layer.kind == "conv":   # per channel: (B·C, H·W) → mean over positions, back to (B, C)
            s_units = s_units.mean(dim=1).reshape(t.s.shape[0], layer.channels)
        if sums is None:
            rules.update_rate(net.rate(i), s_units, layer.rate_momentum)
        else:
            sums.append(s_units.sum(dim=0))                             # Σ_b s_i (n_i,)
    net._spike_sums = sums


def _finish(net: "Zor") -> None:
    """One optimizer step for all connections, the weight clamp, then threshold homeostasis."""
    if not _fused_adam_step(net.optimizer):
        net.optimizer.step()
        net.optimizer.zero_grad(set_to_none=True)
    for layer, w in zip(net.layers, net.weights):
        if layer.max_weight is not None:
            w.clamp_(-layer.max_weight, layer.max_weight)
    for i, layer in enumerate(net.layers):
        theta = net.threshold(i)
        known = _cached(net, i)
        rules.homeostasis(theta, net.rate(i), layer.target_activation, net._eta[i], layer.threshold_range)
        if known is not None:   # −inf stays −inf under θ − η(…); a finite lower bound lifts it
            bounds = layer.threshold_range
            net._always[i] = (_key(theta), known and (bounds is None or bounds[0] is None))


def _fused_adam_step(opt: torch.optim.Optimizer) -> bool:
    """The step of a fused Adam/AdamW straight through its kernel, then grad = None: the same kernel and
    arguments Optimizer.step would use, without its per-call Python work (hooks, grouping; ~150 µs a
    step at 784-64-784 on one thread). False (nothing done) where that would not be the same step:
    another optimizer, several groups, amsgrad/maximize/capturable, a tensor lr, any step hook, or a
    parameter without a gradient or state yet (the first step)."""
    from torch.optim import optimizer as torch_optimizer

    if type(opt) not in (torch.optim.Adam, torch.optim.AdamW) or len(opt.param_groups) != 1:
        return False
    g = opt.param_groups[0]
    if not g.get("fused") or g["amsgrad"] or g["maximize"] or g.get("capturable") or g.get("differentiable") \
            or isinstance(g["lr"], torch.Tensor) or opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks \
            or torch_optimizer._global_optimizer_pre_hooks or torch_optimizer._global_optimizer_post_hooks:
        return False
    params = g["params"]
    state = [opt.state.get(p) for p in params]
    if any(p.grad is None for p in params) or any(not st for st in state):
        return False
    steps = [st["step"] for st in state]
    torch._foreach_add_(steps, 1)
    kernel = torch._fused_adamw_ if type(opt) is torch.optim.AdamW or g.get("decoupled_weight_decay") \
        else torch._fused_adam_
    kernel(params, [p.grad for p in params], [st["exp_avg"] for st in state], [st["exp_avg_sq"] for st in state],
           [], steps, amsgrad=False, lr=g["lr"], beta1=g["betas"][0], beta2=g["betas"][1],
           weight_decay=g["weight_decay"], eps=g["eps"], maximize=False, grad_scale=None, found_inf=None)
    for p in params:
        p.grad = None
    return True


def _correlate(net: "Zor", i: int, pre: rules.Trace, post: rules.Trace, d: torch.Tensor):
    """(E, G, units) of connection i: E the co-activity, G = O(a_i, δ̂), both like W_i (event input: like
    the rows ``units`` of W_i; units None otherwise)."""
    units = None
    if pre.a.is_sparse:             # event input: only the rows of the active units (zor.engine.events)
        units, (c0, s0, a0) = events.compact(pre.c, pre.s, pre.a)
        pre = rules.Trace(c=c0, s=s0, a=a0)                          # (B, n_u)
    if always_spikes(net, i + 1):   # θ = −inf: s_{i+1} ≡ 1, O(a_i, s_{i+1}) is a column
        post = rules.Trace(c=post.c, s=post.s, a=post.a, always=True)
    e, g = net.rule.correlate(pre, post, d, net.connections[i])
    return e, g, units


def _set_update(net: "Zor", i: int, e: torch.Tensor, g: torch.Tensor, units: Optional[torch.Tensor],
                scale: Scale) -> None:
    """W_i.grad = −U for connection i from its co-activity E and G = O(a_i, δ̂)."""
    layer, w = net.layers[i], net.weights[i]
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
    if units is None:               # into W_i's reused gradient buffer (no per-step allocation)
        w.grad = rules.clip_norm(torch.mul(g, e, out=_grad_buffer(net, i, w)), layer.max_update_norm, -scale)
    else:
        u = rules.clip_norm(g * e, layer.max_update_norm, -scale)
        w.grad = _grad_buffer(net, i, w).zero_().index_copy_(0, units, u)


def _grad_buffer(net: "Zor", i: int, w: torch.Tensor) -> torch.Tensor:
    """The gradient buffer of W_i, reused between steps (no fresh 4-byte·|W_i| allocation, and with it no
    page faults, per step); the optimizer step sets grad back to None, the buffer stays."""
    buf = net._grad_buffers.get(i)
    if buf is None or buf.shape != w.shape or buf.device != w.device or buf.dtype != w.dtype:
        buf = net._grad_buffers[i] = torch.empty_like(w)
    return buf


def _key(t: torch.Tensor) -> tuple:
    """Identifies one state of a tensor: which storage, and how often it was changed in place."""
    return id(t), t.data_ptr(), t._version


def _cached(net: "Zor", i: int) -> Optional[bool]:
    hit = net._always.get(i)
    return hit[1] if hit is not None and hit[0] == _key(net.threshold(i)) else None


def always_spikes(net: "Zor", i: int) -> bool:
    """Whether every unit of layer i spikes on every input (all θ_i = −inf, e.g. the output).

    Read back from the device only when θ_i changed since the last look other than by homeostasis."""
    known = _cached(net, i)
    if known is None:
        theta = net.threshold(i)
        known = bool(torch.isneginf(theta).all())
        net._always[i] = (_key(theta), known)
    return known
