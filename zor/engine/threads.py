"""How many torch threads a training step uses: one for small layers, more as the work grows.

A step of batch B over connections W_i does four products per connection (forward
a W, backward δ̂ Wᵀ, and the co-activity and update outer products), so

    work = 8 · B · Σ_i |W_i|            floating-point operations per step
    n    = clamp(⌊work / WORK_PER_THREAD⌋, 1, n_max)

with n_max the thread count torch had when zor was imported (its default: the cores).
Small networks (the quick start's 784-64-784 at B = 48: 38 MFLOP) get one thread:
waking a second one costs more than it saves, and on a machine with another busy
process a second thread waits for a core (the issue measured 5.3× slower).

The user's choice wins, first found of:

1. ``Zor(..., threads=n)`` (or ``net.threads = n``);
2. the environment variable ``ZOR_THREADS=n``;
3. an explicit torch thread count: ``torch.set_num_threads(n)`` called after zor was
   imported, or ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set (a set_num_threads call
   made before importing zor cannot be told from torch's default);

then the work-size rule above. A training step (:func:`for_step`, from ``train_batch``
and ``fit``) sets torch's process-wide thread count to the choice when it differs and
the user has not set one. The choice is made on a network's first step at a batch size
and kept while nothing it depends on changes (the batch size, the device,
``net.threads``, the thread count it left in force), so the environment is read then,
not on every step. The count stays set after the step, because
a count raised again between steps leaves torch's idle worker threads spinning beside
the one doing the work (measured: scoping the choice to each step and restoring 2
threads after it left the busy-machine quick start at 37 s per 500 steps; setting it
once, 2.9 s; docs/notes/step-cost.md). A count the engine set is not taken for the
user's. :func:`apply_threads` scopes a count to a block, for callers that want that.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Iterator, Optional

import torch

from zor.common.errors import ConfigError

if TYPE_CHECKING:
    from .network import Zor

__all__ = ["choose_threads", "apply_threads", "for_step", "user_threads", "check", "WORK_PER_THREAD"]

WORK_PER_THREAD = 200e6   # FLOP per step a thread must have to pay for itself (benchmarks/step_cost.py)
_AT_IMPORT = torch.get_num_threads()   # torch's thread count when zor was imported (its default, usually)
_engine_set: Optional[int] = None      # the count for_step last set (not the user's choice)
_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def check(threads: Optional[int]) -> Optional[int]:
    """``threads`` as given to Zor(...): None (decide per step) or an int ≥ 1."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be None (chosen from the work size) or an integer ≥ 1, got {threads!r}")
    return threads


def user_threads() -> Optional[int]:
    """The thread count the user asked for outside zor (ZOR_THREADS, torch.set_num_threads, OMP/MKL), or None."""
    env = os.environ.get("ZOR_THREADS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ConfigError(f"ZOR_THREADS must be an integer ≥ 1, got {env!r}")
        return int(env)
    now = torch.get_num_threads()
    if (now != _AT_IMPORT and now != _engine_set) or any(os.environ.get(name, "").strip() for name in _ENV):
        return now
    return None


def work(net: "Zor", batch_size: int) -> float:
    """Floating-point operations of one training step: 8 · B · Σ |W_i|."""
    return 8.0 * batch_size * sum(w.numel() for w in net.weights)


def choose_threads(net: "Zor", batch_size: int) -> int:
    """The torch thread count for training ``net`` at ``batch_size`` (the user's, else from the work size)."""
    if net.threads is not None:
        return net.threads
    user = user_threads()
    if user is not None:
        return user
    return max(1, min(_AT_IMPORT, int(work(net, batch_size) // WORK_PER_THREAD)))


@contextlib.contextmanager
def apply_threads(n: int) -> Iterator[int]:
    """Run the block with ``n`` torch threads, then restore the previous count."""
    before = torch.get_num_threads()
    if n == before:
        yield n
        return
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def for_step(net: "Zor", batch_size: int, device: Optional[torch.device] = None) -> int:
    """Set torch's thread count for a training step of ``net`` at ``batch_size`` on ``device`` (default: the
    network's; CPU only, a CUDA step leaves torch's setting alone); returns the count in force.

    The choice is made once per network, device and batch size and kept in ``net._thread_plan``; a step whose
    plan still holds (same batch size, device and ``net.threads``, and torch still has the count the plan left
    in force) costs one tuple comparison instead of the whole policy (~10 µs: the environment read, the weights'
    sizes summed). Any other thread count in force (torch.set_num_threads called by someone else) decides anew."""
    global _engine_set
    now = torch.get_num_threads()
    kind = (device or net.device).type
    plan = (batch_size, kind, net.threads, now, _AT_IMPORT, _engine_set)
    if plan == net._thread_plan:
        return now
    n = choose_threads(net, batch_size) if kind == "cpu" else now
    if n != now:
        torch.set_num_threads(n)
        _engine_set = n
    net._thread_plan = (batch_size, kind, net.threads, n, _AT_IMPORT, _engine_set)
    return n
