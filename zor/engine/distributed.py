"""The reducer: exact data parallelism inside the learning step.

N ranks each hold the same network and each run ``train_batch`` on their shard of a
global batch of B = Σ_r B_r rows. Before the update every rank all-reduces (SUM, one
flattened ``torch.distributed.all_reduce`` per step, plus one small one per layer for
the ``normalized`` rule) the batch statistics the rule is built from:

    B                     = Σ_r B_r                               global batch
    Σ_b |error|           → ε̄ = Σ|error| / (B · n_L)               error-level scale
    Σ_b a_iᵀ δ̂            → G_i = Σ / B                           per connection
    Σ_b (pre)ᵀ (post)     → E_i = Σ / B   (normalized: E_i = Σ)   co-activity
    Σ_b s_i               → r_i ← m r_i + (1 − m) Σ / B           firing rate (homeostasis)
    Σ_b δ²  (per unit)    → ‖δ‖_batch = sqrt(Σ)                    normalized rule's signal

so every rank applies the same update U, the same novelty trace, the same optimizer
step and the same thresholds: N ranks on their shards equal one process on the whole
batch, to float rounding. Per-sample quantities (charges, spikes, the signal sent down
through Wᵀ, spike gating) need no communication.

Convolutions are exact (their outer products are sums over batch and positions like
the dense ones). Event (sparse) input batches are refused under ``distributed=True``:
each rank would touch a different set of rows of W_0.

Single-process training uses :data:`OFF`, a reducer that does nothing and is never
asked to (``learning.learn`` branches once on ``reducer.active``).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Sequence

import torch

from zor.common.errors import ConfigError

if TYPE_CHECKING:
    from .network import Zor

__all__ = ["Reducer", "AllReduce", "OFF", "start", "check_same"]


class Reducer:
    """No reduction: one process holds the whole batch."""

    active = False

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """Σ over ranks of ``t``, in place (here: ``t`` itself)."""
        return t


OFF = Reducer()


class AllReduce(Reducer):
    """SUM over the ranks of the default torch.distributed process group."""

    active = True

    def __init__(self, world: int) -> None:
        self.world = world   # number of ranks

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


def start(net: "Zor") -> AllReduce:
    """The reducer for ``net`` once the process group is checked and every rank holds the same network."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ConfigError("distributed=True needs an initialised default torch.distributed process group: "
                          "call torch.distributed.init_process_group first, or launch with torchrun")
    check_same(net)
    return AllReduce(dist.get_world_size())


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
