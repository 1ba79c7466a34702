"""The columns exchange's update of its own blocks (:mod:`zor.engine.tensorparallel`): one all-reduce, one fused step.

Each rank holds U_i[:, κ] (n_i, k) of every connection, formed from the whole batch. The
scale and the norm clip need sums over all of U_i and over the whole error, so one
all-reduce carries, per step,

    Σ_{b, j∈κ} |δ_bj|                   → ε̄ = max(Σ / (B · n_L), floor)       the error scale
    Σ_{j∈κ} |δ_bj|  for every sample b  → e_b = Σ / n_L                      fit's per-sample errors (B,)
    Σ_{k∈κ} U_i[j, k]²  for every row j → ‖U_i‖ = ‖(‖U_i[j]‖)_j‖              the norm clip

and then, on the own columns only,

    U_i ← −ε̄ U_i min(1, c / ‖U_i‖)
    W_i[:, κ] ← fused Adam/AdamW(W_i[:, κ]; m_i[:, κ], v_i[:, κ]),  clamp to ±max_weight

Only ε̄ and ‖U_i‖ are summed in another order than one process's (an ulp), which is why the
columns exchange matches one process to float rounding, not bit for bit.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import torch

from . import learning, rules

if TYPE_CHECKING:
    from .network import Zor

__all__ = ["statistics", "adam_step"]


def statistics(net: "Zor", stats: list[torch.Tensor], us: list[torch.Tensor],
               batch: int) -> tuple[object, list[torch.Tensor], Optional[torch.Tensor]]:
    """One all-reduce of ``stats`` (Σ|error| (1,), optionally its per-sample sums (B,)) and every U_i's partial row
    sums of squares, on a batch of ``batch`` rows in all; (ε̄, [‖U_i‖], the summed per-sample sums or None)."""
    import torch.distributed as dist

    summed = torch.cat(stats + [rules.row_norms(u).square_() for u in us])
    dist.all_reduce(summed)
    at = 1 + (stats[1].shape[0] if len(stats) > 1 else 0)
    sums = summed[1:at] if len(stats) > 1 else None
    norms = []
    for u in us:
        norms.append(rules.update_norm(u, summed[at:at + u.shape[0]].sqrt()))   # ‖(‖U_i[j]‖)_j‖
        at += u.shape[0]
    if not net.config.error_scaling:
        return 1.0, norms, sums
    scale = (summed[0] / (batch * net.layers[-1].size)).clamp_min(net.config.min_error_scale).reshape(())
    return scale, norms, sums


def adam_step(net: "Zor", w: list[torch.Tensor], us: list[torch.Tensor],
              moments: list[tuple[torch.Tensor, torch.Tensor]], steps: list[torch.Tensor], scale,
              norms: list[torch.Tensor]) -> None:
    """U_i ← −ε̄ U_i min(1, c/‖U_i‖), then the fused Adam/AdamW kernel on the own columns ``w`` (n_i, k) and their
    ``moments`` (denormals flushed on a CPU, as learning does; ``steps``: each W_i's step count), then the clamp."""
    for i, (u, norm) in enumerate(zip(us, norms)):
        limit = net.layers[i].max_update_norm
        rules.clip_norms([u], math.inf if limit is None else limit, -scale, norms=norm.reshape(1))
    torch._foreach_add_(steps, 1)
    kernel, kwargs = learning.fused_kernel(net.optimizer)
    flush = us[0].device.type == "cpu" and learning._TINY * learning._ONE != 0.0 and torch.set_flush_denormal(True)
    try:
        kernel(w, us, [m for m, _ in moments], [v for _, v in moments], [], steps, **kwargs)
    finally:
        if flush:
            torch.set_flush_denormal(False)
    for layer, wi in zip(net.layers, w):
        if layer.max_weight is not None:
            wi.clamp_(-layer.max_weight, layer.max_weight)
