"""Zor's learning rule, written as its equations, and its variants.

Learning runs layer by layer from the top, without autograd. For the connection
W_i (n_i, n_{i+1}) from layer i (pre) to layer i+1 (post), with a_i = f(g_i) the
gated, activated values the forward pass sent, and δ (B, n_{i+1}) the error signal
that reached layer i+1 (at the top: δ = target − output):

    δ_below = δ̂ W_iᵀ                              sent on down, before W_i changes
    E       = co-activity of pre and post          (n_i, n_{i+1}), variant-specific
    R       ← ρ R + (1 − ρ)|E|                    novelty trace (EMA of |E|)
    E′      = clip(E − ν R, 0, 1)                  familiar co-activity down-weighted
    U       = (a_iᵀ δ̂ / B) ⊙ E′                    update direction
    U       ← U · min(1, max_update_norm / ‖U‖)     norm clip
    U       ← U · max(ε̄, min_error_scale)          error-level scaling (ε̄ = mean |error|)
    W_i.grad = −U; optimizer.step()                Adam/AdamW/SGD moves W_i along U
    W_i     ← clamp(W_i, −max_weight, max_weight)

Threshold homeostasis per layer (r: EMA of each unit's firing rate):

    r ← m r + (1 − m) mean_b(s)
    θ ← θ − η (target_activation − r)             a unit firing too rarely lowers θ

The four variants differ in the co-activity E and the signal δ̂ (the first three
are the author's; ``benchmarks/rule_variants.py`` measures all four):

- ``coactivity``  E = a_iᵀ a_{i+1} / B, δ̂ = δ            analog pre × analog post
- ``normalized``  E = s_iᵀ a_{i+1}, δ̂ = δ / ‖δ‖_batch    binary pre spikes × analog post,
                                                        signal normalised per unit
- ``post_spikes`` E = a_iᵀ s_{i+1} / B, δ̂ = δ            analog pre × |post spikes|
- ``gated``       E = a_iᵀ s_{i+1} / B, δ̂ = δ ⊙ s_{i+1}  ``post_spikes``, the signal gated by the
                                                        post spikes below the top (the default)

Example (``coactivity``, B = 1, one pre and one post unit, ν = 0):
a_i = 2, a_{i+1} = 0.25, δ = 0.5 → E = 0.5, E′ = 0.5, U = 2·0.5·0.5 = 0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import torch

from zor.common.errors import ConfigError

from .events import batch_mean

__all__ = [
    "Trace",
    "Rule",
    "CoactivityRule",
    "NormalizedRule",
    "PostSpikesRule",
    "GatedRule",
    "RULES",
    "get_rule",
    "novelty",
    "clip_norm",
    "clip_norms",
    "row_norms",
    "update_norm",
    "update_rate",
    "homeostasis",
]


@dataclass
class Trace:
    """What the forward pass kept of one layer for learning."""

    c: torch.Tensor   # (B, n) charges
    s: torch.Tensor   # (B, n) spikes as 0./1. floats
    a: torch.Tensor   # (B, n) f(c ⊙ s): the gated, activated values sent on
    always: bool = False   # every unit spiked for every sample (θ = −inf), so s ≡ 1
    mean: Optional[torch.Tensor] = None   # (n,) mean_b s of a dense training pass (its firing rate), else None


class Rule:
    """One learning-rule variant: the signal it sends and the co-activity it uses."""

    name = "base"
    e_sum = False   # E is a sum over the batch (True) or a mean (False): how ranks combine it
    silent_zero = False   # E[:, k] = 0 for a post unit k that spiked for no sample (E's post factor is s)

    def signal(self, delta: torch.Tensor, post: Trace, top: bool, reducer=None) -> torch.Tensor:
        """δ̂: the signal used for this connection's update and sent down.  (B, n_{i+1})

        ``reducer`` (zor.engine.distributed) sums batch statistics over ranks where the signal needs one."""
        return delta

    def post_activity(self, post: Trace) -> torch.Tensor:
        """The post-side factor of the co-activity E.  (B, n_{i+1})"""
        raise NotImplementedError

    def pre_activity(self, pre: Trace) -> torch.Tensor:
        """The pre-side factor of E.  (B, n_i)"""
        return pre.a

    def e_scale(self, batch: int) -> float:
        """Factor on E after the connection's batch mean (1: a mean; B: a sum)."""
        return 1.0

    def correlate(self, pre: Trace, post: Trace, delta: torch.Tensor, conn) -> tuple[torch.Tensor, torch.Tensor]:
        """(E, G): E the co-activity, G = O(a_i, δ̂), both shaped like the weight.

        ``conn`` is the connection (zor.engine.connections) whose outer product O sums
        pre × post over the batch (and, for a convolution, over positions).
        """
        left, post_x = self.pre_activity(pre), self.post_activity(post)
        if left is pre.a:
            e, g = conn.outer_pair(pre.a, post_x, delta)
        else:
            e, g = conn.outer(left, post_x), conn.outer(pre.a, delta)
        scale = self.e_scale(pre.a.shape[0])
        return (e * scale if scale != 1.0 else e), g

    def direction(self, pre: Trace, post: Trace, delta: torch.Tensor, conn, out: torch.Tensor,
                  work: Optional[torch.Tensor] = None) -> torch.Tensor:
        """U = G ⊙ clip(E, 0, 1) (no novelty gating) written into ``out`` (like the weight) and returned. A dense
        connection forms G straight in ``out`` and E in ``work`` (like the weight; None: a fresh tensor): two
        products into buffers the caller keeps, a working set of two weights. A variant may need fewer passes."""
        if conn.kind != "dense":
            e, g = self.correlate(pre, post, delta, conn)
            return torch.mul(g, e.clamp_(0.0, 1.0), out=out)
        e = conn.outer(self.pre_activity(pre), self.post_activity(post), work)
        scale = self.e_scale(pre.a.shape[0])
        if scale != 1.0:
            e.mul_(scale)
        return conn.outer(pre.a, delta, out).mul_(e.clamp_(0.0, 1.0))

    def direction_columns(self, pre: Trace, post: Trace, delta: torch.Tensor, conn, cols: torch.Tensor,
                          work: Optional[torch.Tensor] = None) -> torch.Tensor:
        """U[:, cols] (n_i, K) of a dense connection, for a rule with ``silent_zero`` where every post unit
        outside ``cols`` (K,) spiked for no sample, so U is 0 there: E and G of those K columns alone (the
        masked co-activity; the cost falls with the spike rate). ``work``: a flat scratch of ≥ 2 n_i K values
        for G and E (None: fresh tensors); U is returned in its first n_i K."""
        if not self.silent_zero:
            raise NotImplementedError(f"the {self.name} rule's E does not vanish where a post unit is silent")
        n, k = pre.a.shape[1], cols.shape[0]
        g_out = e_out = None
        if work is not None:
            g_out, e_out = work[:n * k].view(n, k), work[n * k:2 * n * k].view(n, k)
        e = conn.outer(pre.a, post.s.index_select(1, cols), e_out)                  # (n_i, K)
        return conn.outer(pre.a, delta.index_select(1, cols), g_out).mul_(e.clamp_(0.0, 1.0))


class CoactivityRule(Rule):
    """E = a_iᵀ a_{i+1} / B: how strongly pre and post were active together, in analog values."""

    name = "coactivity"

    def post_activity(self, post: Trace) -> torch.Tensor:
        return post.a


class NormalizedRule(Rule):
    """δ̂ = δ / ‖δ‖ per unit over the batch; E = s_iᵀ a_{i+1} (binary pre, summed)."""

    name = "normalized"
    e_sum = True

    def signal(self, delta: torch.Tensor, post: Trace, top: bool, reducer=None) -> torch.Tensor:
        if reducer is None or not reducer.active:
            return delta / delta.norm(dim=0, keepdim=True).clamp_min(1e-12)
        sq = reducer.sum_(delta.square().sum(dim=0, keepdim=True))   # Σ_b δ² over every rank's batch
        return delta / sq.sqrt_().clamp_min(1e-12)

    def post_activity(self, post: Trace) -> torch.Tensor:
        return post.a

    def pre_activity(self, pre: Trace) -> torch.Tensor:
        return pre.s

    def e_scale(self, batch: int) -> float:
        return float(batch)


class PostSpikesRule(Rule):
    """E = a_iᵀ s_{i+1} / B: analog pre activity where the post unit spiked.

    Where every post unit always spikes (θ = −inf, as at the output), s ≡ 1 and
    E[j, k] = mean_b a_i[b, j] for every k: one column, computed as such and broadcast.
    """

    name = "post_spikes"
    silent_zero = True

    def post_activity(self, post: Trace) -> torch.Tensor:
        return post.s

    def correlate(self, pre: Trace, post: Trace, delta: torch.Tensor, conn) -> tuple[torch.Tensor, torch.Tensor]:
        if not post.always:
            return super().correlate(pre, post, delta, conn)
        return conn.outer_ones(pre.a), conn.outer(pre.a, delta)   # E broadcasts along the post units

    def direction(self, pre: Trace, post: Trace, delta: torch.Tensor, conn, out: torch.Tensor,
                  work: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Where every post unit spikes, E′ = clip(mean_b a_i, 0, 1) is one factor per pre unit, folded into
        the product's small side: U = (a_i ⊙ E′ᵀ)ᵀ δ̂ / B, with no pass over the full U for ⊙ E′."""
        if post.always:             # a dense connection takes E′ as the (n_i,) vector of its pre units
            rows = batch_mean(pre.a) if conn.kind == "dense" else conn.outer_ones(pre.a)
            return conn.outer_rows(pre.a, delta, rows.clamp_(0.0, 1.0), out)
        return super().direction(pre, post, delta, conn, out, work)


class GatedRule(PostSpikesRule):
    """``post_spikes`` plus per-sample spike gating of the signal below the top:
    δ̂ = δ ⊙ s_{i+1}: a hidden unit that did not spike for a sample passes no error
    for that sample (the spike decides what flows, forward and backward)."""

    name = "gated"

    def signal(self, delta: torch.Tensor, post: Trace, top: bool, reducer=None) -> torch.Tensor:
        return delta if top else delta * post.s


RULES: dict[str, type[Rule]] = {r.name: r for r in (CoactivityRule, NormalizedRule, PostSpikesRule, GatedRule)}


def get_rule(name: str) -> Rule:
    if name not in RULES:
        raise ConfigError(f"unknown learning rule {name!r}: expected one of {sorted(RULES)}")
    return RULES[name]()


def novelty(
    e: torch.Tensor, r: torch.Tensor, factor: float, momentum: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Subtractive novelty gating.

        R ← ρ R + (1 − ρ)|E|;  E′ = clip(E − ν R, 0, 1)

    Returns (E′, new R). With ν = 0 this is clip(E, 0, 1) and R still tracks |E|.
    """
    r = momentum * r + (1.0 - momentum) * e.abs()
    return (e - factor * r).clamp(0.0, 1.0), r


def row_norms(u: torch.Tensor) -> torch.Tensor:
    """‖U[j]‖ of every row j of U (n_i,): the first half of :func:`update_norm`."""
    if u.dim() != 2:                # a conv kernel (C_out, C_in, k, k): its rows flattened (0 rows: no -1)
        u = u.reshape(u.shape[0], math.prod(u.shape[1:]))
    return torch.linalg.vector_norm(u, dim=1)


def update_norm(u: torch.Tensor, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
    """‖U‖ = ‖(‖U[j]‖)_j‖, the norm of the row norms (``rows``: those of U, given): accurate in float32 (a flat
    float32 norm over 4096² entries is off by ~7e-4), and a rank holding some rows of U computes the same
    value from the all-gathered row norms (zor.engine.sharded)."""
    return torch.linalg.vector_norm(row_norms(u) if rows is None else rows)


def clip_norm(u: torch.Tensor, max_norm: Optional[float], scale: Union[float, torch.Tensor] = 1.0) -> torch.Tensor:
    """U ← scale · U · min(1, max_norm / ‖U‖), in place, in one pass over U (the clip
    factor and any further scale fold into one multiply); no clip when max_norm is None.
    ``scale`` may be a 0-d tensor (the error level, kept on the device). The factor is formed in place on
    the 0-d norm: (1 / ‖U‖) · max_norm, as :func:`clip_norms` forms it (bit-identical); with max_norm = 1
    (the default) as 1 / max(‖U‖, 1), the same number in two ops fewer."""
    if max_norm is None:
        return u.mul_(scale) if isinstance(scale, torch.Tensor) or scale != 1.0 else u
    # ‖U‖ as update_norm(u) forms it, written out for a matrix (two calls fewer on the training step's path)
    norm = torch.linalg.vector_norm(torch.linalg.vector_norm(u, dim=1)) if u.dim() == 2 else update_norm(u)
    if max_norm == 1.0:
        f = norm.clamp_min_(1.0).reciprocal_()
    else:
        f = norm.clamp_min_(1e-12).reciprocal_().mul_(max_norm).clamp_(max=1.0)
    return u.mul_(f.mul_(scale))


def clip_norms(us: list[torch.Tensor], max_norms: Union[float, torch.Tensor],
               scale: Union[float, torch.Tensor] = 1.0, norms: Optional[torch.Tensor] = None) -> None:
    """:func:`clip_norm` of several updates at once, in place: U_k ← scale · U_k · min(1, M_k / ‖U_k‖).

    ``max_norms`` is one M for all or a (K,) tensor of M_k; inf where U_k is not clipped. The norms
    (:func:`update_norm`), a few ops on the (K,) vector of factors, one foreach call for the multiplies; the same
    arithmetic as clip_norm on each U_k (bit-identical). ``norms``: the (K,) ‖U_k‖ when known (zor.engine.sharded:
    a rank holding some rows of each U_k), else :func:`update_norm` of each."""
    norms = torch.stack([update_norm(u) for u in us]) if norms is None else norms.clone()
    f = norms.clamp_min_(1e-12).reciprocal_().mul_(max_norms).clamp_(max=1.0)
    torch._foreach_mul_(us, (f * scale).unbind())


def update_rate(rate: torch.Tensor, s: torch.Tensor, momentum: float) -> torch.Tensor:
    """r ← m r + (1 − m) mean_b(s), in place: per-unit EMA of the firing rate.  (n,)

    ``s`` may be a sparse COO batch (event input, :mod:`zor.engine.events`)."""
    return rate.mul_(momentum).add_(batch_mean(s), alpha=1.0 - momentum)


def homeostasis(
    threshold: torch.Tensor,
    rate: torch.Tensor,
    target: float,
    eta: float,
    bounds: Optional[tuple[Optional[float], Optional[float]]] = None,
) -> torch.Tensor:
    """θ ← θ − η (target − r), then clamp into bounds when given; in place.  (n,)

    A unit firing less often than the target lowers its threshold; one firing more
    often raises it. With η = 0 the thresholds stay where they are. A None bound
    leaves that side open.
    """
    if eta != 0.0:
        threshold.add_(rate - target, alpha=eta)
    if bounds is not None:
        threshold.clamp_(bounds[0], bounds[1])
    return threshold
