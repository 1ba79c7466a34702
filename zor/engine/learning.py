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

Fewer passes, the same step (docs/notes/step-cost.md): without novelty gating the rule
forms U in one product where it can (``Rule.direction``: E′ folded into the small side
where every post unit spikes; on a CPU, E and G on the post units that spiked at all
when at most 40 % did, U = 0 elsewhere); every U is clipped and scaled at once
(``rules.clip_norms``) and every firing rate moved at once (foreach ops); the optimizer
step runs with denormals flushed to zero on a CPU (decaying Adam moments otherwise
slow it ~10× in long runs).

No host read-backs on a GPU: ε̄ stays a 0-d device tensor, and whether a layer always
spikes (all θ = −inf) is cached and re-read only when its thresholds were changed by
something other than homeostasis (which keeps −inf at −inf); the masked co-activity,
which counts the active units on the host, runs on the CPU only. Under
``distributed=True`` the batch statistics are summed over the ranks first
(:mod:`zor.engine.distributed`).
"""

from __future__ import annotations

import math
import weakref
from typing import TYPE_CHECKING, Optional, Union

import torch
from torch.optim import optimizer as torch_optimizer

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
        if net.reducer.sharded:     # the ranks exchange activations, each updates its rows (zor.engine.sharded)
            return net.reducer.learn(net, traces, delta, return_signal)
        return _learn_distributed(net, traces, delta, return_signal)
    cfg, rule, weights = net.config, net.rule, list(net.weights)
    # ε̄ = max(mean |error|, floor) as a 0-d tensor: no read-back to the host
    scale: Scale = delta.abs().mean().clamp_min(cfg.min_error_scale) if cfg.error_scaling else 1.0
    top = len(weights) - 1
    dense: list[int] = []                                               # connections whose U awaits its clip
    for i in range(top, -1, -1):
        w, conn = weights[i], net.connections[i]
        d = rule.signal(delta, traces[i + 1], i == top)                 # δ̂ (B, n_{i+1})
        if i > 0 or return_signal:
            delta = conn.backward(d, w)                                 # (B, n_i), before W_i changes
        if _direction(net, i, w, traces[i], traces[i + 1], d, scale):
            dense.append(i)
    _clip_all(net, weights, dense, scale)
    _finish(net, weights)
    return delta if return_signal else None


def _direction(net: "Zor", i: int, w: torch.Tensor, pre: rules.Trace, post: rules.Trace, d: torch.Tensor,
               scale: Scale) -> bool:
    """U_i = G ⊙ E′ into W_i's gradient buffer, not yet clipped or scaled (True); an event input's update is
    finished here, rows scattered into W_i.grad (False). The rule forms U in one product where it can."""
    layer = net.layers[i]
    if layer.novelty_factor == 0.0 and not pre.a.is_sparse:
        if always_spikes(net, i + 1):
            post = rules.Trace(c=post.c, s=post.s, a=post.a, always=True)
        if net.rule.direction(pre, post, d, net.connections[i], _grad_buffer(net, i, w)) is not None:
            return True
    e, g, units = _correlate(net, i, pre, post, d)
    if units is not None:
        _set_update(net, i, e, g, units, scale)
        return False
    _gated_update(net, i, w, e, g, None)
    return True


def _clip_all(net: "Zor", weights: list[torch.Tensor], dense: list[int], scale: Scale) -> None:
    """U_i ← −ε̄ · U_i · min(1, max_update_norm_i / ‖U_i‖) for every connection in ``dense`` at once
    (rules.clip_norms: foreach ops), then W_i.grad = U_i."""
    if not dense:
        return
    us = [net._grad_buffers[i] for i in dense]
    bounds = {math.inf if net.layers[i].max_update_norm is None else net.layers[i].max_update_norm for i in dense}
    if len(bounds) == 1:            # one bound for all (the usual case): a plain number
        max_norms: Union[float, torch.Tensor] = bounds.pop()
    else:
        max_norms = torch.tensor([math.inf if net.layers[i].max_update_norm is None else net.layers[i].max_update_norm
                                  for i in dense], dtype=us[0].dtype, device=us[0].device)
    rules.clip_norms(us, max_norms, -scale)
    for i, u in zip(dense, us):
        weights[i].grad = u


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
    # momentum -> (r_i, mean_b s_i; r_i of the layers that always spike, whose mean is exactly 1)
    rates: dict[float, tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]] = {}
    for i, (layer, t) in enumerate(zip(net.layers, traces)):
        if sums is None and layer.kind == "dense" and not t.s.is_sparse and always_spikes(net, i):
            rates.setdefault(layer.rate_momentum, ([], [], []))[2].append(net.rate(i))
            continue
        s_units = t.s if layer.kind == "dense" else t.s.reshape(t.s.shape[0] * layer.channels, -1)
        if layer.kind == "conv":   # per channel: (B·C, H·W) → mean over positions, back to (B, C)
            s_units = s_units.mean(dim=1).reshape(t.s.shape[0], layer.channels)
        if sums is None:
            group = rates.setdefault(layer.rate_momentum, ([], [], []))
            group[0].append(net.rate(i))
            group[1].append(events.batch_mean(s_units))                # (n_i,)
        else:
            sums.append(s_units.sum(dim=0))                             # Σ_b s_i (n_i,)
    for m, (r, mean, ones) in rates.items():  # rules.update_rate on every layer at once: r ← m r + (1 − m) mean
        torch._foreach_mul_(r + ones, m)
        if r:
            torch._foreach_add_(r, mean, alpha=1.0 - m)
        if ones:
            torch._foreach_add_(ones, 1.0 - m)
    if sums is not None or net._spike_sums is not None:   # (an nn.Module attribute write costs µs)
        net._spike_sums = sums


def _finish(net: "Zor", weights: Optional[list[torch.Tensor]] = None) -> None:
    """One optimizer step for all connections, the weight clamp, then threshold homeostasis (skipped on the
    layers where it cannot move θ: η = 0 and no bounds).

    On a CPU the optimizer step runs with denormals flushed to zero (torch.set_flush_denormal, on the
    calling thread; the earlier setting is restored after): an Adam moment below 1.2e-38 becomes 0."""
    weights = list(net.weights) if weights is None else weights
    # CPU: denormal floats flushed to zero for the optimizer step (restored after): moments that decay
    # through the denormal range made the Adam kernel 10x slower after ~700 steps (docs/notes/step-cost.md)
    flush = weights[0].device.type == "cpu" and _TINY * _ONE != 0.0 and torch.set_flush_denormal(True)
    try:
        if not _fused_adam_step(net.optimizer):
            net.optimizer.step()
            net.optimizer.zero_grad(set_to_none=True)
    finally:
        if flush:
            torch.set_flush_denormal(False)
    for layer, w in zip(net.layers, weights):
        if layer.max_weight is not None:
            w.clamp_(-layer.max_weight, layer.max_weight)
    for i, layer in enumerate(net.layers):
        if net._eta[i] == 0.0 and layer.threshold_range is None:
            continue
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
    parameter without a gradient or state yet (the first step). The moment and step tensors are
    gathered once per optimizer state (:data:`_FUSED`), not on every step."""
    if type(opt) not in (torch.optim.Adam, torch.optim.AdamW) or len(opt.param_groups) != 1:
        return False
    g = opt.param_groups[0]
    if not g.get("fused") or g["amsgrad"] or g["maximize"] or g.get("capturable") or g.get("differentiable") \
            or isinstance(g["lr"], torch.Tensor) or opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks \
            or torch_optimizer._global_optimizer_pre_hooks or torch_optimizer._global_optimizer_post_hooks:
        return False
    params = g["params"]
    grads = [p.grad for p in params]
    if any(gr is None for gr in grads):
        return False
    plan = _FUSED.get(opt)
    if plan is None or plan[0] is not opt.state or plan[1] is not params or len(opt.state) != len(params):
        state = [opt.state.get(p) for p in params]
        if any(not st for st in state):
            return False
        plan = _FUSED[opt] = (opt.state, params, [st["exp_avg"] for st in state],
                              [st["exp_avg_sq"] for st in state], [st["step"] for st in state])
    torch._foreach_add_(plan[4], 1)
    kernel = torch._fused_adamw_ if type(opt) is torch.optim.AdamW or g.get("decoupled_weight_decay") \
        else torch._fused_adam_
    kernel(params, grads, plan[2], plan[3], [], plan[4], amsgrad=False, lr=g["lr"], beta1=g["betas"][0],
           beta2=g["betas"][1], weight_decay=g["weight_decay"], eps=g["eps"], maximize=False, grad_scale=None,
           found_inf=None)
    for p in params:
        p.grad = None
    return True


_TINY, _ONE = 1e-310, 1.0   # a float64 denormal; _TINY * _ONE is 0 where the CPU already flushes denormals

# optimizer -> (its state dict, its parameter list, exp_avg, exp_avg_sq and step tensors): valid while the
# optimizer keeps the same state and parameter objects (load_state_dict replaces both)
_FUSED: "weakref.WeakKeyDictionary[torch.optim.Optimizer, tuple]" = weakref.WeakKeyDictionary()


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
    """W_i.grad = −U for connection i from its co-activity E and G = O(a_i, δ̂): U = G ⊙ E′ norm-clipped
    and error-level scaled in one multiply (event input: on the active rows, then scattered)."""
    w = net.weights[i]
    u = rules.clip_norm(_gated_update(net, i, w, e, g, units), net.layers[i].max_update_norm, -scale)
    w.grad = u if units is None else _grad_buffer(net, i, w).zero_().index_copy_(0, units, u)


def _gated_update(net: "Zor", i: int, w: torch.Tensor, e: torch.Tensor, g: torch.Tensor,
                  units: Optional[torch.Tensor]) -> torch.Tensor:
    """U = G ⊙ E′ of connection i, E′ = clip(E − ν R, 0, 1) (R updated) or clip(E, 0, 1): into W_i's reused
    gradient buffer (a fresh, contiguous tensor each step would cost page faults); event input: the
    active rows ``units`` only, a fresh (n_u, n_{i+1}) tensor."""
    layer = net.layers[i]
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
    if units is None:
        return torch.mul(g, e, out=_grad_buffer(net, i, w))
    return g * e


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
