"""One Zor learning step as a plain ONNX graph (opset 17, standard operators only).

For a stateless dense network (layers 0..L, weights W_i (n_i, n_{i+1})) the graph computes,
with the constants of the checkpoint baked in (:func:`spec_of` lists them):

    forward     c_0 = x;  s_i = [c_i > θ_i];  a_i = f_i(c_i ⊙ s_i);  c_{i+1} = a_i W_i;  y = f_L(c_L)
    rates       r_i ← m_i r_i + (1 − m_i) mean_b s_i
    error       δ = target − y;  ε = max(mean|δ|, min_error_scale) (1 without error scaling)
    per W_i, from the top:
                δ̂ = signal(δ)                       rule variant (zor.engine.rules)
                δ ← δ̂ W_iᵀ                          with the old W_i
                E, G = co-activity, a_iᵀ δ̂ / B
                R ← ρ R + (1 − ρ)|E|;  E′ = clip(E − ν R, 0, 1)      (novelty on; else clip(E, 0, 1))
                g = −ε · (G ⊙ E′) · min(1, max_update_norm / max(‖G ⊙ E′‖, 1e-12))
    optimiser   t ← t + 1
                AdamW: W ← W (1 − lr·wd);  Adam: g ← g + wd·W
                m ← β₁ m + (1 − β₁) g;  v ← β₂ v + (1 − β₂) g²
                W ← W − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + eps)
                  = W − m / (√v/k + eps·√(1 − β₂ᵗ)/k),  k = lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ)   (as computed;
                  the affine √v/k + c is one BatchNormalization pass: mean 0, variance 1, epsilon 0)
                SGD: g ← g + wd·W;  b ← μ b + g (b = 0 at the start);  W ← W − lr·b
    clamp       W ← clip(W, −max_weight, max_weight)
    homeostasis θ_i ← clip(θ_i + η_i (r_i − target_i), lo_i, hi_i)

Graph inputs: ``x`` (B, n_0), ``target`` (B, n_L), ``step`` () float32, and the state
(:func:`state_names`); outputs ``output``, ``error``, every state as ``NAME_out``, and
``health`` () = mean|δ| + Σ_i ‖grad_i‖² over the layers with a norm clip (scalars the step
computes anyway): finite iff the error and those gradients are, which with a finite state
keeps every new weight and moment finite (the Learner's divergence check, no pass over W).
A W_i larger than 64 K elements is updated in row blocks (:mod:`zor.export.learnable_blocks`):
its weight-shaped state tensors are one input ``NAME.k`` and output ``NAME_out.k`` per block
(listed in ``spec["blocks"]``), so each block's element-wise chain stays in a core's L2 cache.
Scalars the blocks share (Adam's k and eps', (1 − β₁)·factor, ...) are built once. Where every
post unit spikes for good (θ_{i+1} = −inf, the output layer), E′ = clip(mean_b a_i, 0, 1) is one
factor per pre unit and goes with 1/B into the product's small side, U = (a_i ⊙ E′ᵀ / B)ᵀ δ̂,
and such a layer has no gate pass (s ≡ 1).

Example:
    >>> from zor import Zor, Layer
    >>> proto = build_step_graph(Zor([Layer(4), Layer(3), Layer(2)], seed=0))
    >>> [o.name for o in proto.graph.output][:3]
    ['output', 'error', 'step_out']
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from zor.common.errors import UnsupportedLearnableError
from zor.common.moments import STATE, scaling_of

from .learnable_blocks import graph_io, parts, row_blocks
from .learnable_masked import masked_layout, masked_update, turned
from .learnable_optim import adam_scalars, optimise, square

__all__ = ["OPSET", "SUPPORTED", "spec_of", "state_names", "build_step_graph", "check_supported"]

OPSET = 17
SUPPORTED = "stateless dense layers (decay 0), activations identity/relu/sigmoid/tanh, optimisers adam/adamw/sgd"
_ACT_OPS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}


def check_supported(net: Any) -> None:
    """UnsupportedLearnableError (exit 2) naming the first layer the step graph cannot express."""
    for i, layer in enumerate(net.layers):
        if layer.kind != "dense":
            raise UnsupportedLearnableError(f"--learnable: layer {i} is a {layer.kind!r} layer; supported: {SUPPORTED}")
        if layer.stateful:
            raise UnsupportedLearnableError(f"--learnable: layer {i} is stateful (decay {layer.decay}); "
                                        f"supported: {SUPPORTED}")
        if layer.activation != "identity" and layer.activation not in _ACT_OPS:
            raise UnsupportedLearnableError(f"--learnable: layer {i} activation {layer.activation!r}; "
                                        f"supported: {SUPPORTED}")
    if net.config.optimizer not in ("adam", "adamw", "sgd"):
        raise UnsupportedLearnableError(f"--learnable: optimizer {net.config.optimizer!r}; supported: {SUPPORTED}")


def spec_of(net: Any, masked: bool = True) -> dict:
    """The learning hyper-parameters baked into the graph, as plain JSON data; ``masked``: the connections that
    allow it form their co-activity on the active post units (zor.export.learnable_masked)."""
    c = net.config
    always = [bool(np.isneginf(net.threshold(i).cpu().numpy()).all()) and
              (layer.threshold_range is None or layer.threshold_range[0] is None) for i, layer in enumerate(net.layers)]
    novelty = [layer.novelty_factor for layer in net.layers]
    masked, transposed = masked_layout(net.sizes, c.rule, always, novelty, c.optimizer) if masked else ([], [])
    return {
        "rule": c.rule, "optimizer": c.optimizer, "lr": c.lr, "betas": list(c.betas), "eps": 1e-8,
        "weight_decay": c.weight_decay, "momentum": c.momentum, "error_scaling": c.error_scaling,
        "min_error_scale": c.min_error_scale, "sizes": list(net.sizes),
        "always": always,     # layers whose every unit spikes for good (θ = −inf, no lower clamp): s ≡ 1 there
        "layers": [{
            "activation": layer.activation, "homeostasis_rate": net._eta[i],
            "target_activation": layer.target_activation, "rate_momentum": layer.rate_momentum,
            "threshold_range": list(layer.threshold_range) if layer.threshold_range is not None else None,
            "max_update_norm": layer.max_update_norm, "max_weight": layer.max_weight,
            "novelty_factor": layer.novelty_factor, "novelty_momentum": layer.novelty_momentum,
        } for i, layer in enumerate(net.layers)],
        "blocks": row_blocks(net.sizes, c.optimizer, novelty, tuple(masked)),
        "transposed": transposed,     # state held as W_iᵀ (n_{i+1}, n_i): zor.export.learnable_masked
        # Adam's moments held as m·β₁^−τ, v·β₂^−τ (zor.common.moments), or None: plain moments
        "moment_scaling": scaling_of({"optimizer": c.optimizer, "lr": c.lr, "betas": list(c.betas),
                                      "weight_decay": c.weight_decay}),
        "health_covers_x": True,      # health is not finite when x is not (0·Σx joins it): no check of x before
    }


def state_names(spec: dict) -> list[str]:
    """The state tensors in graph order: step (and moment_steps τ with scaled moments), then per weight W, moments, novelty; per layer θ, r."""
    names = ["step"] + ([STATE] if spec.get("moment_scaling") else [])
    for i in range(len(spec["sizes"]) - 1):
        names.append(f"weight_{i}")
        names += [f"momentum_{i}"] if spec["optimizer"] == "sgd" else [f"adam_m_{i}", f"adam_v_{i}"]
        if spec["layers"][i]["novelty_factor"] != 0.0:
            names.append(f"novelty_{i}")
    for i in range(len(spec["sizes"])):
        names += [f"threshold_{i}", f"rate_{i}"]
    return names


class _G:
    """Collects nodes and constants; each op returns its output's name."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []
        self._n = 0
        self._once: dict = {}
        self.every_unit = False   # the masked connections' update from every product (the second step graph)

    def once(self, key: Any, make: Any) -> str:
        """make()'s output, built the first time ``key`` is asked for (a scalar or vector shared by blocks)."""
        if key not in self._once:
            self._once[key] = make()
        return self._once[key]

    def op(self, kind: str, *inputs: str, out: Optional[str] = None, **attrs: Any) -> str:
        self._n += 1
        name = out or f"t{self._n}_{kind.lower()}"
        self.nodes.append(helper.make_node(kind, list(inputs), [name], name=f"n{self._n}_{kind}", **attrs))
        return name

    def const(self, value: Any, dtype: Any = np.float32) -> str:
        self._n += 1
        name = f"c{self._n}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def act(self, name: str, x: str) -> str:
        return self.op(_ACT_OPS[name], x) if name in _ACT_OPS else x


def _product(g: _G, spec: dict, i: int, a: str, down: bool, w_scale: Optional[str], out: Optional[str] = None) -> str:
    """a W_i (forward; a (B, n_i)) or a W_iᵀ (``down``; a (B, n_{i+1})) from the held W_i (or W_iᵀ where turned);
    with AdamW's held W̃ = W decay^−τ (zor.common.moments) the scalar ``w_scale`` = decay^τ goes on the
    narrower of the product's two small sides."""
    t = turned(spec, i)
    if w_scale is not None and spec["sizes"][i + int(not down)] >= spec["sizes"][i + int(down)]:
        a, w_scale = g.op("Mul", a, w_scale), None                           # the input is the narrower side
    if down:
        h = g.op("MatMul", a, f"weight_{i}", out=None if w_scale else out) if t else \
            g.op("Gemm", a, f"weight_{i}", transB=1, out=None if w_scale else out)
    else:
        h = g.op("Gemm", a, f"weight_{i}", transB=1, out=None if w_scale else out) if t else \
            g.op("MatMul", a, f"weight_{i}", out=None if w_scale else out)
    return h if w_scale is None else g.op("Mul", h, w_scale, out=out)


def _forward(g: _G, spec: dict, spikes: bool, mean_b: str,
             w_scale: Optional[str] = None) -> tuple[str, list[tuple[Optional[str], str]]]:
    """Output name and the (s_i, a_i, mean_b s_i) of every layer; appends the rate updates' outputs. A layer that spikes
    for good (spec["always"]: θ = −inf) has s ≡ 1: no gate pass, s_i None, r ← m r + (1 − m) (the normalized
    rule keeps s_i, its E reads it); ``spikes`` outputs spikes_i of every layer all the same (verification).
    The output f_L(c_L) is written as ``output`` by its own op (no Identity copy)."""
    h, traces, last = "x", [], len(spec["sizes"]) - 1
    act_out = spec["layers"][last]["activation"] in _ACT_OPS
    for i, lay in enumerate(spec["layers"]):
        m = lay["rate_momentum"]
        if spec["always"][i] and spec["rule"] != "normalized":
            s = None
            a = h if lay["activation"] not in _ACT_OPS else \
                g.op(_ACT_OPS[lay["activation"]], h, out="output" if i == last else None)
            if spikes:
                g.op("Cast", g.op("Greater", h, f"threshold_{i}"), to=TensorProto.FLOAT, out=f"spikes_{i}")
            g.op("Add", g.op("Mul", f"rate_{i}", g.const(m)), g.const(1.0 - m), out=f"rate_{i}_out")
            mean_s = None
        else:
            s = g.op("Cast", g.op("Greater", h, f"threshold_{i}"), to=TensorProto.FLOAT, out=f"spikes_{i}")
            a = g.act(lay["activation"], g.op("Mul", h, s))                   # (B, n_i)
            mean_s = g.op("MatMul", mean_b, s)                                # (n_i,) = mean_b s
            g.op("Add", g.op("Mul", f"rate_{i}", g.const(m)), g.op("Mul", mean_s, g.const(1.0 - m)),
                 out=f"rate_{i}_out")
            if i == last and act_out:
                g.op(_ACT_OPS[lay["activation"]], h, out="output")           # ungated: y = f_L(c_L)
        traces.append((s, a, mean_s))
        if i < last:                                                          # (B, n_{i+1}); W_iᵀ: transB
            h = _product(g, spec, i, a, False, w_scale, "output" if i + 1 == last and not act_out else None)
    return "output", traces


def _signal(g: _G, spec: dict, delta: str, s_post: str, top: bool) -> str:
    rule = spec["rule"]
    if rule == "normalized":
        norm = g.op("ReduceL2", delta, axes=[0], keepdims=1)                  # (1, n_{i+1})
        return g.op("Div", delta, g.op("Max", norm, g.const(1e-12)))
    if rule == "gated" and not top and s_post is not None:             # None: the layer spikes for good
        return g.op("Mul", delta, s_post)
    return delta


def _update(g: _G, spec: dict, i: int, pre: tuple, post: tuple, d: str, inv_b: tuple[str, str],
            neg_scale: str) -> tuple[list[str], str, Optional[str]]:
    """([u per row block], factor, ‖u‖² or None): the 'gradient' of W_i is u · factor = −ε·clip(G ⊙ E′);
    writes novelty_i_out (novelty on); ‖u‖² when the layer has a norm clip (it is computed for the clip anyway).
    A transposed W_i gets uᵀ per block of post units, formed on the active ones (zor.export.learnable_masked)."""
    lay = spec["layers"][i]
    a_i, (s_p, a_p, mean_p) = pre[1], post
    inv_b, mean_b = inv_b
    rule = spec["rule"]
    column = rule not in ("coactivity", "normalized") and spec["always"][i + 1]   # s_{i+1} ≡ 1: E is a column
    fold = column and lay["novelty_factor"] == 0.0          # E′ = clip(mean_b a_i, 0, 1) per pre unit j, so
    if fold:                                                # U = (a_i ⊙ E′ᵀ / B)ᵀ δ̂: E′ and 1/B on the small side
        e_row = g.op("Clip", g.op("MatMul", mean_b, a_i), g.const(0.0), g.const(1.0))          # (n_i,)
        a_i, d_b = g.op("Mul", a_i, g.op("Mul", e_row, inv_b)), d              # (B, n_i), (B, n_{i+1})
    else:
        d_b = g.op("Mul", d, inv_b)                                            # δ̂ / B (B, n_{i+1}): the small side
    post_b = None if rule == "normalized" or column else g.op("Mul", a_p if rule == "coactivity" else s_p, inv_b)
    if turned(spec, i):
        us, ssq = masked_update(g, spec, i, a_i, mean_p, d_b, post_b, parts(spec, i))
    else:
        us, ssq = _full_update(g, spec, i, (pre[0], a_i), (a_p, post_b), d_b, column, fold)
    factor = neg_scale
    if ssq is not None:
        norm = g.op("Max", g.op("Sqrt", ssq), g.const(1e-12))
        clip = g.op("Min", g.op("Div", g.const(float(lay["max_update_norm"])), norm), g.const(1.0))
        factor = g.op("Mul", clip, neg_scale)
    return us, factor, ssq                                 # grad = u · factor (factor a scalar); ‖u‖² or None


def _full_update(g: _G, spec: dict, i: int, pre: tuple, post: tuple, d_b: str, column: bool,
                 fold: bool) -> tuple[list[str], Optional[str]]:
    """([u per row block of W_i], ‖u‖² or None) from every product: ``pre`` = (s_i, a_i), ``post`` =
    (a_{i+1}, the rule's post factor / B), ``d_b`` = δ̂ / B (E′ and 1/B folded in a_i where ``fold``)."""
    lay, rule = spec["layers"][i], spec["rule"]
    (s_i, a_i), (a_p, post_b) = pre, post
    blocks, us, ssq = parts(spec, i), [], None
    if len(blocks) > 1:                                     # a block's rows of a_iᵀ: contiguous rows, a cheap Gather
        a_t = g.op("Transpose", a_i, perm=[1, 0])                              # (n_i, B)
        s_t = g.op("Transpose", s_i, perm=[1, 0]) if rule == "normalized" else None
    for suffix, lo, hi in blocks:
        rows = None if len(blocks) == 1 else g.const(np.arange(lo, hi), np.int64)
        a_r = a_i if rows is None else g.op("Gather", a_t, rows, axis=0)      # (B, rows) or (rows, B): transA
        ta = int(rows is None)
        gm = g.op("Gemm", a_r, d_b, transA=ta)                                 # G = a_iᵀ δ̂ / B (folded: U)
        if fold:
            us.append(gm)
        elif rule == "normalized":                                             # E = s_iᵀ a_{i+1}
            e = g.op("Gemm", s_i if rows is None else g.op("Gather", s_t, rows, axis=0), a_p, transA=ta)
        elif column:                                                           # (rows, 1)
            e = g.op("Transpose", g.op("ReduceMean", a_i, axes=[0], keepdims=1), perm=[1, 0]) if rows is None \
                else g.op("ReduceMean", a_r, axes=[1], keepdims=1)
        else:                                              # two products: cheaper than one into a concat + 2 slices
            e = g.op("Gemm", a_r, post_b, transA=ta)
        nu = lay["novelty_factor"]
        if nu != 0.0:
            rho = lay["novelty_momentum"]
            r = g.op("Add", g.op("Mul", f"novelty_{i}{suffix}", g.const(rho)),
                     g.op("Mul", g.op("Abs", e), g.const(1.0 - rho)), out=f"novelty_{i}_out{suffix}")
            e = g.op("Sub", e, g.op("Mul", r, g.const(nu)))
        if not fold:
            us.append(g.op("Mul", gm, g.op("Clip", e, g.const(0.0), g.const(1.0))))
        if lay["max_update_norm"] is not None:
            part = g.op("ReduceSumSquare", us[-1], keepdims=0)
            ssq = part if ssq is None else g.op("Add", ssq, part)
    return us, ssq


def _homeostasis(g: _G, spec: dict) -> None:
    for i, lay in enumerate(spec["layers"]):
        th = f"threshold_{i}"
        if lay["homeostasis_rate"] != 0.0:
            drift = g.op("Sub", f"rate_{i}_out", g.const(lay["target_activation"]))
            th = g.op("Add", th, g.op("Mul", drift, g.const(lay["homeostasis_rate"])))
        lo, hi = lay["threshold_range"] or (None, None)
        if lo is not None:
            th = g.op("Max", th, g.const(float(lo)))
        if hi is not None:
            th = g.op("Min", th, g.const(float(hi)))
        g.op("Identity", th, out=f"threshold_{i}_out")


def _body(g: _G, spec: dict, spikes: bool) -> None:
    scaling = spec.get("moment_scaling")
    w_scale = None                                                 # decay^τ of AdamW's held W̃ (zor.common.moments)
    if scaling and scaling.get("decay") is not None:
        w_scale = g.op("Pow", g.const(scaling["decay"]), STATE)
    batch = g.op("Cast", g.op("Gather", g.op("Shape", "x"), g.const(0, np.int64), axis=0), to=TensorProto.FLOAT)
    inv_b = g.op("Reciprocal", batch)
    # (B,) of 1/B: mean_b X is the batch mean of X (B, n), a small product (ReduceMean over axis 0 is slower)
    mean_b = g.op("Expand", inv_b, g.op("Gather", g.op("Shape", "x"), g.const([0], np.int64), axis=0))
    out, traces = _forward(g, spec, spikes, mean_b, w_scale)
    delta = g.op("Sub", "target", out, out="error")                             # (B, n_L)
    if spec["error_scaling"]:
        mean_abs = g.op("ReduceMean", g.op("Abs", delta), keepdims=0)
        scale = g.op("Max", mean_abs, g.const(float(spec["min_error_scale"])))
    else:
        scale = g.const(1.0)
    neg_scale = g.op("Neg", scale)
    t = g.op("Add", "step", g.const(1.0), out="step_out")
    tau = g.op("Add", STATE, g.const(1.0), out=f"{STATE}_out") if scaling else None
    top = len(spec["sizes"]) - 2
    health = mean_abs if spec["error_scaling"] else g.op("ReduceMean", g.op("Abs", delta), keepdims=0)
    if spec.get("health_covers_x"):            # 0·Σx: NaN when x holds a NaN or an inf, else 0
        health = g.op("Add", health, g.op("Mul", g.op("ReduceSum", "x", keepdims=0), g.const(0.0)))
    sc = None if spec["optimizer"] == "sgd" else adam_scalars(g, spec, t, tau, w_scale)
    for i in reversed(range(top + 1)):
        d = _signal(g, spec, delta, traces[i + 1][0], i == top)
        if i > 0:                                                           # δ̂ W_iᵀ (B, n_i), old W_i
            delta = _product(g, spec, i, d, True, w_scale)
        us, factor, ssq = _update(g, spec, i, traces[i], traces[i + 1], d, (inv_b, mean_b), neg_scale)
        if ssq is not None:                                                 # ‖grad‖² = ‖u‖²·factor²
            health = g.op("Add", health, g.op("Mul", ssq, square(g, factor)))
        for u, part in zip(us, parts(spec, i)):                            # block by block: in L2
            optimise(g, spec, i, u, factor, sc, part)
    g.op("Identity", health, out="health")
    _homeostasis(g, spec)


def build_step_graph(net: Any, spikes: bool = False, masked: bool = True,
                     every_unit: bool = False) -> onnx.ModelProto:
    """The learning-step graph of ``net`` (no initial state inside; see zor.export.learnable).

    ``spikes=True`` also outputs ``spikes_i`` (B, n_i) of every layer (for verification); ``masked=False``: every
    connection forms its co-activity from every product (see spec_of); ``every_unit=True``: the same layout
    (W_iᵀ where masked) but every product, block by block: the graph the Learner runs for batches where
    nearly every post unit spikes (zor.export.learnable_masked)."""
    check_supported(net)
    spec = spec_of(net, masked)
    g = _G()
    g.every_unit = every_unit
    _body(g, spec, spikes)
    f = TensorProto.FLOAT
    state_in, state_out = graph_io(spec, state_names(spec))
    inputs = [helper.make_tensor_value_info("x", f, ["batch", spec["sizes"][0]]),
              helper.make_tensor_value_info("target", f, ["batch", spec["sizes"][-1]])]
    inputs += [helper.make_tensor_value_info(n, f, shape) for n, shape in state_in]
    outputs = [helper.make_tensor_value_info("output", f, ["batch", spec["sizes"][-1]]),
               helper.make_tensor_value_info("error", f, ["batch", spec["sizes"][-1]])]
    outputs += [helper.make_tensor_value_info(n, f, shape) for n, shape in state_out]
    outputs.append(helper.make_tensor_value_info("health", f, []))
    if spikes:
        outputs += [helper.make_tensor_value_info(f"spikes_{i}", f, ["batch", n])
                    for i, n in enumerate(spec["sizes"])]
    graph = helper.make_graph(g.nodes, "zor_learning_step", inputs, outputs, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="zor-edge")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model
