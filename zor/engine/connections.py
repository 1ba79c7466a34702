"""Connections: how layer i's values reach layer i+1, and the three products learning needs.

A connection owns no state; it knows the shape of its weight and four operations.
Every layer's values travel flat, (B, n); a connection reshapes as it needs.

Dense (``Layer`` after any layer), W (n_i, n_{i+1}):

    forward:   h = a W                       (B, n_{i+1})
    backward:  δ_below = δ Wᵀ                (B, n_i)
    outer:     O(x, y) = xᵀ y / B            (n_i, n_{i+1})   E and G of the rule
    rows:      O(x, y) ⊙ r = (x ⊙ rᵀ / B)ᵀ y   a per-pre-unit factor r (n_i, 1) folded into the product

Conv (``Conv`` layer), W (C_{i+1}, C_i, k, k), stride s, padding p, on maps
(C_i, H, W) → (C_{i+1}, H′, W′) with H′ = ⌊(H + 2p − k)/s⌋ + 1:

    forward:   h = conv2d(a, W)
    backward:  δ_below = conv_transpose2d(δ, W)      the transposed convolution
    outer:     O(x, y)[o, c, u, v] = Σ_{b, p} x[b, c, p + (u, v)] · y[b, o, p] / (B · P)

i.e. the co-activity and update of a shared kernel weight average over the batch and
all P = H′·W′ positions it is applied at.

Example:
    >>> import torch
    >>> Dense().outer(torch.tensor([[1., 2.]]), torch.tensor([[3.]]))
    tensor([[3.],
            [6.]])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import torch
import torch.nn.functional as F

from .events import batch_mean

if TYPE_CHECKING:
    from .layer import Layer

__all__ = ["Connection", "Dense", "Conv2d", "connect"]


class Connection:
    kind = "base"

    def weight_shape(self) -> tuple:
        raise NotImplementedError

    def fan(self) -> tuple[int, int]:
        """(fan_in, fan_out) for the initial weight scale."""
        raise NotImplementedError

    def forward(self, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def backward(self, d: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def outer(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def outer_pair(self, x: torch.Tensor, y1: torch.Tensor, y2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(O(x, y1), O(x, y2)); one product where the connection can fuse them."""
        return self.outer(x, y1), self.outer(x, y2)

    def outer_ones(self, x: torch.Tensor) -> torch.Tensor:
        """O(x, 1): the outer product with a post side that is 1 everywhere, in a shape that
        broadcasts against the weight (it is the same for every post unit)."""
        raise NotImplementedError

    def outer_rows(self, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """O(x, y) ⊙ rows into ``out``, for a factor ``rows`` shaped like :meth:`outer_ones` (one per pre unit)."""
        return torch.mul(self.outer(x, y), rows, out=out)


class Dense(Connection):
    """Every unit of layer i to every unit of layer i+1."""

    kind = "dense"

    def __init__(self, n_in: int = 0, n_out: int = 0) -> None:
        self.n_in, self.n_out = n_in, n_out
        self._scratch = torch.empty(0)   # reused output of the sparse outer product (a cache, not state)

    def weight_shape(self) -> tuple:
        return (self.n_in, self.n_out)

    def fan(self) -> tuple[int, int]:
        return self.n_in, self.n_out

    def forward(self, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if a.is_sparse:                                         # event input (zor.engine.events): ∝ nonzeros
            return torch.sparse.mm(a, w)                        # (B, n_{i+1})
        return a @ w                                            # (B, n_{i+1})

    def backward(self, d: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.linear(d, w)                                   # d Wᵀ (B, n_i), one call

    def outer(self, x: torch.Tensor, y: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        # xᵀ y with 1/B as the product's own scale (alpha): no elementwise pass; a COO x (B, n_i): over its nonzeros
        if out is None:
            out = torch.empty(x.shape[1], y.shape[1], dtype=y.dtype, device=y.device)
        return torch.addmm(out, x.t(), y, beta=0.0, alpha=1.0 / x.shape[0], out=out)   # (n_i, n_{i+1})

    def outer_pair(self, x: torch.Tensor, y1: torch.Tensor, y2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.cat([y1, y2], dim=1)
        # into a buffer reused across steps: a fresh multi-MB tensor each step costs page
        # faults that can exceed the product itself. The two halves stay valid until the
        # next outer_pair on this connection (the rule uses them within the step).
        n = x.shape[1] * y.shape[1]
        if self._scratch.numel() < n or self._scratch.device != y.device or self._scratch.dtype != y.dtype:
            self._scratch = torch.empty(n, dtype=y.dtype, device=y.device)
        out = self._scratch[:n].view(x.shape[1], y.shape[1])
        both = self.outer(x, y, out)                            # (n_i, 2 n_{i+1}): one matmul
        return both[:, : y1.shape[1]], both[:, y1.shape[1]:]

    def outer_ones(self, x: torch.Tensor) -> torch.Tensor:
        """mean_b x as a column (n_i, 1)."""
        return batch_mean(x)[:, None]

    def outer_rows(self, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """O(x, y) ⊙ rows = (x ⊙ rowsᵀ / B)ᵀ y: the per-pre-unit factor on the small (B, n_i) side, one
        product into ``out`` and no pass over the (n_i, n_{i+1}) result. ``rows``: (n_i, 1) as :meth:`outer_ones`
        gives it, or an (n_i,) vector (scaled by 1/B in place: the caller's)."""
        if x.is_sparse:
            return super().outer_rows(x, y, rows[:, None] if rows.dim() == 1 else rows, out)
        if rows.dim() == 1:
            return torch.mm((x * rows.mul_(1.0 / x.shape[0])).T, y, out=out)   # (n_i, n_{i+1})
        return torch.mm((x * (rows.T * (1.0 / x.shape[0]))).T, y, out=out)   # (n_i, n_{i+1})


class Conv2d(Connection):
    """A shared k×k kernel from a (C_i, H, W) map to a (C_{i+1}, H′, W′) map."""

    kind = "conv"

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int], kernel_size: int, stride: int,
                 padding: int) -> None:
        self.in_shape = tuple(int(v) for v in in_shape)        # (C_i, H, W)
        self.out_shape = tuple(int(v) for v in out_shape)      # (C_{i+1}, H′, W′)
        self.k, self.stride, self.padding = int(kernel_size), int(stride), int(padding)
        # conv_transpose2d must give back exactly H × W when (H + 2p − k) is not a multiple of s
        c, h, w = self.in_shape
        _, ho, wo = self.out_shape
        self.output_padding = (h + 2 * self.padding - self.k - (ho - 1) * self.stride,
                               w + 2 * self.padding - self.k - (wo - 1) * self.stride)

    def weight_shape(self) -> tuple:
        return (self.out_shape[0], self.in_shape[0], self.k, self.k)

    def fan(self) -> tuple[int, int]:
        return self.in_shape[0] * self.k * self.k, self.out_shape[0] * self.k * self.k

    def _maps(self, t: torch.Tensor, shape: tuple) -> torch.Tensor:
        return t.reshape(t.shape[0], *shape)

    def forward(self, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        h = F.conv2d(self._maps(a, self.in_shape), w, stride=self.stride, padding=self.padding)
        return h.flatten(1)                                     # (B, C_{i+1}·H′·W′)

    def backward(self, d: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = F.conv_transpose2d(self._maps(d, self.out_shape), w, stride=self.stride, padding=self.padding,
                               output_padding=self.output_padding)
        return x.flatten(1)                                     # (B, C_i·H·W)

    def outer(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Σ over batch and positions of x-patch × y, / (B·P), for each kernel weight."""
        ym = self._maps(y, (y.shape[1] // (self.out_shape[1] * self.out_shape[2]),) + self.out_shape[1:])
        o = torch.nn.grad.conv2d_weight(self._maps(x, self.in_shape),
                                        (ym.shape[1], self.in_shape[0], self.k, self.k), ym,
                                        stride=self.stride, padding=self.padding)
        positions = self.out_shape[1] * self.out_shape[2]
        return o / (x.shape[0] * positions)                     # (C_out·m, C_i, k, k)

    def outer_pair(self, x: torch.Tensor, y1: torch.Tensor, y2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        both = self.outer(x, torch.cat([y1, y2], dim=1))        # flat concat = channel concat
        c = self.out_shape[0]
        return both[:c], both[c:]

    def outer_ones(self, x: torch.Tensor) -> torch.Tensor:
        """One all-ones output channel: (1, C_i, k, k), broadcast over the C_{i+1} channels."""
        ones = torch.ones(x.shape[0], self.out_shape[1] * self.out_shape[2], dtype=x.dtype, device=x.device)
        return self.outer(x, ones)


def connect(pre: "Layer", post: "Layer") -> Connection:
    """The connection from layer ``pre`` into layer ``post``: a Conv2d into a Conv layer, else Dense."""
    if post.kind == "conv":
        return Conv2d(pre.map_shape, post.map_shape, post.kernel_size, post.stride, post.padding)
    return Dense(pre.size, post.size)
