"""Row-streaming inference: weights stay on disk, only the rows of units that spike are read.

For a model exported with ``--external-weights``, :class:`RowRunner` computes the
same per-step graph as the ``.onnx`` file (:mod:`zor.common.format`) in numpy, reading each
connection's weight rows from the ``.weights`` file (:class:`~zor.runtime.weightfile.WeightFile`)
only for the units that spiked in any row of the batch:

    c_i = λ_i · state_in_i + h_i  (stateful)   or  h_i
    s_i = [c_i > θ_i],  a_i = f_i(Where(s_i, c_i, 0))
    h_{i+1} = Σ_{u: s_i[·, u]} (a_i[:, u] − f_i(0)) W_i[u, :]  [· scale_i]  [+ sparse_bias_i]
    state_out_i = Where(s_i, −p or c_i − p, Where(c_i < m, 0, c_i))
    output = f_L(c_L)

(``sparse_bias_i`` = f_i(0) · Σ_u W_i[u, :] is stored in the file where f_i(0) ≠ 0.) int8 rows,
as the graph computes them (:mod:`zor.export.sparse`): the values v = a_i[:, A] − f_i(0) are
quantized as DynamicQuantizeLinear does (:func:`dynamic_quantize`: uint8 q, scale s_v, zero point
z_v, over v and the zeros of the units that did not spike; row by row, as the batch-1 graph
that form belongs to sees one row per call), the product is an integer one,

    h_{i+1} = float32(Σ_{u ∈ A} (q[:, u] − z_v) W_q[u, :]) · (s_v · scale_i)   [+ sparse_bias_i]

(exact int sums, here in float64), and files written before that form (the graph gathers the
rows with Compress, :func:`integer_rows`) get the float values times float(W_q), then the scale. Rows are read in blocks of at most ``block_bytes``, so memory stays bounded
whatever the activity: a model whose weights are larger than the memory the process
may use still runs, at the cost of reading its active rows on every call.

It needs numpy only (no onnxruntime session, no onnx); dense connections (conv)
and QDQ-int8 connections cannot be read row by row and are refused.

Example:
    >>> m = Model("big.onnx", weights="rows")      # doctest: +SKIP
    >>> m.run(x)["output"]                          # doctest: +SKIP
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from zor.common import format as fmt
from zor.common.errors import ModelFileError

from .weightfile import WeightFile

__all__ = ["RowRunner", "ACTIVATIONS", "REST_VALUES", "dynamic_quantize", "integer_rows"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (np.float32(1.0) / (np.float32(1.0) + np.exp(-x))).astype(np.float32, copy=False)


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda x: x,
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, np.float32(0.0)),
}
REST_VALUES = {"identity": 0.0, "relu": 0.0, "tanh": 0.0, "sigmoid": 0.5}
_INT8_ROWS = re.compile(fmt.weight_int8(987654321).replace("987654321", "([0-9]+)"))


def dynamic_quantize(x: np.ndarray) -> tuple[np.ndarray, np.float32, np.uint8]:
    """(q uint8, scale, zero point) of ``x`` as ONNX DynamicQuantizeLinear computes them, in float32:

        lo = min(0, min x), hi = max(0, max x), s = (hi − lo) / 255  (1 when hi = lo),
        z = clip(round(−lo / s), 0, 255),  q = clip(round(x / s) + z, 0, 255)   (round half to even)

    A range so narrow that s underflows to 0 (hi − lo below 255 × 1.4e-45): the graph's product is then
    scaled by 0, whatever its q and z; here q = z = 0, and the product is 0 too.
    """
    x = np.asarray(x, np.float32)
    lo = min(np.float32(0.0), x.min()) if x.size else np.float32(0.0)
    hi = max(np.float32(0.0), x.max()) if x.size else np.float32(0.0)
    scale = np.float32(1.0) if hi == lo else np.float32((hi - lo) / np.float32(255.0))
    if scale == 0.0:
        return np.zeros(x.shape, np.uint8), scale, np.uint8(0)
    zero = np.uint8(np.rint(np.clip(np.float32(0.0) - lo / scale, 0.0, 255.0)))
    q = np.clip(np.rint(x / scale) + np.float32(zero), 0.0, 255.0).astype(np.uint8)
    return q, scale, zero


def integer_rows(nodes: Iterable) -> frozenset:
    """The connections j whose graph gathers ``weight_{j}_int8`` with Gather (the integer product; older
    files gather it with Compress and multiply in float), from the scanned nodes (op_type, inputs)."""
    found = (_INT8_ROWS.fullmatch(name) for node in nodes if node.op_type == "Gather" for name in node.inputs)
    return frozenset(int(m.group(1)) for m in found if m)


@dataclass
class _Connection:
    name: str                   # tensor holding the rows (weight_j or weight_j_int8)
    rows: int
    width: int
    scale: Optional[np.ndarray]  # int8 rows: per output unit
    bias: Optional[np.ndarray]   # f(0) · Σ rows, where f(0) ≠ 0
    rest: float                  # f_j(0)
    integer: bool = False        # int8 rows with the values quantized per call and an integer product


class RowRunner:
    """Runs the model of ``metadata`` on weights read row by row from ``weights``."""

    def __init__(self, metadata, weights: WeightFile, block_bytes: int = 32 << 20,
                 integer: Iterable[int] = ()) -> None:
        """``integer``: the int8-rows connections whose graph multiplies in integers (:func:`integer_rows`)."""
        where = weights.path.name
        self.metadata = metadata
        self.weights = weights
        self.block_bytes = int(block_bytes)
        layers = metadata.layers
        mode = str(metadata.quantization.get("mode", "none"))
        if mode not in ("none", "int8"):
            raise ModelFileError(f"{where}: a {mode} file cannot be read row by row: expected float32 or int8 sparse "
                                 "rows; load it instead (weights='load')")
        self.theta = []
        for i, layer in enumerate(layers):
            kind = layer.get("kind", "dense")
            if i > 0 and kind != "dense":
                raise ModelFileError(f"{where}: layer {i} is a {kind!r} layer: only dense connections can be read row "
                                     "by row; load the model instead (weights='load')")
            act = str(layer.get("activation", "identity"))
            if act not in ACTIVATIONS:
                raise ModelFileError(f"{where}: layer {i} activation {act!r}: expected one of {sorted(ACTIVATIONS)}")
            theta = weights.tensor(fmt.threshold(i)).astype(np.float32)
            if theta.shape != (int(layer["size"]),):
                raise ModelFileError(f"{where}: {fmt.threshold(i)} has shape {theta.shape}: expected ({layer['size']},)")
            self.theta.append(theta)
        self.conns: list[_Connection] = []
        for j in range(len(layers) - 1):
            n, m = int(layers[j]["size"]), int(layers[j + 1]["size"])
            scale = None
            if fmt.weight_int8(j) in weights:
                name = fmt.weight_int8(j)
                scale = weights.tensor(fmt.weight_scale(j)).astype(np.float32)
            elif fmt.weight(j) in weights:
                name = fmt.weight(j)
            else:
                raise ModelFileError(f"{where}: no rows for connection {j} ({fmt.weight(j)} or {fmt.weight_int8(j)}): "
                                     "an int8 dense (QDQ) connection cannot be read row by row; load the model instead")
            if weights.entries[name].shape != (n, m):
                raise ModelFileError(f"{where}: {name} has shape {weights.entries[name].shape}: expected ({n}, {m}) "
                                     "from the layer sizes")
            bias = weights.tensor(fmt.sparse_bias(j)).astype(np.float32) if fmt.sparse_bias(j) in weights else None
            rest = REST_VALUES[str(layers[j].get("activation", "identity"))]
            self.conns.append(_Connection(name, n, m, scale, bias, rest, scale is not None and j in set(integer)))

    def _connect(self, j: int, a: np.ndarray, s: np.ndarray) -> np.ndarray:
        c = self.conns[j]
        if c.rest == 0.0 or c.bias is not None:
            idx = np.flatnonzero(s.any(axis=0))
            vals = a[:, idx] if c.rest == 0.0 else a[:, idx] - np.float32(c.rest)
            base = c.bias
        else:                                   # f(0) ≠ 0 and no stored bias: every row counts
            idx = np.arange(c.rows)
            vals, base = a, None
        if c.integer:                           # the batch-1 graph's DynamicQuantizeLinear, row by row (one call
            per_row = [dynamic_quantize(row) for row in vals]                   # of the graph per row)
            vals = np.stack([q.astype(np.float64) - float(z) for q, _, z in per_row]).reshape(vals.shape)
            vscale = np.array([[sv] for _, sv, _ in per_row], dtype=np.float32)  # (B, 1); int sums exact in float64
        h = np.zeros((a.shape[0], c.width), dtype=np.float64 if c.integer else np.float32)
        entry = self.weights.entries[c.name]
        per_block = max(1, self.block_bytes // max(1, entry.row_bytes))
        if len(idx):
            buf = np.empty((min(len(idx), per_block), c.width), dtype=entry.dtype)
            for a0 in range(0, len(idx), per_block):
                block = idx[a0:a0 + per_block]
                rows = self.weights.rows(c.name, block, out=buf[:len(block)])
                if c.scale is not None:
                    rows = rows.astype(h.dtype)
                h += np.ascontiguousarray(vals[:, a0:a0 + len(block)]) @ rows
        if c.integer:
            h = h.astype(np.float32) * (vscale * c.scale)
        elif c.scale is not None:
            h *= c.scale
        if base is not None:
            h += base
        return h

    def run(self, feeds: dict[str, np.ndarray], names: Sequence[str]) -> list[np.ndarray]:
        """The named outputs for validated ``feeds`` (``input`` and every ``state_in_i``)."""
        layers = self.metadata.layers
        last = len(layers) - 1
        out: dict[str, np.ndarray] = {}
        h = feeds[fmt.INPUT]
        for i, layer in enumerate(layers):
            if layer.get("stateful"):
                c = np.float32(layer.get("decay", 0.0)) * feeds[fmt.state_in(i)] + h
            else:
                c = h
            c = np.asarray(c, dtype=np.float32)
            s = c > self.theta[i]
            out[fmt.charge(i)], out[fmt.spikes(i)] = c, s
            if layer.get("stateful"):
                kept = c
                if layer.get("min_charge") is not None:
                    kept = np.where(c < np.float32(layer["min_charge"]), np.float32(0.0), c)
                penalty = np.float32(-float(layer.get("refractory", 0.0) or 0.0))
                spiked = penalty if layer.get("reset_on_spike", True) else c + penalty
                out[fmt.state_out(i)] = np.where(s, spiked, kept).astype(np.float32)
            act = ACTIVATIONS[str(layer.get("activation", "identity"))]
            if i == last:
                out[fmt.OUTPUT] = np.asarray(act(c), dtype=np.float32)
            else:
                a = np.asarray(act(np.where(s, c, np.float32(0.0))), dtype=np.float32)
                h = self._connect(i, a, s)
        return [out[name] for name in names]
