"""The co-activity of a learnable step graph on the active post units only: W_iᵀ in row blocks of post units.

For a rule whose E has the post spikes as its post factor (post_spikes, gated), E[:, k] = 0 and so
U[:, k] = 0 for every post unit k that spiked for no row of the batch. The graph holds such a
connection's W_i transposed (W_iᵀ (n_{i+1}, n_i), its moments too: ``spec["transposed"]``) and forms
U only on the K active units, then puts each block's rows back with one row gather:

    on      = [mean_b s_{i+1} > 0]                       (n_{i+1},)  which post units spiked at all
    cols    = nonzero(on) ++ [n_{i+1}]                   (K + 1,)    the last one points at a zero row
    Gᵀ_K    = ((δ̂ / B)ᵀ ; 0)[cols] a_i                  (K + 1, n_i)  last row 0 (rows of the small side
    Eᵀ_K    = ((s_{i+1} / B)ᵀ ; 0)[cols] a_i             (K + 1, n_i)   gathered: contiguous, cheap)
    Uᵀ_K    = Gᵀ_K ⊙ clip(Eᵀ_K, 0, 1);   ‖U‖² = ‖Uᵀ_K‖²  (the norm clip sees the same sum)
    map     = cumsum(on) · on − 1                        (n_{i+1},)  k ↦ its row of Uᵀ_K, silent ↦ −1 (zero row)
    Uᵀ[lo:hi] = Uᵀ_K[map[lo:hi]]                         row gathers per block of post units: copies of
                                                         n_i-float rows, no transpose, no scatter

so the products cost K/n_{i+1} of the full ones, and the row blocks' element-wise chain (the moments, the
step, the clamp: :func:`zor.export.learnable_graph._optimise`) runs on Uᵀ's blocks unchanged. The
forward product reads W_i as c_{i+1} = a_i (W_iᵀ)ᵀ (Gemm, transB) and the signal sent down is
δ̂ W_iᵀ = MatMul(δ̂, W_iᵀ). The result is the full form's: every sum is the same sum (the row gather
copies; silent rows are exact zeros).

Measured on the 2-core Xeon (one thread, batch 48, 784 × 256, the products, U and its norm alone,
shared machine at load ≈ 2): full form 385–402 µs; masked 166 µs with 18 % of the post units active,
200 µs at 27 %, 334 µs at 50 %, 476 µs at 75 %. With most units active the masked form costs more
(its U is formed unblocked, then gathered), so a masked file also carries a second step graph,
built with ``every_unit`` (:func:`every_unit_update`: the same layout, every product, block by
block), which the Learner runs when more than 60 % of the post units spiked
(zor.runtime.learner_forms). A trained layer under homeostasis spikes for some row in nearly
every unit (the 10th-class example's hidden layer: 94–96 % of 256 in a batch of 20–48).

Example:
    >>> masked_ops()
    ('Greater', 'NonZero', 'Reshape', 'Concat', 'Transpose', 'Pad', 'Gather', 'Gemm', 'Clip', 'Mul', 'Cast', 'CumSum', 'Sub', 'Split')
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from onnx import TensorProto, helper

from .learnable_blocks import masked_connections, transposed_names

__all__ = ["masked_ops", "masked_layout", "masked_update", "every_unit_update", "turned"]


def turned(spec: dict, i: int) -> bool:
    """W_i held as W_iᵀ and updated on its active post units."""
    return f"weight_{i}" in spec.get("transposed", ())


def masked_layout(sizes: list, rule: str, always: list, novelty: list, optimizer: str) -> tuple[list[int], list[str]]:
    """(the connections updated on their active post units, the state tensors held transposed for them)."""
    masked = masked_connections(sizes, rule, always, novelty)
    return masked, transposed_names(masked, optimizer)


def masked_ops() -> tuple[str, ...]:
    """The operators :func:`masked_update` adds beyond the step graph's own (for the format's list)."""
    return ("Greater", "NonZero", "Reshape", "Concat", "Transpose", "Pad", "Gather", "Gemm", "Clip", "Mul", "Cast",
            "CumSum", "Sub", "Split")


def every_unit_update(g: Any, spec: dict, i: int, a_i: str, d_b: str, post_b: str,
                      blocks: list[tuple[str, int, int]]) -> tuple[list[str], Optional[str]]:
    """([Uᵀ of each block of post units], ‖U‖² or None): the same update from every product, block by block
    (the step graph for batches where nearly every post unit spikes; the same layout, W_iᵀ)."""
    d_t = g.op("Transpose", d_b, perm=[1, 0])                                    # (n_{i+1}, B)
    s_t = g.op("Transpose", post_b, perm=[1, 0])
    us, ssq = [], None
    for _, lo, hi in blocks:
        rows = g.const(np.arange(lo, hi), np.int64)
        gm = g.op("Gemm", g.op("Gather", d_t, rows, axis=0), a_i)                # Gᵀ[lo:hi] (hi − lo, n_i)
        e = g.op("Gemm", g.op("Gather", s_t, rows, axis=0), a_i)
        us.append(g.op("Mul", gm, g.op("Clip", e, g.const(0.0), g.const(1.0))))
        if spec["layers"][i]["max_update_norm"] is not None:
            part = g.op("ReduceSumSquare", us[-1], keepdims=0)
            ssq = part if ssq is None else g.op("Add", ssq, part)
    return us, ssq


def masked_update(g: Any, spec: dict, i: int, a_i: str, mean_p: str, d_b: str, post_b: str,
                  blocks: list[tuple[str, int, int]]) -> tuple[list[tuple[str, str]], Optional[str]]:
    """([(Uᵀ_K, its rows of each block of post units)], ‖U‖² or None) of connection i (see the module
    docstring); ``g`` the graph builder of zor.export.learnable_graph, ``a_i`` (B, n_i), ``mean_p`` the post
    layer's mean_b s (n_{i+1},), ``d_b`` = δ̂ / B and ``post_b`` = s_{i+1} / B (B, n_{i+1})."""
    if getattr(g, "every_unit", False):
        return every_unit_update(g, spec, i, a_i, d_b, post_b, blocks)
    n_p = int(spec["sizes"][i + 1])
    on = g.op("Greater", mean_p, g.const(0.0))                                    # (n_{i+1},) bool
    cols = g.op("Reshape", g.op("NonZero", on), g.const([-1], np.int64))          # (K,)
    cols = g.op("Concat", cols, g.const([n_p], np.int64), axis=0)                 # (K + 1,): + the zero column
    pad = g.once(("pad_row",), lambda: g.const([0, 0, 1, 0], np.int64))         # one zero row at the end
    d_k = g.op("Gather", g.op("Pad", g.op("Transpose", d_b, perm=[1, 0]), pad), cols, axis=0)   # (K + 1, B)
    s_k = g.op("Gather", g.op("Pad", g.op("Transpose", post_b, perm=[1, 0]), pad), cols, axis=0)
    gm = g.op("Gemm", d_k, a_i)                                                   # Gᵀ_K (K + 1, n_i)
    e = g.op("Gemm", s_k, a_i)                                                    # Eᵀ_K
    u = g.op("Mul", gm, g.op("Clip", e, g.const(0.0), g.const(1.0)))              # Uᵀ_K, last row 0
    ssq = None
    if spec["layers"][i]["max_update_norm"] is not None:
        ssq = g.op("ReduceSumSquare", u, keepdims=0)
    on_i = g.op("Cast", on, to=TensorProto.INT64)
    rows = g.op("Sub", g.op("Mul", g.op("CumSum", on_i, g.const(0, np.int64)), on_i), g.const(1, np.int64))
    parts = [rows]                      # Uᵀ[lo:hi] = Uᵀ_K[rows[lo:hi]], gathered by zor.export.learnable_optim
    if len(blocks) > 1:
        parts = [f"{rows}_{k}" for k in range(len(blocks))]
        sizes = g.const([hi - lo for _, lo, hi in blocks], np.int64)
        g.nodes.append(helper.make_node("Split", [rows, sizes], parts, name=f"{rows}_split", axis=0))
    return [(u, part) for part in parts], ssq
