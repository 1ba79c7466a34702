"""Stateless NIR nodes: Input, Output, Affine, Linear, Conv1d, Conv2d, SumPool2d, AvgPool2d, Flatten, Scale.

Per step, for x (B, *in_shape) (no time constant, so dt does not enter):

    Input, Output   y = x
    Affine          y = x Wᵀ + b              W (n_out, n_in), b (n_out,)
    Linear          y = x Wᵀ
    Conv2d/Conv1d   y = W ⋆ x + b            stride, padding, dilation, groups as the file says
    SumPool2d       y_c = Σ_{k×k window} x_c  (a grouped Conv with a kernel of ones)
    AvgPool2d       y_c = Σ_{k×k window} x_c / (k_h·k_w)   (zero padding counted, as torch's default)
    Flatten         dims start_dim..end_dim of the (unbatched) shape merged
    Scale           y = s ⊙ x
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .nodes import Converter, Node, register


def _ints(node: Node, raw: Any, key: str, n: int, default: Any = None) -> tuple[int, ...]:
    value = getattr(raw, key, default)
    if value is None:
        raise node.fail(f"no {key}: expected {n} integer(s)")
    arr = np.asarray(value).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, n)
    if arr.size != n or not np.all(np.isfinite(arr.astype(np.float64))) or np.any(arr < 0):
        raise node.fail(f"{key} = {value!r}: expected {n} non-negative integer(s)")
    return tuple(int(v) for v in arr)


@register("Input")
class InputConverter(Converter):
    def torch_step(self, node, x, state, dt):
        return x, {}, None

    def onnx_step(self, node, b, x, state, dt):
        return x, {}, None


@register("Output")
class OutputConverter(InputConverter):
    pass


@register("Affine")
class AffineConverter(Converter):
    fields = ("weight", "bias")
    elementwise = False

    def out_shape(self, node):
        w, bias = node.params["weight"], node.params.get("bias")
        if w.ndim != 2 or not node.in_shape or node.in_shape[-1] != w.shape[1]:
            raise node.fail(f"weight {list(w.shape)} does not meet the input {list(node.in_shape)}: expected a "
                            f"matrix (n_out, {node.in_shape[-1] if node.in_shape else 'n_in'})")
        if bias is not None and bias.shape != (w.shape[0],):
            raise node.fail(f"bias has shape {list(bias.shape)}: expected ({w.shape[0]},)")
        return node.in_shape[:-1] + (w.shape[0],)

    def rest(self, node):
        bias = node.params.get("bias")
        return np.broadcast_to(bias if bias is not None else 0.0, node.out_shape).astype(np.float32)

    def torch_step(self, node, x, state, dt):
        import torch

        y = x @ torch.from_numpy(np.ascontiguousarray(node.params["weight"].T))
        if "bias" in node.params:
            y = y + torch.from_numpy(node.params["bias"])
        return y, {}, None

    def onnx_step(self, node, b, x, state, dt):
        y = b.op("MatMul", [x, b.const(np.ascontiguousarray(node.params["weight"].T), node.name + ".weight_t")])
        return _add_bias(node, b, y), {}, None


def _add_bias(node: Node, b: Any, y: str) -> str:
    """y + b: an Add, or for a graph to be quantized (``b.bias_sub``) the same value as y − (−b) (IEEE subtraction
    adds the negation, exactly): onnxruntime fuses MatMul + Add into a float Gemm before it looks for the int8
    pattern, which then is not found and the weights are dequantized on every call (277 vs 51 µs per step of
    a 784-128-10 LIF graph at batch 1, benchmarks/nir_fashion.py)."""
    if "bias" not in node.params:
        return y
    if getattr(b, "bias_sub", False):
        return b.op("Sub", [y, b.const(-node.params["bias"], node.name + ".bias_neg")])
    return b.op("Add", [y, b.const(node.params["bias"], node.name + ".bias")])


def affine_sparse(node: Node, b: Any, x: str) -> str:
    """The event-driven form of Affine/Linear for one row (B = 1): only the rows of W_t = Wᵀ whose input is
    non-zero are read, y = Σ_{j: x_j ≠ 0} x_j W_t[j] (+ b); for spikes x_j = 1 a sum of the active rows.

        mask = Cast(x, bool) (n_in,): x_j ≠ 0,   y = MatMul(Compress(x, mask, axis 1), Compress(W_t, mask, axis 0)) + b
    """
    n_in = node.in_shape[-1]
    flat = b.op("Reshape", [x, b.const(np.asarray([n_in], np.int64), f"shape_{n_in}")])
    mask = b.op("Cast", [flat], to=9)                                   # 9: BOOL (non-zero → true)
    rows = b.op("Compress", [b.const(np.ascontiguousarray(node.params["weight"].T), node.name + ".weight_t"), mask],
                axis=0)
    y = b.op("MatMul", [b.op("Compress", [x, mask], axis=1), rows])
    return _add_bias(node, b, y)


@register("Linear")
class LinearConverter(AffineConverter):
    fields = ("weight",)


@register("Conv2d")
class Conv2dConverter(Converter):
    fields = ("weight", "bias")
    elementwise = False
    dims = 2

    def attrs(self, raw, node):
        n = self.dims
        pad = getattr(raw, "padding", 0)
        attrs = {"stride": _ints(node, raw, "stride", n, 1), "dilation": _ints(node, raw, "dilation", n, 1),
                 "groups": int(np.asarray(getattr(raw, "groups", 1) or 1).reshape(-1)[0])}
        if isinstance(pad, str):
            w = node.params["weight"]
            if pad not in ("valid", "same") or (pad == "same" and (any(s != 1 for s in attrs["stride"])
                                                                     or any(k % 2 == 0 for k in w.shape[2:]))):
                raise node.fail(f"padding {pad!r}: expected integers, 'valid', or 'same' with stride 1 and odd kernels")
            attrs["padding"] = tuple(0 if pad == "valid" else d * (k - 1) // 2
                                     for d, k in zip(attrs["dilation"], w.shape[2:]))
        else:
            attrs["padding"] = _ints(node, raw, "padding", n, 0)
        return attrs

    def out_shape(self, node):
        w, a, n = node.params["weight"], node.attrs, self.dims
        if w.ndim != n + 2 or len(node.in_shape) != n + 1 or a["groups"] < 1 or node.in_shape[0] != w.shape[1] * a["groups"] \
                or w.shape[0] % a["groups"] or any(s < 1 for s in a["stride"]) or any(d < 1 for d in a["dilation"]):
            raise node.fail(f"weight {list(w.shape)} (groups {a['groups']}) does not meet the input "
                            f"{list(node.in_shape)}: expected (C_out, C_in/groups{', k' * n}) and input (C_in{', L' * n})")
        if node.params["bias"].shape != (w.shape[0],):
            raise node.fail(f"bias has shape {list(node.params['bias'].shape)}: expected ({w.shape[0]},)")
        size = [(node.in_shape[1 + i] + 2 * a["padding"][i] - a["dilation"][i] * (w.shape[2 + i] - 1) - 1)
                // a["stride"][i] + 1 for i in range(n)]
        if min(size) < 1:
            raise node.fail(f"kernel {list(w.shape[2:])} is larger than the padded input {list(node.in_shape)}")
        return (w.shape[0], *size)

    def rest(self, node):
        bias = node.params["bias"].reshape((-1,) + (1,) * self.dims)
        return np.broadcast_to(bias, node.out_shape).astype(np.float32)

    def torch_step(self, node, x, state, dt):
        import torch
        import torch.nn.functional as F

        a, f = node.attrs, (F.conv1d if self.dims == 1 else F.conv2d)
        return f(x, torch.from_numpy(node.params["weight"]), torch.from_numpy(node.params["bias"]), a["stride"],
                 a["padding"], a["dilation"], a["groups"]), {}, None

    def onnx_step(self, node, b, x, state, dt):
        a = node.attrs
        y = b.op("Conv", [x, b.const(node.params["weight"], node.name + ".weight"),
                          b.const(node.params["bias"], node.name + ".bias")],
                 strides=list(a["stride"]), pads=list(a["padding"]) * 2, dilations=list(a["dilation"]),
                 group=a["groups"])
        return y, {}, None


@register("Conv1d")
class Conv1dConverter(Conv2dConverter):
    dims = 1


@register("SumPool2d")
class SumPool2dConverter(Converter):
    elementwise = False
    divide = False

    def attrs(self, raw, node):
        return {"kernel": _ints(node, raw, "kernel_size", 2), "stride": _ints(node, raw, "stride", 2),
                "padding": _ints(node, raw, "padding", 2, 0)}

    def out_shape(self, node):
        a = node.attrs
        if len(node.in_shape) != 3 or min(a["kernel"]) < 1 or min(a["stride"]) < 1:
            raise node.fail(f"input {list(node.in_shape)}, kernel {a['kernel']}, stride {a['stride']}: expected "
                            "input (C, H, W) and positive kernel and stride")
        size = [(node.in_shape[1 + i] + 2 * a["padding"][i] - a["kernel"][i]) // a["stride"][i] + 1 for i in range(2)]
        if min(size) < 1:
            raise node.fail(f"kernel {a['kernel']} is larger than the padded input {list(node.in_shape)}")
        return (node.in_shape[0], *size)

    def kernel(self, node) -> np.ndarray:
        k = node.attrs["kernel"]
        value = 1.0 / math.prod(k) if self.divide else 1.0
        return np.full((node.in_shape[0], 1, *k), value, np.float32)     # (C, 1, kh, kw): one kernel per channel

    def torch_step(self, node, x, state, dt):
        import torch.nn.functional as F

        a = node.attrs
        y = F.avg_pool2d(x, a["kernel"], a["stride"], a["padding"], count_include_pad=True)
        return (y if self.divide else y * float(math.prod(a["kernel"]))), {}, None

    def onnx_step(self, node, b, x, state, dt):
        a = node.attrs
        y = b.op("Conv", [x, b.const(self.kernel(node), node.name + ".kernel")], strides=list(a["stride"]),
                 pads=list(a["padding"]) * 2, group=node.in_shape[0])
        return y, {}, None


@register("AvgPool2d")
class AvgPool2dConverter(SumPool2dConverter):
    divide = True


@register("Flatten")
class FlattenConverter(Converter):
    elementwise = False

    def attrs(self, raw, node):
        return {"start_dim": int(np.asarray(getattr(raw, "start_dim", 1)).reshape(-1)[0]),
                "end_dim": int(np.asarray(getattr(raw, "end_dim", -1)).reshape(-1)[0])}

    def out_shape(self, node):
        shape, n = node.in_shape, len(node.in_shape)
        s, e = node.attrs["start_dim"], node.attrs["end_dim"]
        s, e = s + n if s < 0 else s, e + n if e < 0 else e
        if not (0 <= s <= e < n):
            raise node.fail(f"start_dim {node.attrs['start_dim']}, end_dim {node.attrs['end_dim']} do not fit the "
                            f"input {list(shape)}: expected dims of the unbatched shape")
        return shape[:s] + (math.prod(shape[s:e + 1]),) + shape[e + 1:]

    def torch_step(self, node, x, state, dt):
        return x.reshape((x.shape[0],) + node.out_shape), {}, None

    def onnx_step(self, node, b, x, state, dt):
        return b.reshape(x, node.out_shape), {}, None


@register("Scale")
class ScaleConverter(Converter):
    fields = ("scale",)

    def torch_step(self, node, x, state, dt):
        import torch

        return x * torch.from_numpy(node.params["scale"]), {}, None

    def onnx_step(self, node, b, x, state, dt):
        return b.op("Mul", [x, b.const(node.params["scale"], node.name + ".scale")]), {}, None
