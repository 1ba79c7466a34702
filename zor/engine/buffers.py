"""The reused tensors of a training step: kept by the network, allocated once, viewed per shape.

A fresh multi-MB tensor per step costs page faults that can exceed the product it holds,
and separate tensors per connection a larger working set (the step's weights, moments and
buffers then no longer fit the core's cache). So the learning step writes into:

    flat(net, "grad", shape)   the gradient of one connection at a time (a fused optimizer
                               steps W_i before the next connection's update is formed)
    flat(net, "work", shape)   scratch: E, the masked co-activity's G and E, |δ|
    grad_buffer(net, i, W_i)   W_i's own gradient, for an optimizer that steps every
                               connection at once after the loop
    masked(net, i, W_i, spiked)  W_i's gradient for the masked co-activity: 0 outside the
                               columns of the units that spiked the last time, so only the
                               columns of units that fell silent since are set to 0, not
                               the whole buffer (the active units change little per step)
    ones(net, shape)           a read-only broadcast of one 1 (the spikes s ≡ 1 of a layer
                               that always spikes)

A flat buffer grows to the largest shape asked of it; its views are cached per (name,
shape, dtype, device), so a step asks for them without a slice or view call.

Example:
    >>> import torch
    >>> from zor import Zor, Layer
    >>> net = Zor([Layer(3), Layer(2)], device="cpu")
    >>> flat(net, "work", (2, 2), torch.empty(0)).shape
    torch.Size([2, 2])
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .network import Zor

__all__ = ["flat", "grad_buffer", "masked", "ones"]


def flat(net: "Zor", name: str, shape: tuple, like: torch.Tensor) -> torch.Tensor:
    """A view of ``shape`` on the network's flat buffer ``name``, in ``like``'s dtype and device."""
    key = (name, shape, like.dtype, like.device)
    view = net._scratch.get(key)
    if view is None:
        base_key = (name, like.dtype, like.device)
        base, n = net._scratch.get(base_key), math.prod(shape)
        if base is None or base.numel() < n:
            for k in [k for k in net._scratch if k[0] == name and k[-2:] == base_key[1:]]:
                del net._scratch[k]             # the views of the smaller tensor
            base = net._scratch[base_key] = torch.empty(n, dtype=like.dtype, device=like.device)
        view = net._scratch[key] = base[:n].view(shape)
    return view


def grad_buffer(net: "Zor", i: int, w: torch.Tensor) -> torch.Tensor:
    """W_i's own gradient buffer, reused between steps (the optimizer step sets grad back to None, the buffer
    stays)."""
    buf = net._grad_buffers.get(i)
    if buf is None or buf.shape != w.shape or buf.device != w.device or buf.dtype != w.dtype:
        buf = net._grad_buffers[i] = torch.empty_like(w)
    return buf


def masked(net: "Zor", i: int, w: torch.Tensor, spiked: torch.Tensor) -> torch.Tensor:
    """W_i's gradient buffer for U on the columns of the post units where ``spiked`` (n_{i+1},) > 0, 0 in every
    other column (the caller writes those columns): the columns of units that spiked last time and not now are
    set to 0, the rest were 0 already."""
    held = net._scratch.get(("masked", i))
    if held is None or held[0].shape != w.shape or held[0].dtype != w.dtype or held[0].device != w.device:
        buf = torch.zeros_like(w)
    else:
        buf, before = held
        silent = torch.nonzero(before & (spiked == 0))              # (S, 1) units that fell silent
        if silent.shape[0]:
            buf.index_fill_(1, silent.squeeze(1), 0.0)
    net._scratch[("masked", i)] = (buf, spiked > 0)
    return buf


def ones(net: "Zor", shape: tuple, like: torch.Tensor) -> torch.Tensor:
    """A read-only tensor of ``shape`` holding 1 everywhere (a broadcast of one 1: no pass to fill it)."""
    key = ("ones", shape, like.dtype, like.device)
    view = net._scratch.get(key)
    if view is None:
        view = net._scratch[key] = torch.ones((), dtype=like.dtype, device=like.device).expand(shape)
    return view
