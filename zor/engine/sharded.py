"""The sharded update: data parallelism that exchanges activations, not products.

N ranks hold the same network; rank r trains on its shard of B_r = B/N rows of every
global batch of B rows. Rank r owns the rows

    ρ_r = [r·k, (r+1)·k) ∩ [0, n_i),   k = ⌈n_i / N⌉

of every W_i (n_i, n_{i+1}) (pre-synaptic units; a row is contiguous in memory). One step:

    forward; δ̂_i = rule.signal(δ); δ ← δ̂_i W_iᵀ           on the shard (B_r rows), as one process
    small all-reduce   B, Σ|error| → ε̄, Σ_b s_i → r_i          (normalized rule: Σ_b δ² per unit)
    exchange           the per-sample factors of the outer products, in rank order (point to point):
                       a_i (pre), s_i or a_{i+1} where E uses them (spikes as uint8), δ̂_i
    E_i[ρ], G_i[ρ]     = rule.correlate(pre[:, ρ], post, δ̂_i)   over the GLOBAL batch, own rows only
    E′ = clip(E − ν R[ρ], 0, 1),  R[ρ] ← ρ_R R[ρ] + (1 − ρ_R)|E|,  U[ρ] = G[ρ] ⊙ E′
    ‖U_i‖ = ‖(‖U_i[j]‖)_j‖                                  row norms all-gathered (n_i floats; the norm clip)
    W_i[ρ] ← AdamW(W_i[ρ], grad = −U[ρ]·min(1, c/‖U_i‖)·ε̄; m_i[ρ], v_i[ρ])   the fused kernel
    W_i[ρ] ← clamp(W_i[ρ], ±max_weight)
    exchange W_i[ρ_r] → W_i                                  every rank holds all of W_i again
    θ_j ← θ_j − η (target − r_j)                             every rank, from the summed spikes

so the ranks compute what one process computes on the global batch (only the order of
float sums differs), while each rank does 1/N of the outer products, of the element-wise
update and of the optimiser step. Per step each rank receives (N−1)/N of B·Σ n floats of
activations and of Σ|W_i| weights, where the all-reduce path (:mod:`zor.engine.distributed`)
moves 2·Σ|W_i| and every rank repeats the whole update.

Between steps the Adam moments m_i, v_i and the novelty traces R_i of the rows a rank does
not own are stale on that rank (``stale``). :func:`ShardedUpdate.gather_state`, a
collective every rank calls, makes them whole: ``fit`` calls it before each checkpoint
and at its end; a checkpoint of a stale network is refused. Code that drives ``train_batch`` itself calls
``net.reducer.gather_state(net)`` on every rank before saving or before ``net.set_distributed(False)``.

Which networks (:func:`why_not`): dense connections only (a convolution's kernel is
shared by every position, so a row is no unit's own), the four rules of
:mod:`zor.engine.rules` (their factors are known: :data:`FACTORS`), a fused Adam/AdamW
with one parameter group, and at least N pre-synaptic units per connection. Any other
network keeps the all-reduce path, which is exact for all of them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional, Union

import torch

from zor.common.errors import ShapeError

from . import learning, rules
from .connections import Dense
from .exchange import PointToPoint

if TYPE_CHECKING:
    from .network import Zor

__all__ = ["FACTORS", "why_not", "ShardedUpdate"]

# rule name -> (the pre trace's field in E, the post trace's field in E); G = O(a_i, δ̂) always uses pre.a
FACTORS = {"coactivity": ("a", "a"), "normalized": ("s", "a"), "post_spikes": ("a", "s"), "gated": ("a", "s")}
# rules whose E needs no post factor where the post layer always spikes (s ≡ 1: E is the column mean_b a_i)
POST_FREE_WHEN_ALWAYS = ("post_spikes", "gated")

Scale = Union[torch.Tensor, float]


def _fused_adam(opt: torch.optim.Optimizer) -> Optional[str]:
    """None when ``opt`` is a fused Adam/AdamW whose step is the kernel this module calls; else why not."""
    from torch.optim import optimizer as torch_optimizer

    if type(opt) not in (torch.optim.Adam, torch.optim.AdamW):
        return f"the optimizer is {type(opt).__name__}, not a fused Adam/AdamW"
    if len(opt.param_groups) != 1:
        return "the optimizer has several parameter groups"
    g = opt.param_groups[0]
    if not g.get("fused"):
        return "the optimizer is not fused (this torch has no fused Adam for the device)"
    if g["amsgrad"] or g["maximize"] or g.get("capturable") or g.get("differentiable") \
            or isinstance(g["lr"], torch.Tensor):
        return "the optimizer uses amsgrad, maximize, capturable, differentiable or a tensor lr"
    if opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks \
            or torch_optimizer._global_optimizer_pre_hooks or torch_optimizer._global_optimizer_post_hooks:
        return "the optimizer has step hooks"
    return None


def why_not(net: "Zor", world: int) -> Optional[str]:
    """None when the sharded update computes exactly what one process computes for ``net`` on ``world``
    ranks; else the reason (the network then keeps the all-reduce path)."""
    if type(net.rule) not in tuple(rules.RULES.values()) or net.rule.name not in FACTORS:
        return f"the rule {net.rule.name!r} is not one of {sorted(FACTORS)}"
    conv = [i for i, c in enumerate(net.connections) if type(c) is not Dense]
    if conv:
        return (f"connection(s) {conv} are convolutions: a shared kernel's outer products sum over all "
                "positions, so its rows are no unit's own")
    small = [i for i, w in enumerate(net.weights) if w.shape[0] < world]
    if small:
        return f"layer(s) {small} have fewer units than the {world} ranks"
    return _fused_adam(net.optimizer)


class ShardedUpdate:
    """The learning step of :mod:`zor.engine.sharded` for one network on rank ``rank`` of ``world``."""

    def __init__(self, net: "Zor", rank: int, world: int) -> None:
        self.rank, self.world = rank, world
        self.rows: list[tuple[int, int, int]] = []      # per connection: (lo, hi, k) of the rows this rank owns
        for w in net.weights:
            n = w.shape[0]
            k = -(-n // world)
            self.rows.append((min(rank * k, n), min((rank + 1) * k, n), k))
        self.conns = [Dense(hi - lo, w.shape[1]) for (lo, hi, _), w in zip(self.rows, net.weights)]  # own scratch
        self.buffers: dict[int, torch.Tensor] = {}      # U_i[ρ] per connection, reused between steps
        self.gathered: dict[tuple, torch.Tensor] = {}   # the global-batch factors' buffers, reused between steps
        self.p2p = PointToPoint(rank, world)            # the exchanges of factors and rows
        self.stale = False                              # moments / novelty rows of other ranks out of date

    # ------------------------------------------------------------------ the step
    def learn(self, net: "Zor", traces: list[rules.Trace], delta: torch.Tensor, reducer,
              return_signal: bool) -> Optional[torch.Tensor]:
        """learning.learn() for a distributed network: the module docstring's step. Factors and W_i's rows are
        exchanged point to point (:meth:`exchange`), one exchange at a time."""
        rule, top = net.rule, len(net.weights) - 1
        b_local = delta.shape[0]
        err = delta.abs().sum().reshape(1)                                  # Σ|error| of this shard
        factors = _Gather(self, self.gathered)
        for layer, field in self._needed(net):                              # spikes: 0/1 in one byte
            t = getattr(traces[layer], field)
            factors.add((layer, field), t.to(torch.uint8) if field == "s" else t)
        for i in reversed(range(len(net.weights))):
            d = rule.signal(delta, traces[i + 1], i == top, reducer)        # δ̂_i (B_r, n_{i+1})
            factors.add(("d", i), d)
            if i > 0 or return_signal:
                delta = net.connections[i].backward(d, net.weights[i])      # (B_r, n_i), before W_i changes
        scale = self._batch_statistics(net, b_local, err, reducer)
        factors.exchange()
        for i in reversed(range(len(net.weights))):
            u = self._update_rows(net, i, factors)
            self._clip_and_scale(net, i, u, scale)
            self._optimizer_step(net, i, u)
            self._gather_rows(net.weights[i].detach(), i)
        for j, layer in enumerate(net.layers):
            rules.homeostasis(net.threshold(j), net.rate(j), layer.target_activation, net._eta[j],
                              layer.threshold_range)
            net._always.pop(j, None)   # θ_j changed: learning.always_spikes looks at it again
        self.stale = True
        return delta if return_signal else None

    def _batch_statistics(self, net: "Zor", b_local: int, err: torch.Tensor, reducer) -> Scale:
        """One small all-reduce: B, Σ|error| and Σ_b s_j; moves the firing rates; returns the error scale ε̄."""
        spikes = net._spike_sums or []                                      # Σ_b s_j per layer (forward pass)
        net._spike_sums = None
        count = torch.tensor([float(b_local), float(b_local) ** 2], device=err.device)
        summed = reducer.sum_all([count, err] + spikes)
        b = summed[0][0]
        if float(summed[0][1]) * self.world != float(b) ** 2:              # Σ b_r² = B²/N iff every b_r = B/N
            raise ShapeError(f"distributed step: every rank must train on the same number of rows (this rank "
                             f"{b_local}, {int(float(b))} in all over {self.world} ranks)")
        for j, layer in enumerate(net.layers[:len(spikes)]):
            net.rate(j).mul_(layer.rate_momentum).add_(summed[2 + j] / b, alpha=1.0 - layer.rate_momentum)
        if not net.config.error_scaling:
            return 1.0
        return (summed[1] / (b * net.layers[-1].size)).clamp_min(net.config.min_error_scale).reshape(())

    def _needed(self, net: "Zor") -> list[tuple[int, str]]:
        """(layer, field) of every per-sample factor the outer products use, in a fixed order."""
        pre_f, post_f = FACTORS[net.rule.name]
        keys: list[tuple[int, str]] = []
        for i in range(len(net.weights)):
            want = [(i, "a"), (i, pre_f)]
            if not (net.rule.name in POST_FREE_WHEN_ALWAYS and learning.always_spikes(net, i + 1)):
                want.append((i + 1, post_f))
            keys += [k for k in want if k not in keys]
        return keys

    def _update_rows(self, net: "Zor", i: int, factors: "_Gather") -> torch.Tensor:
        """U_i[ρ] = G_i[ρ] ⊙ E′_i[ρ] of connection i over the global batch (rows ρ of this rank), formed as
        learning.learn forms the whole U_i (rule.direction where it applies, else correlate)."""
        lo, hi, _ = self.rows[i]
        layer, d = net.layers[i], factors.get(("d", i))                     # δ̂_i (B, n_{i+1})
        empty = d[:0]
        pre_f, _ = FACTORS[net.rule.name]
        pre = rules.Trace(c=empty, s=factors.get((i, pre_f))[:, lo:hi].contiguous() if pre_f == "s" else empty,
                          a=factors.get((i, "a"))[:, lo:hi].contiguous())   # (B, |ρ|)
        always = learning.always_spikes(net, i + 1)
        post = rules.Trace(c=empty, s=factors.get((i + 1, "s"), empty), a=factors.get((i + 1, "a"), empty),
                           always=always)                                    # (B, n_{i+1})
        buf = self.buffers.get(i)
        if buf is None or buf.device != d.device:
            buf = self.buffers[i] = torch.empty(hi - lo, d.shape[1], dtype=d.dtype, device=d.device)
        if layer.novelty_factor == 0.0 and always and net.rule.direction(pre, post, d, self.conns[i], buf) is not None:
            return buf
        e, g = net.rule.correlate(pre, post, d, self.conns[i])              # (|ρ|, n_{i+1}) (E: or a column)
        if layer.novelty_factor != 0.0:
            trace = net.novelty_trace(i)[lo:hi]
            e, r = rules.novelty(e, trace, layer.novelty_factor, layer.novelty_momentum)
            trace.copy_(r)
        else:
            e = e.clamp_(0.0, 1.0)                                           # E′ = clip(E, 0, 1)
        return torch.mul(g, e, out=buf)                                      # (|ρ|, n_{i+1})

    def _clip_and_scale(self, net: "Zor", i: int, u: torch.Tensor, scale: Scale) -> None:
        """U_i ← −ε̄ · U_i · min(1, max_update_norm / ‖U_i‖) as learning.learn clips the whole U_i (rules.clip_norms,
        the same arithmetic per connection): ‖U_i‖ the norm of its row norms, every rank's rows all-gathered."""
        import torch.distributed as dist

        _, _, k = self.rows[i]
        mine = torch.zeros(k, dtype=u.dtype, device=u.device)
        mine[:u.shape[0]] = rules.row_norms(u)                               # (|ρ|,), padded to k
        every = torch.empty(k * self.world, dtype=u.dtype, device=u.device)
        dist.all_gather(list(every.split(k)), mine)
        norm = rules.update_norm(u, every[:net.weights[i].shape[0]])
        limit = net.layers[i].max_update_norm
        rules.clip_norms([u], math.inf if limit is None else limit, -scale, norms=norm.reshape(1))

    def _optimizer_step(self, net: "Zor", i: int, grad: torch.Tensor) -> None:
        """The fused Adam/AdamW kernel on this rank's rows of W_i and of its moments, then the clamp."""
        opt, w = net.optimizer, net.weights[i]
        g = opt.param_groups[0]
        lo, hi, _ = self.rows[i]
        st = opt.state[w]
        if not st:              # as torch.optim.Adam's first step creates it (fused: the step on the device)
            st["step"] = torch.zeros((), dtype=torch.float32, device=w.device)
            st["exp_avg"] = torch.zeros_like(w, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(w, memory_format=torch.preserve_format)
        param = w.detach()[lo:hi]
        torch._foreach_add_([st["step"]], 1)
        kernel = torch._fused_adamw_ if type(opt) is torch.optim.AdamW or g.get("decoupled_weight_decay") \
            else torch._fused_adam_
        kernel([param], [grad], [st["exp_avg"][lo:hi]], [st["exp_avg_sq"][lo:hi]], [], [st["step"]], amsgrad=False,
               lr=g["lr"], beta1=g["betas"][0], beta2=g["betas"][1], weight_decay=g["weight_decay"], eps=g["eps"],
               maximize=False, grad_scale=None, found_inf=None)
        limit = net.layers[i].max_weight
        if limit is not None:
            param.clamp_(-limit, limit)

    # ------------------------------------------------------------------ whole tensors again
    def _gather_rows(self, t: torch.Tensor, i: int) -> None:
        """Every rank's rows of ``t`` (n_i, ...) into ``t`` itself (:meth:`exchange`)."""
        n, k = t.shape[0], self.rows[i][2]
        self.exchange([t[min(q * k, n):min((q + 1) * k, n)] for q in range(self.world)])

    def exchange(self, parts: list[torch.Tensor]) -> None:
        """Send ``parts[rank]`` to every other rank and receive rank q's part into ``parts[q]``
        (:meth:`zor.engine.exchange.PointToPoint.all_gather`: point to point, done before it returns)."""
        self.p2p.all_gather(parts)

    def gather_state(self, net: "Zor") -> None:
        """Make the Adam moments and novelty traces whole on every rank (a collective: every rank calls it)."""
        if not self.stale:
            return
        for i, w in enumerate(net.weights):
            st = net.optimizer.state.get(w) or {}
            tensors = [st[key] for key in ("exp_avg", "exp_avg_sq") if key in st]
            if net.layers[i].novelty_factor != 0.0:
                tensors.append(net.novelty_trace(i))
            for t in tensors:
                self._gather_rows(t, i)
        self.stale = False


class _Gather:
    """Every rank's per-sample tensors (B_r, n) → (B, n) in rank order: packed into one buffer per dtype and
    exchanged point to point in one go (two exchanges a step, not one per tensor: each is a point where the
    ranks wait for each other)."""

    def __init__(self, owner: "ShardedUpdate", buffers: dict[tuple, torch.Tensor]) -> None:
        self.owner, self.world, self.rank = owner, owner.world, owner.rank
        self.buffers = buffers                    # name -> buffer kept from the last step (no page faults)
        self.local: list[tuple[tuple, torch.Tensor]] = []
        self.done: dict[tuple, torch.Tensor] = {}

    def add(self, key: tuple, t: torch.Tensor) -> None:
        self.local.append((key, t))

    def _buffer(self, name: tuple, n: int, like: torch.Tensor) -> torch.Tensor:
        buf = self.buffers.get(name)
        if buf is None or buf.numel() != n or buf.dtype != like.dtype or buf.device != like.device:
            buf = self.buffers[name] = torch.empty(n, dtype=like.dtype, device=like.device)
        return buf

    def exchange(self) -> None:
        """Exchange everything added; afterwards :meth:`get` gives each key's (B, n) tensor."""
        for dtype in sorted({t.dtype for _, t in self.local}, key=str):
            items = [(k, t) for k, t in self.local if t.dtype == dtype]
            size = sum(t.numel() for _, t in items)                          # one rank's packed length
            packed = self._buffer(("packed", str(dtype)), size * self.world, items[0][1])
            parts = list(packed.split(size))
            torch.cat([t.reshape(-1) for _, t in items], out=parts[self.rank])
            self.owner.exchange(parts)
            at = 0
            for key, t in items:
                every = self._buffer(key, t.numel() * self.world, t).view((t.shape[0] * self.world,) + t.shape[1:])
                for q, part in enumerate(parts):                              # rank q's rows, in rank order
                    every[q * t.shape[0]:(q + 1) * t.shape[0]].copy_(part[at:at + t.numel()].view(t.shape))
                at += t.numel()
                self.done[key] = every.to(torch.float32) if dtype == torch.uint8 else every
        self.local = []

    def get(self, key: tuple, default: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The global-batch tensor of ``key`` (spikes back as 0./1. floats); ``default`` when never exchanged."""
        if key in self.done:
            return self.done[key]
        if default is None:
            raise KeyError(key)
        return default
