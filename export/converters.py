"""Converters for the Zor layer kinds: ``dense`` and ``conv``, stateless or stateful.

For layer i, the converter first emits the connection into it (not for the input
layer), then the neuron, exactly as the engine computes them (:mod:`zor.engine.neuron`,
:mod:`zor.engine.connections`, ``Zor._forward``):

    dense   h_i = MatMul(a_{i−1}, W_{i−1})                      node connection{i−1}.matmul
            (or, for a sparse connection, only the rows of the units that spiked:
            :mod:`zor.export.sparse`)
    conv    h_i = Reshape(Conv(Reshape(a_{i−1}, (B, C, H, W)), W_{i−1},
                  strides, pads), (B, n_i))                     node connection{i−1}.conv

    c_i = h_i                                   stateless       → charge_i
    c_i = λ · state_in_i + h_i                  stateful        Mul, Add → charge_i
    s_i = Greater(c_i, θ_i)                     → spikes_i (bool); θ_i per unit
    g_i = c_i · Cast(s_i, float)                hidden layers (= Where(s_i, c_i, 0), faster in onnxruntime)
                                                (an int8 export computes Q(g_i) as Q(c_i)·u8(s_i) where
                                                that is exact: zor.export.quantize.gate_quantized)
    a_i = f_i(g_i)                              Sigmoid / Tanh / Relu, nothing for identity
    output = f_L(c_L)                           the output layer

and for a stateful layer the charge it carries (neuron.reset):

    kept        = Where(Less(c, m), 0, c)       only when min_charge m is set, else c
    spiked      = −p                            reset_on_spike (p: refractory)
                = c + (−p)                      otherwise
    state_out_i = Where(s_i, spiked, kept)

θ_i and W_j are initializers ``threshold_{i}`` and ``weight_{j}`` (:mod:`zor.common.format`);
a Conv layer's per-channel θ is stored expanded to one value per unit. A fresh stream
feeds zeros as ``state_in_i`` (the engine at rest: λ·0 + h = h exactly).

Example:
    >>> from zor.export.registry import supported_kinds
    >>> supported_kinds()
    ['conv', 'dense']
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from zor.common import format as fmt
from zor.common.errors import UnsupportedLayerError

from .registry import LayerContext, connection_prefix, register
from .sparse import emit_sparse

__all__ = ["ACTIVATION_OPS", "convert_dense", "convert_conv", "neuron"]

# activation name → ONNX operator (None: the identity, no node)
ACTIVATION_OPS: dict[str, str | None] = {"identity": None, "sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}


def _activation(ctx: LayerContext, x: str, out: str | None, tag: str) -> str:
    name = ctx.layer.activation
    if name not in ACTIVATION_OPS:
        raise UnsupportedLayerError(
            f"layer {ctx.index}: no ONNX operator for activation {name!r}: supported are {sorted(ACTIVATION_OPS)}"
        )
    op = ACTIVATION_OPS[name]
    if op is None:
        return x if out is None else ctx.graph.node("Identity", [x], [out], name=f"layer{ctx.index}.{tag}")
    return ctx.graph.node(op, [x], [out or f"act_{ctx.index}"], name=f"layer{ctx.index}.{tag}")


def neuron(ctx: LayerContext, h: str) -> str:
    """Charge (with state), spike, gate and activation of layer i from its input h_i.

    ``h`` may already be named ``charge_i`` (a stateless layer's connection writes it
    directly). Returns a_i for a hidden layer, ``output`` for the last one.
    """
    g, i, layer = ctx.graph, ctx.index, ctx.layer
    if layer.stateful:
        state_in = g.add_input(fmt.state_in(i), [None, layer.size])
        decay = g.initializer(f"decay_{i}", np.array(layer.decay, dtype=np.float32))
        decayed = g.node("Mul", [decay, state_in], [f"decayed_{i}"], name=f"layer{i}.decay")
        c = g.node("Add", [decayed, h], [fmt.charge(i)], name=f"layer{i}.charge")
    elif h != fmt.charge(i):
        c = g.node("Identity", [h], [fmt.charge(i)], name=f"layer{i}.charge")
    else:
        c = h
    theta = g.initializer(fmt.threshold(i), ctx.threshold.astype(np.float32))
    s = g.node("Greater", [c, theta], [fmt.spikes(i)], name=f"layer{i}.spike")
    if layer.stateful:
        kept = c
        if layer.min_charge is not None:
            floor = g.initializer(f"min_charge_{i}", np.array(layer.min_charge, dtype=np.float32))
            low = g.node("Less", [c, floor], [f"below_floor_{i}"], name=f"layer{i}.floor")
            kept = g.node("Where", [low, g.scalar(0.0, "zero"), c], [f"kept_{i}"], name=f"layer{i}.keep")
        refractory = g.initializer(f"refractory_{i}", np.array(-float(layer.refractory), dtype=np.float32))
        spiked = refractory if layer.reset_on_spike else \
            g.node("Add", [c, refractory], [f"spiked_{i}"], name=f"layer{i}.refractory")
        g.node("Where", [s, spiked, kept], [fmt.state_out(i)], name=f"layer{i}.reset")
    if ctx.is_last:
        return _activation(ctx, c, fmt.OUTPUT, "output")
    # c · float(s), not Where(s, c, 0): the same values (±0 where no spike), and onnxruntime's Cast and Mul run
    # about 6x faster than its Where at batch 64 (benchmarks/runtime_bench.py; docs/notes/int8-vnni.md)
    spiked = g.node("Cast", [s], [f"spiked_{i}_f32"], name=f"layer{i}.spike_float", to=TensorProto.FLOAT)
    gated = g.node("Mul", [c, spiked], [f"gated_{i}"], name=f"layer{i}.gate")
    return _activation(ctx, gated, None, "activation")


def _target(ctx: LayerContext) -> str:
    """Name of the connection's output: charge_i directly when the layer is stateless."""
    return f"h_{ctx.index}" if ctx.layer.stateful else fmt.charge(ctx.index)


@register("dense")
def convert_dense(ctx: LayerContext) -> str:
    """Dense layer: h_i = a_{i−1} W_{i−1} (none for the input layer), then the neuron."""
    if ctx.index == 0:
        return neuron(ctx, ctx.input_name)
    j = ctx.index - 1
    if ctx.path is not None and ctx.path.path == "sparse":
        return neuron(ctx, emit_sparse(ctx, ctx.path, ctx.form, _target(ctx)))
    w = ctx.graph.initializer(fmt.weight(j), ctx.weight.astype(np.float32))
    h = ctx.graph.node("MatMul", [ctx.input_name, w], [_target(ctx)], name=connection_prefix(j) + "matmul")
    return neuron(ctx, h)


@register("conv")
def convert_conv(ctx: LayerContext) -> str:
    """Conv layer: the previous map through a shared k×k kernel (ONNX Conv), then the neuron."""
    layer, prev, g = ctx.layer, ctx.prev_layer, ctx.graph
    if ctx.path is not None and ctx.path.path == "sparse":
        raise UnsupportedLayerError(f"layer {ctx.index}: conv connections have no sparse form (keep them dense)")
    if ctx.index == 0 or prev is None or len(getattr(prev, "map_shape", ())) != 3:
        raise UnsupportedLayerError(f"layer {ctx.index}: a conv layer needs a (C, H, W) map before it")
    j = ctx.index - 1
    p = connection_prefix(j)
    w = g.initializer(fmt.weight(j), ctx.weight.astype(np.float32))
    in_shape = g.initializer(f"map_shape_{j}", np.array([-1, *prev.map_shape], dtype=np.int64))
    out_shape = g.initializer(f"flat_shape_{ctx.index}", np.array([-1, layer.size], dtype=np.int64))
    x = g.node("Reshape", [ctx.input_name, in_shape], [f"map_{j}"], name=p + "to_map")
    k, s, pad = layer.kernel_size, layer.stride, layer.padding
    y = g.node("Conv", [x, w], [f"conv_{j}"], name=p + "conv", kernel_shape=[k, k], strides=[s, s],
               pads=[pad, pad, pad, pad])
    h = g.node("Reshape", [y, out_shape], [_target(ctx)], name=p + "to_flat")
    return neuron(ctx, h)
