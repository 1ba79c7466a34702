"""Event-driven input: a batch that is mostly zeros, kept as (sample, unit, value) events.

Give :meth:`zor.Zor.forward` (or ``train_batch``, ``fit``, ``predict``) the input
batch x (B, n_0) as a torch sparse tensor (COO or CSR) and the input layer keeps it
sparse. With θ_0 ≥ 0 and f_0(0) = 0 a zero input neither spikes nor sends, so

    s_0 = [x > θ_0],  a_0 = f_0(x ⊙ s_0)    on the nonzero values only
    h_1 = a_0 W_0                           sparse × dense: cost ∝ events, not B·n_0

and learning touches only the rows of W_0 whose units had an event in the batch: a
unit j with no event has a_0[:, j] = 0, so E_0[j], G_0[j] and U_0[j] are 0. E, G and
U are computed on the n_u active rows and scattered into W_0's gradient; the
optimizer still steps every weight (moments and weight decay move all of them).
The results equal the dense path's up to float summation order.

Example (B = 2, n_0 = 4, θ_0 = 0.5, identity f_0):
    >>> import torch
    >>> x = torch.tensor([[0.0, 0.9, 0.0, 0.2], [0.0, 0.0, 0.0, 0.7]]).to_sparse()
    >>> s, a = gate(x, torch.full((4,), 0.5), lambda v: v)
    >>> a.to_dense()
    tensor([[0.0000, 0.9000, 0.0000, 0.0000],
            [0.0000, 0.0000, 0.0000, 0.7000]])
    >>> units, (t,) = compact(a)
    >>> units.tolist(), t.shape
    ([1, 3], torch.Size([2, 2]))
"""

from __future__ import annotations

from typing import Callable

import torch

from zor.common.errors import ConfigError, DTypeError, NonFiniteError, ShapeError

from .neuron import gate as gate_values
from .neuron import spike

__all__ = ["is_sparse", "input_batch", "as_events", "check_input_layer", "gate", "compact", "batch_mean"]


def is_sparse(x: object) -> bool:
    """True for a torch sparse tensor of any layout (COO, CSR, CSC, BSR, BSC)."""
    return isinstance(x, torch.Tensor) and x.layout != torch.strided


def input_batch(net, x: torch.Tensor, width: int, what: str, allow_sparse: bool) -> torch.Tensor:
    """The sparse batch ``x`` given to network ``net`` as its checked event input (only where
    ``allow_sparse``: the input batch; refused under distributed=True)."""
    if net.distributed:
        raise ConfigError(f"{what}: event (sparse) input batches are not supported with distributed=True "
                          "(each rank would update different rows of W_0): pass a dense batch")
    if not allow_sparse:
        raise DTypeError(f"{what}: expected a dense tensor or array, got a sparse {x.layout} tensor "
                         "(only the input batch may be sparse)")
    x = as_events(x, width, net.device, what)
    check_input_layer(net.layers[0].stateful, net.unit_threshold(0), net._acts[0], net.connections[0].kind)
    return x


def as_events(x: torch.Tensor, width: int, device: torch.device, what: str) -> torch.Tensor:
    """Check a sparse batch (B, width) and return it as a coalesced float32 COO tensor on ``device``."""
    if x.layout not in (torch.sparse_coo, torch.sparse_csr):
        raise DTypeError(f"{what}: expected a dense tensor or a sparse COO/CSR tensor, got layout {x.layout}")
    if not x.is_floating_point():
        raise DTypeError(f"{what}: expected floating-point values, got {x.dtype}")
    if x.ndim != 2 or x.shape[1] != width:
        raise ShapeError(f"{what}: expected shape (B, {width}), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ShapeError(f"{what}: expected at least one row, got an empty batch {tuple(x.shape)}")
    if x.layout == torch.sparse_csr:
        x = x.to_sparse_coo()
    x = x.to(device=device, dtype=torch.float32).coalesce()
    values = x.values()
    if values.numel() and not torch.isfinite(values).all():
        bad = int((~torch.isfinite(values)).sum())
        raise NonFiniteError(f"{what}: expected finite values, got {bad} NaN/inf entries")
    return x


def check_input_layer(stateful: bool, theta: torch.Tensor, act: Callable[[torch.Tensor], torch.Tensor],
                      kind_after: str) -> None:
    """Raise ConfigError unless a zero input is silent: stateless, θ_0 ≥ 0, f_0(0) = 0, dense W_0."""
    why = []
    if stateful:
        why.append("the input layer is stateful (its charges carry over, so zeros are not silent)")
    if bool((theta < 0).any()):
        why.append("some input thresholds are < 0 (a zero input would spike)")
    if float(act(torch.zeros(1, device=theta.device))[0]) != 0.0:
        why.append("the input activation maps 0 to a nonzero value")
    if kind_after != "dense":
        why.append(f"the first connection is {kind_after!r}; event input needs a dense one")
    if why:
        raise ConfigError("sparse input needs an input layer where a zero sends nothing; here "
                          + "; ".join(why) + ". Pass the batch as a dense tensor instead.")


def gate(x: torch.Tensor, theta: torch.Tensor, act: Callable[[torch.Tensor], torch.Tensor]
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, a) of a coalesced COO batch, on its values: s = [x > θ], a = f(x ⊙ s); same indices as x."""
    idx, v = x.indices(), x.values()                           # (2, nnz), (nnz,)
    s = spike(v, theta[idx[1]])
    a = act(gate_values(v, s))
    make = lambda vals: torch.sparse_coo_tensor(idx, vals, x.shape, is_coalesced=True,  # noqa: E731
                                                   check_invariants=False)
    return make(s.to(v.dtype)), make(a)


def compact(*ts: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(units (n_u,), each t restricted to them (B, n_u)): the active columns of coalesced COO
    batches that share one set of indices (the c, s and a of a :func:`gate`d input)."""
    idx = ts[0].indices()
    units, slot = torch.unique(idx[1], return_inverse=True)
    sub_idx = torch.stack([idx[0], slot])
    shape = (ts[0].shape[0], units.numel())
    return units, [torch.sparse_coo_tensor(sub_idx, t.values(), shape, is_coalesced=True, check_invariants=False)
                   for t in ts]


def batch_mean(t: torch.Tensor) -> torch.Tensor:
    """mean over the batch (dim 0) of a dense or COO tensor (B, n) → dense (n,)."""
    if t.is_sparse:
        return torch.sparse.sum(t, dim=0).to_dense() / t.shape[0]
    return t.mean(dim=0)
