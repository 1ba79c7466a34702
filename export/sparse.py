"""Event-driven (sparse) connections: a layer's spikes pick the weight rows that are read.

A dense connection computes h_{j+1} = a_j W_j over every row of W_j, whether 5 % or
100 % of layer j's units spiked. A unit that did not spike sends its rest value
a = f_j(0) (0 for identity, relu, tanh; ½ for sigmoid), so with the active set
A = {units that spiked}

    h_{j+1} = Σ_{u ∈ A} (a_u − f_j(0)) W_j[u, :]  +  f_j(0) · Σ_u W_j[u, :]

and only |A| rows are read. Built from standard ONNX operators (no custom ops: any
onnxruntime runs it), as :mod:`zor.common.format` names them:

    batch1   mask = Reshape(s_j, (n_j,))                     B = 1 only (else Reshape fails)
    union    mask = Cast(ReduceMax(Cast(s_j, int32), axis 0), bool)   B ≤ max_batch: the
             units that spiked in any row of the batch
    values   v = Compress(a_j, mask, axis 1) [− f_j(0)]     (B, |A|)
    float32  h = MatMul(v, Compress(W_j, mask, axis 0))     [+ sparse_bias_j]
    int8     batch1: (v_q, s_v, z_v) = DynamicQuantizeLinear([a_j − f_j(0) | 0])   all n_j values and a
             zero column, (1, n_j + 1) uint8 (the units that did not spike are 0 there)
             idx = [NonZero(mask) | −1]                        the active units and the last entry
             h = Cast(MatMulInteger(Gather(v_q, idx, axis 1), Gather(W_q, idx, axis 0), z_v)) · (s_v · scale)
                 [+ bias]
             union: h = Mul(MatMul(v, Cast(Compress(W_q, mask, axis 0), float)), scale) [+ bias]

Row groups: a connection whose expected gathered block (r · n_j · n_{j+1} · itemsize bytes)
exceeds the device profile's ``sparse_single_group_bytes`` splits its rows into G contiguous
groups (G = that block / ``sparse_group_bytes``, at most ``sparse_max_groups``; defaults 4 MiB,
2 MiB, 16, the AVX-512 profile 1 MiB, 1 MiB, 32): group k gathers mask ∧ group_k and multiplies
it, and ``Sum`` adds the G partial products. Each gathered block then stays in cache between the
copy and the MatMul (on the AVX2 machine a 4096-wide layer at 30 % activity ran 1.7× faster in 8
groups than in one; on an Intel Xeon with 2 MiB of L2, 0.6-1 MB groups were fastest), at a few
µs of extra nodes (:func:`~zor.export.paths.choose_groups`).

``int8`` rows: W_q = round(W / scale) per output unit (symmetric, scale = max |W[:, c]| / 127).
The union form keeps the values float (weight-only: one value scale per call would make a
row's output depend on the other rows of its batch). The batch-1 form quantizes the values per
call (DynamicQuantizeLinear: uint8, s_v = (max(0, v) − min(0, v)) / 255, z_v = round(−min(0, v) / s_v),
round half to even), and the product of the gathered int8 rows is an integer one (MatMulInteger, int32 sums; the G groups' sums are added in int32). The gather always
takes one entry more, index −1: column n_j of [v | 0], which quantizes to exactly z_v, times row
n_j − 1 of W_q, so it adds (z_v − z_v) · W_q[n_j − 1] = 0, and no group's inner dimension is ever
empty (onnxruntime's MatMulInteger returns uninitialised memory for an empty one). A gathered
int8 row is a quarter of a float32 one, and no Cast of the rows is needed
(docs/notes/sparse-avx512.md has the forms measured).

Which connections go sparse is the path plan's choice (:mod:`zor.export.paths`); its
names are importable from here too, so ``zor.export.sparse`` names the whole feature (an
example of a plan is in :mod:`zor.export.paths`).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from onnx import TensorProto

from zor.common import format as fmt
from zor.common.errors import ConfigError, UnsupportedLayerError

from .paths import (
    DEFAULT_MAX_BATCH,
    GROUP_BYTES,
    MAX_GROUPS,
    REST_VALUES,
    SINGLE_GROUP_BYTES,
    ConnectionPath,
    PathPlan,
    choose_groups,
    dense_plan,
    effective_break_even,
    measure_rates,
    plan_paths,
    rest_value,
)
from .registry import LayerContext, connection_prefix, kind_of

__all__ = ["quantize_rows", "emit_sparse", "rest_bias",
           # the path plan (zor.export.paths)
           "REST_VALUES", "rest_value", "ConnectionPath", "PathPlan", "dense_plan", "plan_paths",
           "effective_break_even", "measure_rates", "choose_groups", "DEFAULT_MAX_BATCH", "GROUP_BYTES",
           "SINGLE_GROUP_BYTES", "MAX_GROUPS"]

def quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(W_q int8, scale float32 per output unit): symmetric, scale = max|W[:, c]| / 127 (1 where a column is 0)."""
    w = np.asarray(w, np.float32)
    peak = np.abs(w).max(axis=0)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale


def _rest_bias(w_effective: np.ndarray, f0: float) -> np.ndarray:
    """f(0) · Σ_u W[u, :] in float64, stored float32."""
    return (f0 * np.asarray(w_effective, np.float64).sum(axis=0)).astype(np.float32)


def emit_sparse(ctx: LayerContext, path: ConnectionPath, form: str, target: str) -> str:
    """Emit connection j = ctx.index − 1 in sparse form into ``ctx.graph``; returns ``target`` (h_{j+1}).

    With ``path.groups`` = G > 1 the rows are split into G contiguous groups; group k
    gathers its own active rows (mask ∧ group_k) and multiplies them, and the G partial
    sums are added (Sum): each gathered block stays small enough to be multiplied
    while still in cache.
    """
    g, j, prev = ctx.graph, ctx.index - 1, ctx.prev_layer
    _check(ctx, path, form)
    p = connection_prefix(j)
    f0 = rest_value(prev.activation)
    source = ctx.input_name
    if f0 != 0.0:
        source = g.node("Sub", [source, g.scalar(f0, f"rest_{j}")], [f"shifted_{j}"], name=p + "shift")
    w = np.asarray(ctx.weight, np.float32)
    if path.precision == "int8":
        q, scale = quantize_rows(w)
        rows, w_eff = g.initializer(fmt.weight_int8(j), q), q.astype(np.float32) * scale
    else:
        rows, w_eff, scale = g.initializer(fmt.weight(j), w), w, None
    masks = _group_masks(ctx, _active_mask(ctx, form), path.groups)
    if scale is not None and form == "batch1":
        h = _integer_product(ctx, source, rows, g.initializer(fmt.weight_scale(j), scale), masks,
                             target if f0 == 0.0 else f"scaled_{j}")
    else:
        out = target if f0 == 0.0 and scale is None else f"active_sum_{j}"
        partials = [_gathered_product(ctx, source, rows, group, scale is not None, out if len(masks) == 1 else
                                      f"active_sum_{j}{group[2]}") for group in masks]
        h = partials[0] if len(masks) == 1 else g.node("Sum", partials, [out], name=p + "sum")
        if scale is not None:                   # union form, int8 rows: weight-only, the scale after the product
            h = g.node("Mul", [h, g.initializer(fmt.weight_scale(j), scale)], [target if f0 == 0.0 else f"scaled_{j}"],
                       name=p + "scale")
    if f0 != 0.0:
        h = g.node("Add", [h, g.initializer(fmt.sparse_bias(j), _rest_bias(w_eff, f0))], [target], name=p + "rest")
    return h


def _check(ctx: LayerContext, path: ConnectionPath, form: str) -> None:
    """Refuse what has no sparse form: a non-dense layer, the input layer, an unknown form or precision."""
    j = ctx.index - 1
    if kind_of(ctx.layer) != "dense" or ctx.prev_layer is None:
        raise UnsupportedLayerError(f"connection {j}: no sparse form for a {kind_of(ctx.layer)!r} layer")
    if form not in fmt.FORMS:
        raise ConfigError(f"sparse form must be one of {', '.join(fmt.FORMS)}, got {form!r}")
    if path.precision not in ("float32", "int8"):
        raise ConfigError(f"connection {j}: sparse rows precision must be float32 or int8, got {path.precision!r}")


def _active_mask(ctx: LayerContext, form: str) -> str:
    """The (n_j,) bool mask of the rows to read: this row's spikes (batch1) or the batch's union."""
    g, j = ctx.graph, ctx.index - 1
    p, s = connection_prefix(j), fmt.spikes(j)
    if form == "batch1":
        flat = g.initializer(f"spikes_shape_{j}", np.array([ctx.prev_layer.size], dtype=np.int64))
        return g.node("Reshape", [s, flat], [f"active_{j}"], name=p + "mask")
    si = g.node("Cast", [s], [f"spikes_int_{j}"], name=p + "cast", to=TensorProto.INT32)
    anyi = g.node("ReduceMax", [si], [f"union_int_{j}"], name=p + "union", axes=[0], keepdims=0)
    return g.node("Cast", [anyi], [f"active_{j}"], name=p + "mask", to=TensorProto.BOOL)


def _group_masks(ctx: LayerContext, mask: str, groups: int) -> list[tuple[str, str, str]]:
    """(mask, node-name tag, tensor suffix) per row group: the mask itself for one group, else
    mask ∧ group_k for G contiguous groups of rows."""
    g, j, n = ctx.graph, ctx.index - 1, ctx.prev_layer.size
    groups = max(1, min(int(groups), n))
    if groups == 1:
        return [(mask, "", "")]
    p = connection_prefix(j)
    bounds = np.linspace(0, n, groups + 1).astype(int)
    masks = []
    for k in range(groups):
        member = np.zeros(n, dtype=bool)
        member[bounds[k]:bounds[k + 1]] = True
        ind = g.initializer(f"group_{j}_{k}", member)
        masks.append((g.node("And", [mask, ind], [f"active_{j}_{k}"], name=p + f"group{k}.mask"),
                      f"group{k}.", f"_{k}"))
    return masks


def _gathered_product(ctx: LayerContext, source: str, rows: str, group: tuple[str, str, str], int8: bool,
                      out: str) -> str:
    """MatMul of the active values with the active rows of one row group (mask, tag, suffix) into ``out``
    (int8 rows, union form: cast to float first)."""
    g, j = ctx.graph, ctx.index - 1
    mask, tag, suffix = group
    p = connection_prefix(j) + tag
    vals = g.node("Compress", [source, mask], [f"active_values_{j}{suffix}"], name=p + "values", axis=1)
    picked = g.node("Compress", [rows, mask], [f"active_rows_{j}{suffix}"], name=p + "rows", axis=0)
    if int8:
        picked = g.node("Cast", [picked], [f"active_rows_float_{j}{suffix}"], name=p + "rows_float",
                        to=TensorProto.FLOAT)
    return g.node("MatMul", [vals, picked], [out], name=p + "matmul")


def _integer_product(ctx: LayerContext, source: str, rows: str, scale: str, masks: list[tuple[str, str, str]],
                     out: str) -> str:
    """h = Cast(Σ_k MatMulInteger(v_q[idx_k], W_q[idx_k], z_v)) · (s_v · scale) (module docstring, int8)."""
    g, j = ctx.graph, ctx.index - 1
    p = connection_prefix(j)
    peak = g.node("ReduceMax", [source], [f"values_peak_{j}"], name=p + "peak", axes=[1], keepdims=1)   # (B, 1)
    zero = g.node("Mul", [peak, g.scalar(0.0, "zero")], [f"values_zero_{j}"], name=p + "zero")          # (B, 1) of 0
    padded = g.node("Concat", [source, zero], [f"values_padded_{j}"], name=p + "pad", axis=1)          # (B, n + 1)
    vq = [f"values_q_{j}", f"values_scale_{j}", f"values_zero_point_{j}"]
    g.node("DynamicQuantizeLinear", [padded], vq, name=p + "quantize")
    last = g.initializer(f"last_index_{j}", np.array([[-1]], dtype=np.int64))
    flat = g.initializer(f"flat_{j}", np.array([-1], dtype=np.int64))
    sums = []
    for mask, tag, suffix in masks:
        q = p + tag
        nz = g.node("NonZero", [mask], [f"active_index_{j}{suffix}"], name=q + "index")              # (1, a)
        both = g.node("Concat", [nz, last], [f"picked_index_{j}{suffix}"], name=q + "index_last", axis=1)
        idx = g.node("Reshape", [both, flat], [f"picked_{j}{suffix}"], name=q + "index_flat")        # (a + 1,)
        vals = g.node("Gather", [vq[0], idx], [f"active_values_{j}{suffix}"], name=q + "values", axis=1)
        picked = g.node("Gather", [rows, idx], [f"active_rows_{j}{suffix}"], name=q + "rows", axis=0)
        sums.append(g.node("MatMulInteger", [vals, picked, vq[2]], [f"active_int_{j}{suffix}"], name=q + "matmul"))
    acc = sums[0]
    for k, part in enumerate(sums[1:], 1):                 # int32: exact, whatever the order (Sum has no int32)
        acc = g.node("Add", [acc, part], [f"active_int_sum_{j}_{k}"], name=p + f"sum{k}")
    wide = g.node("Cast", [acc], [f"active_sum_{j}"], name=p + "float", to=TensorProto.FLOAT)
    both_scales = g.node("Mul", [vq[1], scale], [f"product_scale_{j}"], name=p + "product_scale")
    return g.node("Mul", [wide, both_scales], [out], name=p + "scale")


def rest_bias(w: np.ndarray, activation: str, precision: str = "float32") -> Optional[np.ndarray]:
    """``sparse_bias_j`` for weights ``w`` of a layer with ``activation`` (None when f(0) = 0)."""
    f0 = rest_value(activation)
    if f0 == 0.0:
        return None
    if precision == "int8":
        q, scale = quantize_rows(w)
        return _rest_bias(q.astype(np.float32) * scale, f0)
    return _rest_bias(w, f0)
