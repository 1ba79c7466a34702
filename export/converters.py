"""Converters for the dense Zor layer, stateless and stateful.

For layer i with input h_i (``input`` for i = 0), thresholds θ_i and, unless it is
the output layer, weights W_i, the emitted nodes compute exactly the engine's
forward pass (:mod:`zor.neuron`, ``Zor._forward``):

    c_i = h_i                                   dense            Identity → charge_i
    c_i = λ · state_in_i + h_i                  dense_stateful   Mul, Add → charge_i
    s_i = Greater(c_i, θ_i)                     → spikes_i (bool)
    g_i = Where(s_i, c_i, 0)
    a_i = f_i(g_i)                              Sigmoid / Tanh / Relu, or nothing for identity
    h_{i+1} = MatMul(a_i, W_i)                  node ``layer{i}.matmul`` (hidden layers)
    output  = f_L(c_L)                          the output layer

and for a stateful layer the charge it carries (neuron.reset):

    kept        = Where(Less(c, m), 0, c)       only when min_charge m is set, else c
    spiked      = −p                            reset_on_spike (p: refractory)
                = c − p                         otherwise
    state_out_i = Where(s_i, spiked, kept)

θ_i and W_i are initializers named ``threshold_{i}`` and ``weight_{i}``
(:mod:`zor.format`). A fresh stream feeds zeros as ``state_in_i`` (the engine at
rest: λ·0 + h = h exactly).

Example:
    >>> from zor.export.registry import REGISTRY
    >>> sorted(REGISTRY)
    ['dense', 'dense_stateful']
"""

from __future__ import annotations

import numpy as np

from zor import format as fmt
from zor.errors import UnsupportedLayerError

from .registry import LayerContext, register

__all__ = ["ACTIVATION_OPS", "convert_dense", "convert_dense_stateful", "matmul_node"]

# activation name → ONNX operator (None: the identity, no node)
ACTIVATION_OPS: dict[str, str | None] = {"identity": None, "sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}


def matmul_node(i: int) -> str:
    """Name of the MatMul node of connection i (layer i → i+1): what int8 fallback excludes."""
    return f"layer{i}.matmul"


def _activation(ctx: LayerContext, x: str, out: str, tag: str) -> str:
    name = ctx.layer.activation
    if name not in ACTIVATION_OPS:
        raise UnsupportedLayerError(
            f"layer {ctx.index}: no ONNX operator for activation {name!r}: supported are {sorted(ACTIVATION_OPS)}"
        )
    op = ACTIVATION_OPS[name]
    if op is None:
        return x if out is None else ctx.graph.node("Identity", [x], [out], name=f"layer{ctx.index}.{tag}")
    return ctx.graph.node(op, [x], [out or f"{x}_{tag}"], name=f"layer{ctx.index}.{tag}")


def _spike_gate_and_pass_on(ctx: LayerContext, c: str) -> tuple[str, str]:
    """Spike, gate, activation, then MatMul (hidden) or f_L(c) (output). Returns (s, passed-on tensor)."""
    g, i = ctx.graph, ctx.index
    theta = g.initializer(fmt.threshold(i), ctx.threshold.astype(np.float32))
    s = g.node("Greater", [c, theta], [fmt.spikes(i)], name=f"layer{i}.spike")
    if ctx.is_last:
        return s, _activation(ctx, c, fmt.OUTPUT, "output")
    zero = g.scalar(0.0, "zero")
    gated = g.node("Where", [s, c, zero], [f"gated_{i}"], name=f"layer{i}.gate")
    a = _activation(ctx, gated, None if ctx.layer.activation == "identity" else f"act_{i}", "activation")
    w = g.initializer(fmt.weight(i), ctx.weight.astype(np.float32))
    return s, g.node("MatMul", [a, w], [f"h_{i + 1}"], name=matmul_node(i))


@register("dense")
def convert_dense(ctx: LayerContext) -> str:
    """Stateless dense layer: c = h (see the module docstring)."""
    c = ctx.graph.node("Identity", [ctx.input_name], [fmt.charge(ctx.index)], name=f"layer{ctx.index}.charge")
    _, out = _spike_gate_and_pass_on(ctx, c)
    return out


@register("dense_stateful")
def convert_dense_stateful(ctx: LayerContext) -> str:
    """Stateful dense layer: c = λ·state_in + h, and state_out = reset(c, s) (see the module docstring)."""
    g, i, layer = ctx.graph, ctx.index, ctx.layer
    n = layer.size
    state_in = g.add_input(fmt.state_in(i), [None, n])
    decay = g.initializer(f"decay_{i}", np.array(layer.decay, dtype=np.float32))
    decayed = g.node("Mul", [decay, state_in], [f"decayed_{i}"], name=f"layer{i}.decay")
    c = g.node("Add", [decayed, ctx.input_name], [fmt.charge(i)], name=f"layer{i}.charge")
    s, out = _spike_gate_and_pass_on(ctx, c)

    kept = c
    if layer.min_charge is not None:
        floor = g.initializer(f"min_charge_{i}", np.array(layer.min_charge, dtype=np.float32))
        low = g.node("Less", [c, floor], [f"below_floor_{i}"], name=f"layer{i}.floor")
        kept = g.node("Where", [low, g.scalar(0.0, "zero"), c], [f"kept_{i}"], name=f"layer{i}.keep")
    refractory = g.initializer(f"refractory_{i}", np.array(-float(layer.refractory), dtype=np.float32))
    if layer.reset_on_spike:
        spiked = refractory                                   # −p
    else:
        spiked = g.node("Add", [c, refractory], [f"spiked_{i}"], name=f"layer{i}.refractory")  # c + (−p)
    g.node("Where", [s, spiked, kept], [fmt.state_out(i)], name=f"layer{i}.reset")
    return out
