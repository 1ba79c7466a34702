"""Blocks of tensors moved between the ranks, point to point: what the data-parallel exchanges send.

Every move is a swap (torch.distributed.batch_isend_irecv): rank r sends send[q] to rank q and
receives rank q's tensor into recv[q], for every q ≠ r, and waits for all of it before it
returns; ``post`` (and ``columns_posted``, ``columns_into``) returns without waiting, and the
caller waits (:class:`Pending`) where it needs the data. On loopback gloo a swap is about 4×
faster than ``all_gather``, which copies through a flat buffer. Tags are TAG_BASE + (count mod
TAGS): every rank counts its swaps, and all ranks post in the same order. Swaps and gloo's
collectives (which number their slots from 0 up) run beside pending swaps on torch 2.13's gloo:
the columns exchange's ``train_batch`` step all-reduces and swaps while the last step's rows
are still travelling (tests/test_distributed_columns.py). An earlier note here said they hung
there; the cause was not recorded.

On top of it, for a tensor split over N ranks by rows (a shard of a batch) or by columns (a
block of units, ``blocks[q] = (lo, hi)`` of rank q):

    all_gather   parts[r] → parts[q] on every rank            each rank's part, everywhere
    rows         (B_r, n) on rank r → (B, n), rank order       a global batch from its shards
    columns      (B, k_r) on rank r → (B, n)                   a layer's units side by side
    to_rows      (B, k_r) → (B_r, n)                           columns to rows (rank r: rows r·B_r…)
    to_columns   (B_r, n) → (B, k_r)                           rows to columns
    reduce       parts[q] on every rank → Σ_q (rank q's part for r), summed in rank order

A rank receives (N−1)/N of the result in ``rows``, ``columns`` and ``all_gather``, and
(N−1)/N² of the whole tensor in ``to_rows`` and ``to_columns``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch

__all__ = ["PointToPoint", "Blocks", "Pending", "TAG_BASE", "TAGS"]

# point-to-point tags TAG_BASE + (count mod TAGS): gloo uses such a tag as its slot, and its collectives number
# their slots from 0 up
TAG_BASE, TAGS = 1 << 30, 1 << 30

Block = tuple[int, int]   # (lo, hi) of one rank's units


class PointToPoint:
    """Swaps of tensors between rank ``rank`` and the other ranks of ``world`` (the module docstring)."""

    def __init__(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world
        self.tag = 0                                    # count of swaps (their tags)

    def swap(self, send: Sequence[Optional[torch.Tensor]], recv: Sequence[Optional[torch.Tensor]]) -> None:
        """``send[q]`` to rank q and rank q's tensor into ``recv[q]``, for every q other than this rank (contiguous
        tensors; None or empty ones are neither sent nor received: the peer's side must be empty too)."""
        for work in self.post(send, recv):
            work.wait()

    def post(self, send: Sequence[Optional[torch.Tensor]], recv: Sequence[Optional[torch.Tensor]]) -> list:
        """:meth:`swap` without the wait: the posted works (``wait()`` each before reading ``recv`` or writing
        ``send``). Every rank posts in the same order; other swaps may run while these are pending."""
        import torch.distributed as dist

        self.tag = (self.tag + 1) % TAGS
        ops = []
        for q in range(self.world):
            if q == self.rank:
                continue
            if send[q] is not None and send[q].numel():
                ops.append(dist.P2POp(dist.isend, send[q], q, tag=TAG_BASE + self.tag))
            if recv[q] is not None and recv[q].numel():
                ops.append(dist.P2POp(dist.irecv, recv[q], q, tag=TAG_BASE + self.tag))
        return dist.batch_isend_irecv(ops) if ops else []

    def all_gather(self, parts: Sequence[torch.Tensor]) -> None:
        """Send ``parts[rank]`` to every other rank and receive rank q's part into ``parts[q]``."""
        self.swap([parts[self.rank]] * self.world, parts)


class Pending:
    """Posted swaps and what to do once they arrived: ``wait()`` waits for every work and returns ``finish()``."""

    def __init__(self, works: list, finish: Callable[[], Any]) -> None:
        self.works, self.finish = works, finish

    def wait(self) -> Any:
        for work in self.works:
            work.wait()
        return self.finish()


class Blocks(PointToPoint):
    """The block moves of the module docstring; receive buffers are kept between calls (a fresh multi-MB tensor
    each step would cost page faults), one per ``name`` and sending rank."""

    def __init__(self, rank: int, world: int) -> None:
        super().__init__(rank, world)
        self.buffers: dict[tuple, torch.Tensor] = {}

    def buffer(self, name: tuple, shape: tuple, like: torch.Tensor) -> torch.Tensor:
        buf = self.buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != like.dtype or buf.device != like.device:
            buf = self.buffers[name] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return buf

    def rows(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """Every rank's rows (B_r, n) → (B, n) in rank order (a kept buffer: valid until the next call)."""
        b = x.shape[0]
        every = self.buffer((name,), (b * self.world,) + tuple(x.shape[1:]), x)
        parts = list(every.split(b))
        parts[self.rank].copy_(x)
        self.all_gather(parts)
        return every

    def columns(self, t: torch.Tensor, blocks: Sequence[Block], name: str) -> torch.Tensor:
        """This rank's units (B, k_r) → every unit (B, n), the ranks' blocks side by side (a kept buffer)."""
        return self.columns_posted(t, blocks, name).wait()

    def columns_posted(self, t: torch.Tensor, blocks: Sequence[Block], name: str) -> "Pending":
        """:meth:`columns` posted: its ``wait()`` gives the (B, n) tensor (``t`` must not change before)."""
        parts = [t if q == self.rank else self.buffer((name, q), (t.shape[0], hi - lo), t)
                 for q, (lo, hi) in enumerate(blocks)]
        out = self.buffer((name,), (t.shape[0], blocks[-1][1]), t)
        return Pending(self.post([parts[self.rank]] * self.world, parts),
                       lambda: torch.cat(parts, dim=1, out=out))

    def columns_into(self, full: torch.Tensor, own: torch.Tensor, blocks: Sequence[Block],
                     spare: Optional[list[torch.Tensor]] = None) -> Pending:
        """The ranks' column blocks (n, k_q) of a (n, Σk) tensor, posted; ``wait()`` writes them into ``full``.
        ``spare``: flat scratch tensors free until then, which the receive buffers take (each at most once) before
        fresh memory (whose pages the receive would fault in)."""
        def recv_buffer(k: int) -> torch.Tensor:
            n = own.shape[0] * k
            for at, t in enumerate(spare or []):
                if t.numel() >= n and t.dtype == own.dtype and t.device == own.device:
                    return spare.pop(at)[:n].view(own.shape[0], k)
            return torch.empty(own.shape[0], k, dtype=own.dtype, device=own.device)

        parts = [own if q == self.rank else recv_buffer(hi - lo) for q, (lo, hi) in enumerate(blocks)]

        def place() -> None:
            for (lo, hi), part in zip(blocks, parts):
                full[:, lo:hi].copy_(part)
        return Pending(self.post([own] * self.world, parts), place)

    def to_rows(self, t: torch.Tensor, blocks: Sequence[Block], name: str) -> torch.Tensor:
        """This rank's units of every row (B, k_r) → every unit of this rank's rows (B_r, n) (a new tensor)."""
        rows = t.shape[0] // self.world
        send = list(t.split(rows))
        recv = [send[q] if q == self.rank else self.buffer((name, q), (rows, hi - lo), t)
                for q, (lo, hi) in enumerate(blocks)]
        self.swap(send, recv)
        return torch.cat(recv, dim=1)

    def to_columns(self, t: torch.Tensor, blocks: Sequence[Block], name: str) -> torch.Tensor:
        """Every unit of this rank's rows (B_r, n) → this rank's units of every row (B, k_r) (a kept buffer)."""
        lo, hi = blocks[self.rank]
        out = self.buffer((name,), (t.shape[0] * self.world, hi - lo), t)
        recv = list(out.split(t.shape[0]))
        send = [t[:, a:b].contiguous() for a, b in blocks]
        recv[self.rank].copy_(send[self.rank])
        self.swap(send, recv)
        return out

    def reduce(self, parts: Sequence[torch.Tensor], name: str) -> torch.Tensor:
        """Σ over the ranks q of rank q's ``parts[r]`` (this rank r's), summed in rank order (a new tensor)."""
        mine = parts[self.rank]
        recv = [mine if q == self.rank else self.buffer((name, q), tuple(mine.shape), mine) for q in range(self.world)]
        self.swap(parts, recv)
        total = recv[0].clone()
        for part in recv[1:]:
            total.add_(part)
        return total
