"""The reducer: exact data parallelism inside the learning step.

N ranks each hold the same network and each run ``train_batch`` on their shard of a
global batch of B = Σ_r B_r rows. Three exchanges give every rank the update one process
would compute on the whole batch; :func:`start` picks one per network:

**columns** (:class:`Columns`, :mod:`zor.engine.tensorparallel`; the default for dense
networks whose layers above the input all have ≥ :data:`COLUMNS_FROM` units): tensor
parallel by output units. Each rank owns the columns W_i[:, κ] that feed its block κ of
every layer's units, runs the whole global batch on them and exchanges activations (B·n per
hidden layer), the signal δ̂ and the output/error, plus 1/N² of each hidden W_i (the rows
its signal needs); never the rest of the weights.

**activations** (:class:`Sharded`, :mod:`zor.engine.sharded`; the default for the other
dense networks): the ranks all-gather the per-sample factors of the rule's outer products
(a_i, s_i, δ̂_i: B·Σ n floats), each rank computes E_i, G_i, the update and the
optimiser step for its own rows of every W_i over the global batch, and one all-gather
of the updated rows makes every W_i whole again. Dense connections, the four rules,
a fused Adam/AdamW (:func:`zor.engine.sharded.why_not` says why not otherwise).

**all-reduce** (:class:`AllReduce`; every other network: convolutions, SGD, ...): before
the update every rank all-reduces (SUM, one flattened ``torch.distributed.all_reduce``
per step, plus one small one per layer for the ``normalized`` rule) the batch statistics
the rule is built from:

    B                     = Σ_r B_r                               global batch
    Σ_b |error|           → ε̄ = Σ|error| / (B · n_L)               error-level scale
    Σ_b a_iᵀ δ̂            → G_i = Σ / B                           per connection
    Σ_b (pre)ᵀ (post)     → E_i = Σ / B   (normalized: E_i = Σ)   co-activity
    Σ_b s_i               → r_i ← m r_i + (1 − m) Σ / B           firing rate (homeostasis)
    Σ_b δ²  (per unit)    → ‖δ‖_batch = sqrt(Σ)                    normalized rule's signal

so every rank applies the same update U, the same novelty trace, the same optimizer
step and the same thresholds. It moves 2·Σ|W_i| floats a step and every rank repeats the
whole element-wise update.

Each way N ranks on their shards equal one process on the whole batch, to float
rounding (only the order of sums differs). The environment variable ``ZOR_DP_EXCHANGE`` =
``auto`` (default), ``all-reduce``, ``activations`` or ``columns`` forces a path (one that
does not apply is a ConfigError naming why);
``reducer.exchange`` and ``reducer.reason`` say which path a network took and why.

Under ``activations`` the Adam moments and novelty traces of rows a rank does not own are
stale between steps, under ``columns`` every full tensor (``reducer.stale``);
:meth:`Reducer.gather_state`, a collective every rank calls, makes them whole (``fit`` does
before each checkpoint and at its end).

Event (sparse) input batches are refused under ``distributed=True``: each rank would
touch a different set of rows of W_0.

Single-process training uses :data:`OFF`, a reducer that does nothing and is never
asked to (``learning.learn`` branches once on ``reducer.active``).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import TYPE_CHECKING, Optional, Sequence

import torch

from zor.common.errors import ConfigError

from . import sharded as sharded_
from . import tensorparallel

if TYPE_CHECKING:
    from . import rules
    from .network import Zor

__all__ = ["Reducer", "AllReduce", "Sharded", "Columns", "OFF", "start", "check_same", "EXCHANGES"]

EXCHANGES = ("auto", "all-reduce", "activations", "columns")   # values of ZOR_DP_EXCHANGE
# auto takes the columns exchange where every layer above the input has at least this many units (docs/scale.md:
# 2 ranks on 2 cores, CPU per step: equal to or cheaper than activations at 1024-wide, batch 32 and 256, and
# 1.74x against 1.26x at 4096-wide; 4x dearer at the quick start's 784-64-784, batch 48: train_batch's step on
# shards. fit's whole-batch step is cheaper than activations at every size measured, but start() serves both callers)
COLUMNS_FROM = 1024


class Reducer:
    """No reduction: one process holds the whole batch."""

    active = False
    sharded = False           # learning.learn hands the step to learn() (zor.engine.sharded)
    stale = False             # some optimiser / novelty rows are out of date on this rank
    exchange = "none"         # what the ranks exchange: "none", "all-reduce", "activations" or "columns"
    owns_forward = False      # Zor._forward_train hands the training forward to forward_train() (columns)
    whole_batch = False       # fit hands train_whole() the whole global batch instead of a shard (columns)
    reason = "one process"    # why this path

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """Σ over ranks of ``t``, in place (here: ``t`` itself)."""
        return t

    def gather_state(self, net: "Zor") -> None:
        """Make every rank's optimiser state and novelty traces whole (nothing to do here)."""


OFF = Reducer()


class AllReduce(Reducer):
    """SUM over the ranks of the default torch.distributed process group."""

    active = True
    exchange = "all-reduce"

    def __init__(self, world: int, reason: str = "") -> None:
        self.world = world   # number of ranks
        self.reason = reason

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def sum_all(self, parts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Σ over ranks of every tensor in ``parts`` with one all-reduce of their flattened concatenation;
        returns new tensors shaped like ``parts``."""
        flat = torch.cat([p.reshape(-1) for p in parts])
        self.sum_(flat)
        out, at = [], 0
        for p in parts:
            out.append(flat[at:at + p.numel()].view(p.shape))
            at += p.numel()
        return out


class Sharded(AllReduce):
    """The activations exchange: each rank updates its rows of every W_i (zor.engine.sharded)."""

    sharded = True
    exchange = "activations"

    def __init__(self, net: "Zor", rank: int, world: int) -> None:
        super().__init__(world, "dense connections, a rule and optimiser whose update splits by rows")
        self.update = sharded_.ShardedUpdate(net, rank, world)

    @property
    def stale(self) -> bool:  # type: ignore[override]
        return self.update.stale

    def learn(self, net: "Zor", traces: "list[rules.Trace]", delta: torch.Tensor,
              return_signal: bool) -> Optional[torch.Tensor]:
        return self.update.learn(net, traces, delta, self, return_signal)

    def gather_state(self, net: "Zor") -> None:
        self.update.gather_state(net)


class Columns(AllReduce):
    """The columns exchange (tensor parallel): each rank owns the columns of every W_i that feed its block of units,
    runs the whole batch on them and exchanges activations and signals, never weights (zor.engine.tensorparallel)."""

    sharded = True
    exchange = "columns"

    def __init__(self, net: "Zor", rank: int, world: int) -> None:
        super().__init__(world, "dense stateless connections whose units split over the ranks")
        self.update = tensorparallel.ColumnsUpdate(net, rank, world)

    owns_forward = True
    whole_batch = True

    def forward_train(self, net: "Zor", x: torch.Tensor) -> tuple:
        """The training forward on the global batch through this rank's own columns (Zor._forward_train's)."""
        return self.update.forward_train(net, x)

    def train_whole(self, net: "Zor", x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One step on the whole global batch (B, n_0), held by every rank (fit's): no rows move; the per-sample
        mean |error| of the whole batch (B,), the same on every rank."""
        return self.update.train_whole(net, x, y)

    @property
    def stale(self) -> bool:  # type: ignore[override]
        return self.update.stale

    def learn(self, net: "Zor", traces: "list[rules.Trace]", delta: torch.Tensor,
              return_signal: bool) -> Optional[torch.Tensor]:
        return self.update.learn(net, traces, delta, return_signal)

    def gather_state(self, net: "Zor") -> None:
        self.update.gather_state(net)


def start(net: "Zor") -> AllReduce:
    """The reducer for ``net`` once the process group is checked and every rank holds the same network (``auto``):
    :class:`Columns` where it applies and every layer above the input has ≥ COLUMNS_FROM units, else
    :class:`Sharded` where it applies, else :class:`AllReduce`; or the one ``ZOR_DP_EXCHANGE`` asks for."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ConfigError("distributed=True needs an initialised default torch.distributed process group: "
                          "call torch.distributed.init_process_group first, or launch with torchrun")
    choice = os.environ.get("ZOR_DP_EXCHANGE", "auto") or "auto"
    if choice not in EXCHANGES:
        raise ConfigError(f"ZOR_DP_EXCHANGE={choice!r}: expected one of {list(EXCHANGES)}")
    check_same(net)
    world = dist.get_world_size()
    if choice == "columns":
        why_columns = tensorparallel.why_not(net, world)
        if why_columns is not None:
            raise ConfigError(f"ZOR_DP_EXCHANGE=columns: this network cannot split by output units: {why_columns}")
        return Columns(net, dist.get_rank(), world)
    if choice == "auto" and min(layer.size for layer in net.layers[1:]) >= COLUMNS_FROM \
            and tensorparallel.why_not(net, world) is None:
        return Columns(net, dist.get_rank(), world)
    why = sharded_.why_not(net, world)
    if choice == "activations" and why is not None:
        raise ConfigError(f"ZOR_DP_EXCHANGE=activations: this network cannot exchange activations: {why}")
    if choice == "all-reduce" or why is not None:
        return AllReduce(world, why or "ZOR_DP_EXCHANGE=all-reduce")
    return Sharded(net, dist.get_rank(), world)


def fingerprint(net: "Zor") -> bytes:
    """SHA-256 of the config, the layer list and every weight, threshold, rate and novelty trace."""
    h = hashlib.sha256()
    h.update(json.dumps(net.config.to_dict(), sort_keys=True, default=str).encode())
    h.update(json.dumps([layer.to_dict() for layer in net.layers], sort_keys=True, default=str).encode())
    for name, t in list(net.named_parameters()) + list(net.named_buffers()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.digest()


def check_same(net: "Zor") -> None:
    """ConfigError naming the ranks whose network differs from rank 0's (hashes all-gathered; nothing pickled)."""
    import torch.distributed as dist

    device = net.device if dist.get_backend() == "nccl" else torch.device("cpu")
    mine = torch.frombuffer(bytearray(fingerprint(net)), dtype=torch.uint8).to(device)
    every = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(every, mine)
    differ = [r for r, t in enumerate(every) if not torch.equal(t, every[0])]
    if differ:
        raise ConfigError(f"distributed=True: rank(s) {differ} hold a different network than rank 0 (this is rank "
                          f"{dist.get_rank()}): expected the same config, layer list and weights on every rank")
