"""The learning step of a Zor network: the rule of :mod:`zor.engine.rules` applied to every connection.

From the top connection down, with δ the error signal reaching layer i+1 (at the top:
δ = target − output) and ε̄ = mean |error| of the batch:

    δ̂       = rule.signal(δ)                        (B, n_{i+1})
    δ       ← δ̂ W_iᵀ                                 sent on down, before W_i changes
    E, G    = rule.correlate(pre, post, δ̂)           like W_i; G = O(a_i, δ̂)
    E′      = clip(E − ν R, 0, 1)                    novelty gating (R ← ρ R + (1 − ρ)|E|)
    W_i.grad = −U,  U = G ⊙ E′ · min(1, max_update_norm / ‖G ⊙ E′‖) · max(ε̄, min_error_scale)

then the optimizer step, the weight clamp |W_i| ≤ max_weight and threshold homeostasis
θ ← θ − η (target_activation − r) on every layer. Each connection's optimizer step only
reads its own W_i and U_i, so with a fused Adam/AdamW (the default) W_i steps as soon as
U_i is formed, and one gradient buffer serves every connection in turn; any other
optimizer takes one step for all connections after the loop.

With an event (sparse) input batch the first connection's update touches only the rows
of W_0 whose units had an event (:mod:`zor.engine.events`); the result is the same as
the dense path's.

Fewer passes and a small working set, the same step (docs/notes/step-cost.md): without
novelty gating the rule forms U with G straight in the gradient buffer and E in one
scratch the size of a weight (``Rule.direction``; E′ folded into the small side where
every post unit spikes); on a CPU, E and G only on the post units that spiked at all when
at most 40 % did, clipped there and scattered into W_i's own buffer that holds 0 elsewhere
(:func:`_active_columns`); each U is clipped as it is formed (rules.clip_norm); the
buffers are kept by the network (:mod:`zor.engine.buffers`); firing rates move by one lerp
each; the optimizer step runs with denormals flushed to zero on a CPU (decaying Adam
moments otherwise slow it ~10× in long runs). ``train_batch`` of a common network runs
this through a plan kept per batch size (:mod:`zor.engine.plan`).

No host read-backs on a GPU: ε̄ stays a 0-d device tensor, and whether a layer always
spikes (all θ = −inf) is cached and re-read only when its thresholds were changed by
something other than homeostasis (which keeps −inf at −inf); the masked co-activity,
which reads the active units on the host, runs on the CPU only. Under
``distributed=True`` the batch statistics are summed over the ranks first
(:mod:`zor.engine.distributed`).
"""

from __future__ import annotations

import operator
import weakref
from typing import TYPE_CHECKING, Optional, Union

import torch
from torch.optim import optimizer as torch_optimizer

from . import buffers, events, rules

if TYPE_CHECKING:
    from .network import Zor

__all__ = ["learn", "always_spikes", "update_rates", "fused_kernel", "MASKED_BELOW"]

Scale = Union[torch.Tensor, float]

MASKED_BELOW = 0.4   # masked co-activity when at most this share of the post units spiked (docs/notes/step-cost.md)


def learn(net: "Zor", traces: list[rules.Trace], delta: torch.Tensor, return_signal: bool,
          views: Optional[tuple] = None) -> Optional[torch.Tensor]:
    """One learning step of ``net`` from the error ``delta`` (B, n_L) of the pass in ``traces``.

    Returns the signal that reached the input layer (B, n_0) when ``return_signal``. ``views``: (|δ| buffer,
    per connection the shared gradient and scratch views) kept by a step plan (:mod:`zor.engine.plan`);
    None: looked up (:mod:`zor.engine.buffers`).
    """
    if net.reducer.active:
        if net.reducer.sharded:     # the ranks exchange activations, each updates its rows (zor.engine.sharded)
            return net.reducer.learn(net, traces, delta, return_signal)
        return _learn_distributed(net, traces, delta, return_signal)
    cfg, rule, weights = net.config, net.rule, list(net.weights)
    absolute = buffers.flat(net, "work", delta.shape, delta) if views is None else views[0]
    # −ε̄ = −max(mean |error|, floor) as a 0-d tensor: no read-back to the host (|δ| into the shared scratch)
    scale: Scale = torch.abs(delta, out=absolute).mean().clamp_min_(cfg.min_error_scale).neg_() \
        if cfg.error_scaling else -1.0
    fused = _fused_plan(net.optimizer, weights)   # None: one optimizer.step() for all after the loop
    if fused is not None:
        torch._foreach_add_(fused[2][2], 1)                             # every W_i's step count, once
    top = len(weights) - 1
    grads = list(weights)
    for i in range(top, -1, -1):
        w = weights[i]
        d = rule.signal(delta, traces[i + 1], i == top)                 # δ̂ (B, n_{i+1})
        if i > 0 or return_signal:
            delta = net.connections[i].backward(d, w)                   # (B, n_i), before W_i changes
        if fused is None:           # W_i's own buffer: every gradient waits for the optimizer step after the loop
            buf, work = buffers.grad_buffer(net, i, w), buffers.flat(net, "work", w.shape, w)
        elif views is None:         # one buffer for all: W_i steps before the next update is formed
            buf, work = buffers.flat(net, "grad", w.shape, w), buffers.flat(net, "work", w.shape, w)
        else:
            buf, work = views[1][i], views[2][i]
        grads[i] = _update(net, i, w, traces[i], traces[i + 1], d, scale, buf, work)
        if fused is not None:
            _adam_step(fused, i, w, grads[i], net.layers[i].max_weight)
    if fused is None:
        _finish(net, weights, grads)
    else:
        _homeostasis(net)
    return delta if return_signal else None


def _update(net: "Zor", i: int, w: torch.Tensor, pre: rules.Trace, post: rules.Trace, d: torch.Tensor,
            scale: Scale, buf: torch.Tensor, work: torch.Tensor) -> torch.Tensor:
    """W_i's gradient −ε̄ · U_i · min(1, max_update_norm / ‖U_i‖), U_i = G ⊙ E′ (``scale`` = −ε̄), in ``buf``
    (like W_i; ``work``: a scratch like W_i). Without novelty gating the rule forms U (``Rule.direction``), on
    the post units that spiked at all where few did (:func:`_active_columns`; then in W_i's own buffer that
    holds 0 elsewhere, :func:`zor.engine.buffers.masked`); an event input's U has the rows of its active units
    only, scattered."""
    layer = net.layers[i]
    if pre.a.is_sparse:             # event input: only the rows of the active units (zor.engine.events)
        e, g, units = _correlate(net, i, pre, post, d)
        u = rules.clip_norm(_gated_update(net, i, e, g, units, None), layer.max_update_norm, scale)
        return buf.zero_().index_copy_(0, units, u)
    if layer.novelty_factor != 0.0:
        e, g, _ = _correlate(net, i, pre, post, d)
        return rules.clip_norm(_gated_update(net, i, e, g, None, buf), layer.max_update_norm, scale)
    conn, active = net.connections[i], _active_columns(net, i, post)
    if active is None:
        return rules.clip_norm(net.rule.direction(pre, post, d, conn, buf, work), layer.max_update_norm, scale)
    cols, spiked = active
    buf = buffers.masked(net, i, w, spiked)                             # W_i's own: 0 outside the active columns
    n, k = w.shape[0], cols.shape[0]
    if k:                           # U on the K active columns, clipped there (‖U‖ is theirs), then scattered
        u = net.rule.direction_columns(pre, post, d, conn, cols, work.view(-1)[:2 * n * k])   # 2K ≤ n_{i+1}
        buf.scatter_(1, cols.expand(n, k), rules.clip_norm(u, layer.max_update_norm, scale))
    return buf


def _active_columns(net: "Zor", i: int, post: rules.Trace) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """The post units of connection i that spiked for some sample of the batch (K,) and the (n_{i+1},) vector that
    is > 0 exactly there, where U is cheaper on them alone: the rule's E vanishes on a silent post unit
    (``Rule.silent_zero``), a dense connection on a CPU, and K ≤ MASKED_BELOW · n_{i+1}; None otherwise (the
    full product). The units come from the batch's firing rate
    ``post.mean`` (mean_b s > 0 exactly where a unit spiked; kept by :func:`update_rates`), one (n,) nonzero
    read on the host, hence CPU only (a GPU would stall on it)."""
    if post.always or not net.rule.silent_zero or net.connections[i].kind != "dense" or post.s.device.type != "cpu":
        return None
    active = post.mean if post.mean is not None else post.s.amax(dim=0)     # (n_{i+1},)
    cols = torch.nonzero(active)                                            # (K, 1)
    if cols.shape[0] > min(MASKED_BELOW, 0.5) * active.shape[0]:          # (2K ≤ n_{i+1}: E and G in the scratch)
        return None
    return cols.squeeze(1), active


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
    """r_i ← m r_i + (1 − m) mean_b(s_i) after a training forward pass, as one lerp r + (1 − m)(mean − r) (a Conv
    layer: per channel, its spikes averaged over positions); a dense layer's mean_b(s_i) stays in its trace
    (``Trace.mean``: which units spiked, for the masked co-activity). A layer that always spikes has mean exactly
    1. Distributed: keeps Σ_b s_i for learn(), which sums it over the ranks."""
    sums: Optional[list[torch.Tensor]] = [] if net.reducer.active else None
    for i, (layer, t) in enumerate(zip(net.layers, traces)):
        dense = layer.kind == "dense"
        if sums is None and dense and t.always and not t.s.is_sparse:
            rate = net.rate(i)
            rate.lerp_(buffers.ones(net, (), rate), 1.0 - layer.rate_momentum)
            continue
        s_units = t.s if dense else t.s.reshape(t.s.shape[0] * layer.channels, -1)
        if not dense:              # per channel: (B·C, H·W) → mean over positions, back to (B, C)
            s_units = s_units.mean(dim=1).reshape(t.s.shape[0], layer.channels)
        if sums is None:
            mean = events.batch_mean(s_units)                           # (n_i,)
            net.rate(i).lerp_(mean, 1.0 - layer.rate_momentum)
            if dense:
                t.mean = mean
        else:
            sums.append(s_units.sum(dim=0))                             # Σ_b s_i (n_i,)
    if sums is not None or net._spike_sums is not None:   # (an nn.Module attribute write costs µs)
        net._spike_sums = sums


def _fused_plan(opt: torch.optim.Optimizer, weights: list[torch.Tensor]) -> Optional[tuple]:
    """(kernel, its keyword arguments, (exp_avg, exp_avg_sq, step) lists) of a fused Adam/AdamW over ``weights``, to
    step each W_i through the kernel Optimizer.step would call, with the same arguments, without its per-call
    Python work (hooks, grouping; ~150 µs a step at 784-64-784 on one thread). None where that would not be the
    same step: another optimizer, several groups, amsgrad/maximize/capturable, a tensor lr, any step hook,
    other parameters than ``weights``, or no state yet (the first step). The moment and step tensors are
    gathered once per optimizer state (:data:`_FUSED`), not on every step."""
    if type(opt) not in _ADAMS or len(opt.param_groups) != 1:
        return None
    g = opt.param_groups[0]
    if not g.get("fused") or g["amsgrad"] or g["maximize"] or g.get("capturable") or g.get("differentiable") \
            or isinstance(g["lr"], torch.Tensor) or opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks \
            or torch_optimizer._global_optimizer_pre_hooks or torch_optimizer._global_optimizer_post_hooks:
        return None
    params = g["params"]
    if len(weights) != len(params) or not all(map(operator.is_, params, weights)):
        return None
    plan = _FUSED.get(opt)
    if plan is None or plan[0] is not opt.state or plan[1] is not params or len(opt.state) != len(params):
        state = [opt.state.get(p) for p in params]
        if any(not st for st in state):
            return None
        plan = _FUSED[opt] = (opt.state, params, [st["exp_avg"] for st in state],
                              [st["exp_avg_sq"] for st in state], [st["step"] for st in state])
    return (*fused_kernel(opt), plan[2:])


def fused_kernel(opt: torch.optim.Optimizer) -> tuple:
    """(kernel, keyword arguments) of the fused Adam/AdamW step of ``opt``'s one parameter group: what its
    step() would call (the caller has checked that the group takes the fused path, :func:`_fused_plan`)."""
    g = opt.param_groups[0]
    kernel = torch._fused_adamw_ if type(opt) is torch.optim.AdamW or g.get("decoupled_weight_decay") \
        else torch._fused_adam_
    return kernel, dict(amsgrad=False, lr=g["lr"], beta1=g["betas"][0], beta2=g["betas"][1],
                        weight_decay=g["weight_decay"], eps=g["eps"], maximize=False, grad_scale=None,
                        found_inf=None)


def _adam_step(fused: tuple, i: int, w: torch.Tensor, grad: torch.Tensor, max_weight: Optional[float]) -> None:
    """W_i's optimizer step through the fused kernel (:func:`_fused_plan`; its step count already moved on),
    denormals flushed on a CPU, then the clamp |W_i| ≤ max_weight: what the optimizer's step for all
    connections does to W_i."""
    kernel, kwargs, (m, v, steps) = fused
    flush = w.device.type == "cpu" and _TINY * _ONE != 0.0 and torch.set_flush_denormal(True)
    try:
        kernel([w], [grad], [m[i]], [v[i]], [], [steps[i]], **kwargs)
    finally:
        if flush:
            torch.set_flush_denormal(False)
    if max_weight is not None:
        w.clamp_(-max_weight, max_weight)


def _finish(net: "Zor", weights: Optional[list[torch.Tensor]] = None,
            grads: Optional[list[torch.Tensor]] = None) -> None:
    """One optimizer step for all connections, the weight clamp, then threshold homeostasis. ``grads``: W_i's
    gradients in the order of ``weights`` (None: the gradients are set on the weights).

    On a CPU the optimizer step runs with denormals flushed to zero (torch.set_flush_denormal, on the
    calling thread; the earlier setting is restored after): an Adam moment below 1.2e-38 becomes 0."""
    weights = list(net.weights) if weights is None else weights
    # CPU: denormal floats flushed to zero for the optimizer step (restored after): moments that decay
    # through the denormal range made the Adam kernel 10x slower after ~700 steps (docs/notes/step-cost.md)
    flush = weights[0].device.type == "cpu" and _TINY * _ONE != 0.0 and torch.set_flush_denormal(True)
    try:
        if not _fused_adam_step(net.optimizer, weights, grads):
            for w, g in zip(weights, grads or ()):
                w.grad = g
            net.optimizer.step()
            net.optimizer.zero_grad(set_to_none=True)
    finally:
        if flush:
            torch.set_flush_denormal(False)
    for layer, w in zip(net.layers, weights):
        if layer.max_weight is not None:
            w.clamp_(-layer.max_weight, layer.max_weight)
    _homeostasis(net)


def _fused_adam_step(opt: torch.optim.Optimizer, weights: Optional[list[torch.Tensor]] = None,
                     grads: Optional[list[torch.Tensor]] = None) -> bool:
    """The step of every weight (None: the optimizer's parameters) through the fused kernel (:func:`_fused_plan`),
    from ``grads`` or (None) each weight's ``.grad``, set to None after; False (nothing done) where
    :func:`_fused_plan` gives none or a gradient is missing."""
    if weights is None:
        weights = opt.param_groups[0]["params"] if len(opt.param_groups) == 1 else []
    fused = _fused_plan(opt, weights)
    if fused is None:
        return False
    if grads is None:
        grads = [w.grad for w in weights]
        if any(gr is None for gr in grads):
            return False
    kernel, kwargs, (m, v, steps) = fused
    torch._foreach_add_(steps, 1)
    kernel(weights, grads, m, v, [], steps, **kwargs)
    for w in weights:
        if w.grad is not None:
            w.grad = None
    return True


def _homeostasis(net: "Zor") -> None:
    """θ_i ← θ_i − η_i (target_i − r_i) on every layer where it can move θ (η ≠ 0 or bounds), keeping the
    always-spiking cache valid (−inf stays −inf; a finite lower bound lifts it)."""
    for i, layer in enumerate(net.layers):
        if net._eta[i] == 0.0 and layer.threshold_range is None:
            continue
        theta = net.threshold(i)
        known = _cached(net, i)
        rules.homeostasis(theta, net.rate(i), layer.target_activation, net._eta[i], layer.threshold_range)
        if known is not None:
            bounds = layer.threshold_range
            net._always[i] = (_key(theta), known and (bounds is None or bounds[0] is None))


_ADAMS = (torch.optim.Adam, torch.optim.AdamW)
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
    if not post.always and always_spikes(net, i + 1):   # θ = −inf: s_{i+1} ≡ 1, O(a_i, s_{i+1}) is a column
        post = rules.Trace(c=post.c, s=post.s, a=post.a, always=True)
    e, g = net.rule.correlate(pre, post, d, net.connections[i])
    return e, g, units


def _set_update(net: "Zor", i: int, e: torch.Tensor, g: torch.Tensor, units: Optional[torch.Tensor],
                scale: Scale) -> None:
    """W_i.grad = −U for connection i from its co-activity E and G = O(a_i, δ̂): U = G ⊙ E′ norm-clipped
    and error-level scaled in one multiply (event input: on the active rows, then scattered)."""
    w = net.weights[i]
    buf = buffers.grad_buffer(net, i, w)
    u = rules.clip_norm(_gated_update(net, i, e, g, units, None if units is not None else buf),
                        net.layers[i].max_update_norm, -scale)
    w.grad = u if units is None else buf.zero_().index_copy_(0, units, u)


def _gated_update(net: "Zor", i: int, e: torch.Tensor, g: torch.Tensor, units: Optional[torch.Tensor],
                  out: Optional[torch.Tensor]) -> torch.Tensor:
    """U = G ⊙ E′ of connection i, E′ = clip(E − ν R, 0, 1) (R updated) or clip(E, 0, 1): into ``out`` (W_i's
    reused gradient buffer; a fresh, contiguous tensor each step would cost page faults) or, for an event
    input (the active rows ``units`` only), a fresh (n_u, n_{i+1}) tensor."""
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
    return g * e if out is None else torch.mul(g, e, out=out)


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
