"""Tensor parallelism by output units: the ``columns`` exchange of :mod:`zor.engine.distributed`.

N ranks hold the same network; each owns the block of units

    κ_j = [r·k_j, (r+1)·k_j) ∩ [0, n_j),   k_j = ⌈n_j / N⌉          of every layer j ≥ 1

with their θ_j[κ_j] and r_j[κ_j], and the columns W_i[:, κ_{i+1}] of every connection with
their Adam moments and novelty traces, kept contiguous here, plus a copy of the rows
W_i[κ_i, :] of every connection above the input for the signal. Layer 0 is whole on every
rank. Every rank runs the WHOLE global batch. ``fit`` hands each rank all of it
(:meth:`ColumnsUpdate.train_whole`: every rank holds the whole data set and draws the same
batch); ``train_batch`` on a rank's shard of B_r = B/N rows (as under the other exchanges)
gathers the rows first and hands the output back by rows. One step (moves:
:mod:`zor.engine.exchange`):

    x                  ← rows: the ranks' shards, in rank order  (train_batch only)   (B, n_0)
    h_{i+1}[:, κ]      = a_i W_i[:, κ]                      whole sums over n_i, as one process
    s, a on κ          = [c > θ[κ]], f(c ⊙ s);  r[κ] ← m r[κ] + (1 − m) mean_b s
    a_{i+1}            ← columns (below the output; s too for the normalized rule)   (B, n_{i+1})
    δ_L[:, κ]          = y[:, κ] − f(c_L[:, κ])             (fit: the own columns of the error)
       train_batch:      output → to_rows (B_r, n_L); the error rows → to_columns (B, k_L)
    δ̂[:, κ]            = rule.signal(δ[:, κ])              per unit over the whole batch: local
    δ_i[:, κ_i]        = columns(δ̂) W_i[κ_i, :]ᵀ           whole sums over n_{i+1}, as one process
    U_i[:, κ]          = G ⊙ clip(E − ν R, 0, 1)         from the whole a_i and the own post factors
    Σ|error| (fit: per sample too), ‖U_i[j, κ]‖² per row j    one all-reduce → ε̄, ‖U_i‖, e_b
    W_i[:, κ]          ← fused AdamW(−ε̄ U_i min(1, c/‖U_i‖)), clamp;  θ[κ] ← θ[κ] − η (target − r[κ])
    W_i[κ_i, κ_q]      ← from rank q, every connection above the input: the rows current again

(the update: :mod:`zor.engine.tensorparallel_update`). Two moves travel while the rank
computes: the columns of δ̂ while it forms U_i (which does not need them), and the rows of
W_i from the end of one step into the next forward (waited for just before the next signal
product, the first reader; within the step while torch.profiler records, because a work that
outlives the profiler which recorded it crashes the process). The results are those of the
blocking moves, bit for bit.

Per step a rank receives (N−1)/N of B·n_j for each hidden layer j twice (activations and
signal) and (N−1)/N² of |W_i| for each connection above the input (its rows); through
``train_batch`` also (N−1)/N of B·n_0 (inputs) and (N−1)/N² of 2·B·n_L (output and error). It
does 1/N of every product, of the update and of the optimiser step.

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

import functools
from typing import TYPE_CHECKING, Optional

import torch

from zor.common.errors import ShapeError, StateError

from . import events, learning, neuron, rules
from . import sharded as sharded_
from . import tensorparallel_update as tp_update
from .connections import Dense
from .exchange import Blocks, Pending

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
        self.moving_rows: list[Pending] = []   # the rows' swap posted by the last step (waited for at first use)
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
            self._rows_ready()                                          # a posted swap must not land after this
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
        self._rows_ready()
        moving = []                                 # every swap posted at once; each block placed as it arrives
        spare = [t.view(-1) for name, t in self.p2p.buffers.items() if name[0] in ("u", "work")]   # free: U_i's
        with torch.no_grad():
            for i, w in enumerate(net.weights):
                pairs = [(w.detach(), self.w[i])]
                if net.layers[i].novelty_factor:
                    pairs.append((net.novelty_trace(i), self.novelty[i]))
                st = net.optimizer.state.get(w)
                if st and self.moments[i] is not None:
                    pairs += [(st["exp_avg"], self.moments[i][0]), (st["exp_avg_sq"], self.moments[i][1])]
                moving += [self.p2p.columns_into(full, own, self.blocks[i + 1], spare) for full, own in pairs]
            for j in range(1, len(net.layers)):
                for t in (net.threshold(j), net.rate(j)):
                    parts = [t[lo:hi] for lo, hi in self.blocks[j]]
                    moving.append(Pending(self.p2p.post([parts[self.rank]] * self.world, parts), lambda: None))
            for pending in moving:
                pending.wait()
        self.keys = [self._state_key(net, i, net.optimizer.state.get(w) or {}) for i, w in enumerate(net.weights)]
        self.theta_keys = [_key(net.threshold(j)) for j in range(len(net.layers))]
        self.stale = False

    # ------------------------------------------------------------------ the step
    def forward_train(self, net: "Zor", x: torch.Tensor) -> tuple[torch.Tensor, _Pass]:
        """The module docstring's forward on the global batch from the ranks' rows x (B_r, n_0); (this rank's rows of
        the output (B_r, n_L), traces)."""
        self._sync(net)
        self._check_rows(x.shape[0])
        pre, own, out = self._forward(net, self.p2p.rows(x, "x"))         # x: (B, n_0) in rank order
        rows = self.p2p.to_rows(out.contiguous(), self.blocks[-1], "out")  # (B_r, n_L)
        traces = _Pass([pre[0], *own[:-1], rules.Trace(c=rows, s=rows[:, :0], a=rows)])
        traces.pre, traces.own = pre, own
        return rows, traces

    def train_whole(self, net: "Zor", x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One step on the WHOLE global batch, which every rank holds (fit's step): x (B, n_0), target y (B, n_L).
        No rows move and the error is formed on the own output units, δ_L[:, κ] = y[:, κ] − f(c_L[:, κ]); returns
        e_b = mean_j |δ_L|_bj of the whole batch (B,), the same on every rank (its row sums ride the all-reduce)."""
        self._sync(net)
        pre, own, out = self._forward(net, x)                             # out: (B, k_L)
        lo, hi = self._own(len(net.layers) - 1)
        d = torch.sub(y[:, lo:hi], out, out=self.p2p.buffer(("own error",), tuple(out.shape), out))   # (B, k_L)
        _, sums = self._learn(net, pre, own, d, x.shape[0], False, True)
        return sums.div_(net.layers[-1].size)

    def _forward(self, net: "Zor", x: torch.Tensor) -> tuple[list, list, torch.Tensor]:
        """The forward on the global batch x (B, n_0): (pre, own, f(c_L) on the own output units (B, k_L))."""
        last = len(net.layers) - 1
        pre_field = sharded_.FACTORS[net.rule.name][0]
        c, s, a, _ = self._layer(net, 0, x)                             # (B, n_0), whole on every rank
        pre, own = [rules.Trace(c=a[:0], s=s, a=a)], []
        for j in range(1, last + 1):
            h = self.p2p.buffer(("charge", j), (x.shape[0], self.w[j - 1].shape[1]), x)
            c, s, a, mean = self._layer(net, j, torch.matmul(pre[j - 1].a, self.w[j - 1], out=h))   # (B, k_j): own
            own.append(rules.Trace(c=c, s=s, a=a, always=self.always[j], mean=mean))
            if j < last:                                                # both posted, then both waited for
                moving = [self.p2p.columns_posted(a, self.blocks[j], f"a{j}")]
                if pre_field == "s":
                    moving.append(self.p2p.columns_posted(s.contiguous(), self.blocks[j], f"s{j}"))
                whole = [m.wait() for m in moving]                      # (B, n_j) each
                pre.append(rules.Trace(c=a[:0], s=whole[1] if pre_field == "s" else a[:0], a=whole[0]))
        return pre, own, own[-1].a if self.always[last] else net._acts[last](own[-1].c)

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
        kept = self.p2p.buffer                                          # kept between steps: no fresh pages
        if self.always[j]:                                              # θ = −inf: s ≡ 1, a = f(c), r moves to 1
            s, a, mean = c.new_ones(()).expand_as(c), net._acts[j](c), None
            rate.lerp_(c.new_ones(()), 1.0 - m)
        else:
            s = torch.gt(c, net.threshold(j)[lo:hi], out=kept(("spikes", j), tuple(c.shape), c))   # neuron.fire
            g = torch.mul(c, s, out=kept(("gated", j), tuple(c.shape), c))                      # neuron.gate
            a, mean = net._acts[j](g), events.batch_mean(s)             # mean_b s (k_j,)
            rate.lerp_(mean, 1.0 - m)                                   # r ← m r + (1 − m) mean_b s, as one lerp
        return c, s, a, mean

    def learn(self, net: "Zor", traces: list[rules.Trace], delta: torch.Tensor,
              return_signal: bool) -> Optional[torch.Tensor]:
        """learning.learn() under the columns exchange: the module docstring's signal and update, from the error
        rows ``delta`` (B_r, n_L) of the pass in ``traces`` (:meth:`forward_train`'s)."""
        if not isinstance(traces, _Pass):
            raise StateError("the columns exchange learns from its own forward pass: expected forward(x, train=True) "
                             "or train_batch after set_distributed(True)")
        d = self.p2p.to_columns(delta, self.blocks[-1], "error")        # (B, k_L)
        signal, _ = self._learn(net, traces.pre, traces.own, d, delta.shape[0] * self.world, return_signal, False)
        return signal

    def _learn(self, net: "Zor", pre: list[rules.Trace], own: list[rules.Trace], d: torch.Tensor, batch: int,
               return_signal: bool, per_sample: bool) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """The signal and update from the own error columns d (B, k_L) of the whole batch of ``batch`` rows;
        (the signal that reached the input (B_r, n_0) or None, Σ_j |δ_L|_bj per sample (B,) or None). Each signal's
        columns travel while the rank forms the direction that does not need them."""
        rule, top = net.rule, len(net.weights) - 1
        absolute = torch.abs(d, out=self.p2p.buffer(("absolute",), tuple(d.shape), d))
        stats = [absolute.sum().reshape(1)] + ([absolute.sum(dim=1)] if per_sample else [])   # Σ|error|, (B,)
        us: list[torch.Tensor] = []
        signal = None
        for i in range(top, -1, -1):
            dh = rule.signal(d, own[i], i == top)                       # δ̂ (B, k_{i+1}): the whole batch is here
            moving = self.p2p.columns_posted(dh.contiguous(), self.blocks[i + 1], f"d{i}") if i > 0 else None
            us.append(self._direction(net, i, pre[i], own[i], dh))
            if moving is not None:                                      # whole sums, as one process: no reordering
                self._rows_ready()
                d = torch.matmul(moving.wait(), self.rows[i].T,          # (B, n_{i+1}) → (B, k_i)
                                 out=self.p2p.buffer(("signal", i), (d.shape[0], self.rows[i].shape[0]), d))
            elif return_signal:
                signal = self.p2p.reduce(list((dh @ self.w[0].T).split(batch // self.world)), "signal")  # (B_r, n_0)
        us.reverse()
        scale, norms, sums = tp_update.statistics(net, stats, us, batch)
        self._optimizer_step(net, us, scale, norms)
        self._post_rows()
        self._homeostasis(net)
        if torch.autograd._profiler_enabled():     # a work must not outlive the profiler that recorded it (a crash)
            self._rows_ready()
        self.stale = True
        return signal, sums

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

    def _optimizer_step(self, net: "Zor", us: list[torch.Tensor], scale, norms: list[torch.Tensor]) -> None:
        """The clipped, scaled fused Adam/AdamW step on the own columns of every W_i and of its moments."""
        steps = [self._state(net, i)["step"] for i in range(len(us))]
        tp_update.adam_step(net, self.w, us, self.moments, steps, scale, norms)

    def _post_rows(self) -> None:
        """Post the swap that makes W_i[κ_i, :] current for the next signal (:meth:`_rows_ready` waits for it): the
        block W_i[κ_i, κ_{i+1}^q] from every rank q (each rank sends the rows κ_i^q of its columns to rank q). It
        travels during the next forward; ``self.w`` is not written before the wait."""
        self._rows_ready()
        for i in range(1, len(self.w)):
            send = [self.w[i][lo:hi] for lo, hi in self.blocks[i]]      # (k_i^q, k_{i+1}): row blocks, contiguous
            recv = [self.p2p.buffer(("block", i, q), (self.rows[i].shape[0], hi - lo), self.w[i])
                    for q, (lo, hi) in enumerate(self.blocks[i + 1])]
            recv[self.rank] = send[self.rank]
            self.moving_rows.append(Pending(self.p2p.post(send, recv), functools.partial(self._place_rows, i, recv)))

    def _place_rows(self, i: int, recv: list[torch.Tensor]) -> None:
        for (lo, hi), block in zip(self.blocks[i + 1], recv):
            self.rows[i][:, lo:hi].copy_(block)

    def _rows_ready(self) -> None:
        """Wait for the rows posted by :meth:`_post_rows` and place them."""
        moving, self.moving_rows = self.moving_rows, []
        for pending in moving:
            pending.wait()

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

