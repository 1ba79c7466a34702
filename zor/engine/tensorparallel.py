"""Tensor parallelism by output units: the ``columns`` exchange of :mod:`zor.engine.distributed`.

N ranks hold the same network; rank r is handed its shard of B_r = B/N rows of every global
batch (as under the other exchanges) and owns the block of units

    κ_j = [r·k_j, (r+1)·k_j) ∩ [0, n_j),   k_j = ⌈n_j / N⌉          of every layer j ≥ 1

with their θ_j[κ_j] and r_j[κ_j], and the columns W_i[:, κ_{i+1}] of every connection with
their Adam moments and novelty traces, kept contiguous here, plus a copy of the rows
W_i[κ_i, :] of every connection above the input for the signal. Layer 0 is whole on every
rank. One step, on the WHOLE global batch (moves: :mod:`zor.engine.exchange`):

    x                  ← rows: the ranks' shards, in rank order                (B, n_0)
    h_{i+1}[:, κ]      = a_i W_i[:, κ]                      whole sums over n_i, as one process
    s, a on κ          = [c > θ[κ]], f(c ⊙ s);  r[κ] ← m r[κ] + (1 − m) mean_b s
    a_{i+1}            ← columns (below the output; s too for the normalized rule)   (B, n_{i+1})
    output             ← to_rows: rank r hands out its rows of f(c_L)           (B_r, n_L)
    δ_L[:, κ]          ← to_columns of the error rows                            (B, k_L)
    δ̂[:, κ]            = rule.signal(δ[:, κ])              per unit over the whole batch: local
    δ_i[:, κ_i]        = columns(δ̂) W_i[κ_i, :]ᵀ           whole sums over n_{i+1}, as one process
    U_i[:, κ]          = G ⊙ clip(E − ν R, 0, 1)         from the whole a_i and the own post factors
    Σ|error|, ‖U_i[j, κ]‖² for every row j              one all-reduce → ε̄, ‖U_i‖ = ‖(‖U_i[j]‖)_j‖
    W_i[:, κ]          ← fused AdamW(−ε̄ U_i min(1, c/‖U_i‖)), clamp;  θ[κ] ← θ[κ] − η (target − r[κ])
    W_i[κ_i, κ_q]      ← from rank q, every connection above the input: the rows current again

Per step a rank receives (N−1)/N of B·n_0 (inputs), of B·n_j for each hidden layer j twice
(activations and signal), (N−1)/N² of 2·B·n_L (output and error) and of |W_i| for each
connection above the input (its rows); it does 1/N of every product, of the update and of the
optimiser step.

Exactness against one process on the whole batch: every product keeps its sums whole, and
a rank's products are column blocks of one process's (bit-identical on the CPUs tried), so
the charges, spikes, signals and U_i are one process's, and each spike is decided by one rank:
the ranks never disagree on one. Only ε̄ and ‖U_i‖ are summed in another order (an ulp); the
fused Adam kernel then rounds about one weight in ten differently, and that difference grows
with the steps (docs/scale.md: 4.3e-7 after 8 steps at 4096-wide, 1.7e-6 after 24; the tests:
≤ 1e-6 after 50). Splitting the signal's sum over the ranks instead (a reduce-scatter of partial
products, no weight moved) changed near-zero gradients by rounding, which Adam's 1/ε amplifies
(1.3e-6 after 50 steps at 784-32-784); the rows' exchange is its price. The signal returned to
the input (``reinforce(return_signal=True)``) is such a sum over the ranks (nothing learns from it).

Between steps every full tensor of the network (W_i, moments, novelty traces, θ_j, r_j) is
stale on every rank (``stale``): :meth:`ColumnsUpdate.gather_state`, a collective every rank
calls, writes them whole (``fit`` does before checkpoints and at its end), so checkpoints and
resume are unchanged. A tensor written from outside (a resume, a load) is read again into the
own blocks before the next step. The training forward is this module's while the network's
reducer holds it (`Columns.owns_forward`); ``forward(train=False)``, ``predict`` and
``evaluate`` use the full tensors, so gather first.

Which networks (:func:`why_not`): those of :func:`zor.engine.sharded.why_not` (dense, the four
rules, a fused Adam/AdamW) without stateful layers or weight averaging, with at least N units
in every layer above the input.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import torch

from zor.common.errors import ShapeError, StateError

from . import events, learning, neuron, rules
from . import sharded as sharded_
from .connections import Dense
from .exchange import Blocks

if TYPE_CHECKING:
    from .network import Zor

__all__ = ["why_not", "ColumnsUpdate"]


def why_not(net: "Zor", world: int) -> Optional[str]:
    """None when the columns exchange computes what one process computes for ``net`` on ``world`` ranks; else why."""
    stateful = [j for j, layer in enumerate(net.layers) if layer.stateful]
    if stateful:
        return f"layer(s) {stateful} are stateful: their charges would be split over the ranks by unit"
    if net.config.weight_average:
        return "weight averaging reads every weight after each step; a rank holds only its own columns"
    small = [j for j, layer in enumerate(net.layers) if j and layer.size < world]
    if small:
        return f"layer(s) {small} have fewer units than the {world} ranks"
    return sharded_.why_not(net, world)


def _copy(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of ``t`` that shares no memory with it (``contiguous`` would return ``t`` itself where it is)."""
    return t.clone(memory_format=torch.contiguous_format)


def _key(t: torch.Tensor) -> tuple:
    """One state of a tensor: its storage and its count of in-place changes."""
    return id(t), t.data_ptr(), t._version


class _Pass(list):
    """The traces of a training forward pass: per layer, what the rank holds (the output as its rows, which
    reinforce checks against the error's rows), plus the whole pre factors and the own post traces."""

    pre: list[rules.Trace]    # per connection i: layer i's whole a_i (and s_i where E uses it)   (B, n_i)
    own: list[rules.Trace]    # per layer j ≥ 1: c, s, a on the own units κ_j                       (B, k_j)


class ColumnsUpdate:
    """The step of :mod:`zor.engine.tensorparallel` for one network on rank ``rank`` of ``world``."""

    def __init__(self, net: "Zor", rank: int, world: int) -> None:
        self.rank, self.world = rank, world
        self.p2p = Blocks(rank, world)                 # the point-to-point moves (zor.engine.exchange)
        # per layer j: (lo, hi) of every rank's block of units (layer 0: whole on every rank)
        self.blocks = [[(0, layer.size)] * world if j == 0 else self._split(layer.size)
                       for j, layer in enumerate(net.layers)]
        self.conns = [Dense(w.shape[0], self._own(i + 1)[1] - self._own(i + 1)[0]) for i, w in enumerate(net.weights)]
        self.w: list[torch.Tensor] = []        # W_i[:, κ] per connection, contiguous    (n_i, k_{i+1})
        self.rows: list[torch.Tensor] = []     # W_i[κ_i, :] per connection i ≥ 1, for the signal  (k_i, n_{i+1})
        self.novelty: list[torch.Tensor] = []  # R_i[:, κ] (empty where ν = 0)
        self.moments: list[Optional[tuple[torch.Tensor, torch.Tensor]]] = []   # (m, v)[:, κ], None before a step
        self.keys: list[tuple] = []            # per connection: the full tensors' states when last read or written
        self.always: list[bool] = []           # per layer: every θ_j = −inf (s ≡ 1)
        self.theta_keys: list[tuple] = []
        self.stale = False                     # the network's full tensors are out of date on this rank
        self._sync(net)

    def _split(self, n: int) -> list[tuple[int, int]]:
        k = -(-n // self.world)
        return [(min(q * k, n), min((q + 1) * k, n)) for q in range(self.world)]

    def _own(self, j: int) -> tuple[int, int]:
        return self.blocks[j][self.rank]

    # ------------------------------------------------------------------ own blocks and the network's tensors
    def _sync(self, net: "Zor") -> None:
        """Read the own blocks again from every full tensor written since this rank last read or wrote it."""
        for i, w in enumerate(net.weights):
            st = net.optimizer.state.get(w) or {}
            key = self._state_key(net, i, st)
            if i < len(self.keys) and self.keys[i] == key:
                continue
            lo, hi = self._own(i + 1)
            own = _copy(w.detach()[:, lo:hi])
            rows = _copy(w.detach()[slice(*self._own(i)) if i else slice(0, 0)])
            nov = _copy(net.novelty_trace(i)[:, lo:hi]) if net.layers[i].novelty_factor else own[:0]
            mv = (_copy(st["exp_avg"][:, lo:hi]), _copy(st["exp_avg_sq"][:, lo:hi])) if st else None
            for store, value in ((self.w, own), (self.rows, rows), (self.novelty, nov), (self.moments, mv),
                                 (self.keys, key)):
                store[i:i + 1] = [value]
        for j in range(len(net.layers)):
            key = _key(net.threshold(j))
            if j < len(self.theta_keys) and self.theta_keys[j] == key:
                continue
            self.always[j:j + 1] = [bool(torch.isneginf(net.threshold(j)).all())]
            self.theta_keys[j:j + 1] = [key]

    def _state_key(self, net: "Zor", i: int, st: dict) -> tuple:
        w = net.weights[i]
        moments = (_key(st["exp_avg"]), _key(st["exp_avg_sq"])) if st else ()
        return (_key(w), _key(net.novelty_trace(i))) + moments

    def gather_state(self, net: "Zor") -> None:
        """Write every full tensor whole from the ranks' blocks (a collective: every rank calls it)."""
        if not self.stale:
            return
        with torch.no_grad():
            for i, w in enumerate(net.weights):
                pairs = [(w.detach(), self.w[i])]
                if net.layers[i].novelty_factor:
                    pairs.append((net.novelty_trace(i), self.novelty[i]))
                st = net.optimizer.state.get(w)
                if st and self.moments[i] is not None:
                    pairs += [(st["exp_avg"], self.moments[i][0]), (st["exp_avg_sq"], self.moments[i][1])]
                for full, own in pairs:
                    self.p2p.columns_into(full, own, self.blocks[i + 1])
            for j in range(1, len(net.layers)):
                for t in (net.threshold(j), net.rate(j)):
                    self.p2p.all_gather([t[lo:hi] for lo, hi in self.blocks[j]])
        self.keys = [self._state_key(net, i, net.optimizer.state.get(w) or {}) for i, w in enumerate(net.weights)]
        self.theta_keys = [_key(net.threshold(j)) for j in range(len(net.layers))]
        self.stale = False

    # ------------------------------------------------------------------ the step
    def forward_train(self, net: "Zor", x: torch.Tensor) -> tuple[torch.Tensor, _Pass]:
        """The module docstring's forward on the global batch; (this rank's rows of the output (B_r, n_L), traces)."""
        self._sync(net)
        self._check_rows(x.shape[0])
        x = self.p2p.rows(x, "x")                                         # (B, n_0)
        last, acts = len(net.layers) - 1, net._acts
        traces, pre, own = _Pass(), [], []
        pre_field = sharded_.FACTORS[net.rule.name][0]
        c, s, a, _ = self._layer(net, 0, x)                             # (B, n_0), whole on every rank
        pre.append(rules.Trace(c=a[:0], s=s, a=a))
        traces.append(pre[0])
        for j in range(1, last + 1):
            c, s, a, mean = self._layer(net, j, pre[j - 1].a @ self.w[j - 1])   # (B, k_j): the own units
            own.append(rules.Trace(c=c, s=s, a=a, always=self.always[j], mean=mean))
            if j < last:
                whole_s = self.p2p.columns(s.contiguous(), self.blocks[j], f"s{j}") if pre_field == "s" else a[:0]
                pre.append(rules.Trace(c=a[:0], s=whole_s, a=self.p2p.columns(a, self.blocks[j], f"a{j}")))  # (B, n_j)
                traces.append(own[-1])
        out = own[-1].a if self.always[last] else acts[last](own[-1].c)  # (B, k_L) f(output charges)
        rows = self.p2p.to_rows(out.contiguous(), self.blocks[last], "out")                    # (B_r, n_L)
        traces.append(rules.Trace(c=rows, s=rows[:, :0], a=rows))
        traces.pre, traces.own = pre, own
        return rows, traces

    def _check_rows(self, b: int) -> None:
        """ShapeError unless every rank holds the same number of rows (Σ b_r² = B²/N iff every b_r = B/N)."""
        import torch.distributed as dist

        count = torch.tensor([float(b), float(b) ** 2])
        dist.all_reduce(count)
        if float(count[1]) * self.world != float(count[0]) ** 2:
            raise ShapeError(f"distributed step: every rank must train on the same number of rows (this rank {b}, "
                             f"{int(count[0])} in all over {self.world} ranks)")

    def _layer(self, net: "Zor", j: int, h: torch.Tensor) -> tuple:
        """(c, s, a, mean_b s or None) of this rank's units of layer j from their input h (B, k_j), moving their firing rates."""
        layer, (lo, hi) = net.layers[j], self._own(j)
        c = neuron.charge(h, None, layer.decay)
        rate, m = net.rate(j)[lo:hi], layer.rate_momentum
        if self.always[j]:                                              # θ = −inf: s ≡ 1, a = f(c), r moves to 1
            s, a, mean = c.new_ones(()).expand_as(c), net._acts[j](c), None
            rate.lerp_(c.new_ones(()), 1.0 - m)
        else:
            s = neuron.fire(c, net.threshold(j)[lo:hi])
            a, mean = net._acts[j](neuron.gate(c, s)), events.batch_mean(s)   # mean_b s (k_j,)
            rate.lerp_(mean, 1.0 - m)                                   # r ← m r + (1 − m) mean_b s, as one lerp
        return c, s, a, mean

    def learn(self, net: "Zor", traces: list[rules.Trace], delta: torch.Tensor,
              return_signal: bool) -> Optional[torch.Tensor]:
        """learning.learn() under the columns exchange: the module docstring's signal and update, from the error
        rows ``delta`` (B_r, n_L) of the pass in ``traces`` (:meth:`forward_train`'s)."""
        if not isinstance(traces, _Pass):
            raise StateError("the columns exchange learns from its own forward pass: expected forward(x, train=True) "
                             "or train_batch after set_distributed(True)")
        rule, top = net.rule, len(net.weights) - 1
        d = self.p2p.to_columns(delta, self.blocks[top + 1], "error")                            # (B, k_L)
        err = d.abs().sum().reshape(1)                                  # Σ|error| over the own units
        us: list[torch.Tensor] = []
        for i in range(top, -1, -1):
            post = traces.own[i]                                        # layer i+1's own units
            dh = rule.signal(d, post, i == top)                         # δ̂ (B, k_{i+1}): the whole batch is here
            if i > 0:                                                   # whole sums, as one process: no reordering
                d = self.p2p.columns(dh.contiguous(), self.blocks[i + 1], f"d{i}") @ self.rows[i].T   # (B, n_{i+1}) → (B, k_i)
            elif return_signal:
                d = self.p2p.reduce(list((dh @ self.w[0].T).split(delta.shape[0])), "signal")   # (B_r, n_0)
            us.append(self._direction(net, i, traces.pre[i], post, dh))
        us.reverse()
        scale, norms = self._statistics(net, err, us, delta.shape[0])
        self._optimizer_step(net, us, scale, norms)
        self._share_rows()
        self._homeostasis(net)
        self.stale = True
        return d if return_signal else None

    def _direction(self, net: "Zor", i: int, pre: rules.Trace, post: rules.Trace, d: torch.Tensor) -> torch.Tensor:
        """U_i[:, κ] = G ⊙ E′ (n_i, k_{i+1}), formed as learning.learn forms the whole U_i: through the rule's
        direction, on the own post units that spiked at all where few did (the masked co-activity)."""
        layer, conn = net.layers[i], self.conns[i]
        buf = self.p2p.buffer(("u", i), (pre.a.shape[1], d.shape[1]), d)
        if layer.novelty_factor != 0.0:
            e, g = net.rule.correlate(pre, post, d, conn)
            e, r = rules.novelty(e, self.novelty[i], layer.novelty_factor, layer.novelty_momentum)
            self.novelty[i].copy_(r)
            return torch.mul(g, e, out=buf)
        work = self.p2p.buffer(("work", i), (2 * buf.numel(),), buf)    # E, or the masked G and E
        cols = self._active_columns(net, post)
        if cols is None:
            return net.rule.direction(pre, post, d, conn, buf, work[:buf.numel()].view(buf.shape))
        buf.zero_()
        if cols.shape[0]:                                               # U = 0 on the silent post units
            u = net.rule.direction_columns(pre, post, d, conn, cols, work[:2 * buf.shape[0] * cols.shape[0]])
            buf.index_copy_(1, cols, u)
        return buf

    def _active_columns(self, net: "Zor", post: rules.Trace) -> Optional[torch.Tensor]:
        """The own post units that spiked for some sample, where at most learning.MASKED_BELOW of them did and the
        rule's E vanishes on a silent one (as learning decides it for a whole layer, on a CPU); else None."""
        if post.always or not net.rule.silent_zero or post.s.device.type != "cpu":
            return None
        cols = torch.nonzero(post.mean).squeeze(1)                      # (K,)
        return cols if cols.shape[0] <= learning.MASKED_BELOW * post.mean.shape[0] else None

    def _statistics(self, net: "Zor", err: torch.Tensor, us: list[torch.Tensor],
                    b_local: int) -> tuple[object, list[torch.Tensor]]:
        """One all-reduce of Σ|error| and every U_i's partial row sums of squares; (ε̄, [‖U_i‖])."""
        import torch.distributed as dist

        summed = torch.cat([err] + [rules.row_norms(u).square_() for u in us])
        dist.all_reduce(summed)
        norms, at = [], 1
        for u in us:
            norms.append(rules.update_norm(u, summed[at:at + u.shape[0]].sqrt()))   # ‖(‖U_i[j]‖)_j‖
            at += u.shape[0]
        if not net.config.error_scaling:
            return 1.0, norms
        b = b_local * self.world
        return (summed[0] / (b * net.layers[-1].size)).clamp_min(net.config.min_error_scale).reshape(()), norms

    def _optimizer_step(self, net: "Zor", us: list[torch.Tensor], scale, norms: list[torch.Tensor]) -> None:
        """U_i ← −ε̄ U_i min(1, c/‖U_i‖), then the fused Adam/AdamW kernel on the own columns of every W_i and of
        its moments (denormals flushed on a CPU, as learning does), then the clamp."""
        opt = net.optimizer
        g = opt.param_groups[0]
        steps = []
        for i, (u, norm) in enumerate(zip(us, norms)):
            limit = net.layers[i].max_update_norm
            rules.clip_norms([u], math.inf if limit is None else limit, -scale, norms=norm.reshape(1))
            steps.append(self._state(net, i)["step"])
        torch._foreach_add_(steps, 1)
        kernel = torch._fused_adamw_ if type(opt) is torch.optim.AdamW or g.get("decoupled_weight_decay") \
            else torch._fused_adam_
        flush = us[0].device.type == "cpu" and 1e-310 * _ONE != 0.0 and torch.set_flush_denormal(True)
        try:
            kernel(self.w, us, [m for m, _ in self.moments], [v for _, v in self.moments], [], steps,
                   amsgrad=False, lr=g["lr"], beta1=g["betas"][0], beta2=g["betas"][1], weight_decay=g["weight_decay"],
                   eps=g["eps"], maximize=False, grad_scale=None, found_inf=None)
        finally:
            if flush:
                torch.set_flush_denormal(False)
        for layer, w in zip(net.layers, self.w):
            if layer.max_weight is not None:
                w.clamp_(-layer.max_weight, layer.max_weight)

    def _share_rows(self) -> None:
        """W_i[κ_i, :] made current for the next signal: the block W_i[κ_i, κ_{i+1}^q] from every rank q (each rank
        sends the rows κ_i^q of its columns to rank q)."""
        for i in range(1, len(self.w)):
            send = [self.w[i][lo:hi] for lo, hi in self.blocks[i]]      # (k_i^q, k_{i+1}): row blocks, contiguous
            recv = [self.p2p.buffer(("block", i, q), (self.rows[i].shape[0], hi - lo), self.w[i])
                    for q, (lo, hi) in enumerate(self.blocks[i + 1])]
            recv[self.rank] = send[self.rank]
            self.p2p.swap(send, recv)
            for (lo, hi), block in zip(self.blocks[i + 1], recv):
                self.rows[i][:, lo:hi].copy_(block)

    def _state(self, net: "Zor", i: int) -> dict:
        """The optimizer state of W_i, made as torch.optim.Adam's first (fused) step makes it, with own moments."""
        w = net.weights[i]
        st = net.optimizer.state[w]
        if not st:
            st["step"] = torch.zeros((), dtype=torch.float32, device=w.device)
            st["exp_avg"] = torch.zeros_like(w, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(w, memory_format=torch.preserve_format)
            self.moments[i] = (torch.zeros_like(self.w[i]), torch.zeros_like(self.w[i]))
            self.keys[i] = self._state_key(net, i, st)
        return st

    def _homeostasis(self, net: "Zor") -> None:
        """θ[κ] ← θ[κ] − η (target − r[κ]) on every layer where it can move θ (the input layer: whole)."""
        for j, layer in enumerate(net.layers):
            if net._eta[j] == 0.0 and layer.threshold_range is None:
                continue
            lo, hi = self._own(j)
            rules.homeostasis(net.threshold(j)[lo:hi], net.rate(j)[lo:hi], layer.target_activation, net._eta[j],
                              layer.threshold_range)
            bounds = layer.threshold_range                              # −inf stays −inf unless a lower bound lifts it
            self.always[j] = self.always[j] and (bounds is None or bounds[0] is None)
            self.theta_keys[j] = _key(net.threshold(j))


_ONE = 1.0   # 1e-310 * _ONE is 0 where the CPU already flushes denormals (then the flush is left as it is)
