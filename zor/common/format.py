"""The exported file's contract: tensor names and metadata keys.

Shared by the exporter (which writes it) and the runtime (which reads it), so it
imports nothing of ours: both sides name the same things the same way.

Graph I/O (B is a dynamic batch axis, n_i the size of layer i, L the output layer):

    inputs   input            (B, n_0)  float32
             state_in_{i}     (B, n_i)  float32   one per stateful layer i
    outputs  output           (B, n_L)  float32   f_L(c_L): the output layer's charges
             state_out_{i}    (B, n_i)  float32   the charge carried to the next step
             spikes_{i}       (B, n_i)  bool      s_i = [c_i > θ_i], every layer
             charge_{i}       (B, n_i)  float32   c_i, every layer (verification, debugging)

A caller asks onnxruntime only for what it needs (``output`` and the state outputs);
onnxruntime still runs every node, so an unfetched output saves its copy out of the
session, not its computation (the gates and charges are needed for ``output`` anyway).

Initializers (float32 files; an int8 file quantizes the weights, an fp16 file stores
them as float16 followed by a Cast):

    threshold_{i}     (n_i,)            θ_i per unit, float32 in every mode (spike decisions stay
                                        exact); a conv layer's per-channel θ expanded to its units
    weight_{j}        (n_j, n_{j+1})    W_j of the connection j → j+1 ((C_{j+1}, C_j, k, k) into
                                        a conv layer)

Metadata (``metadata_props``; every value a string, JSON where structured):

    zor.format            "zor-onnx"
    zor.format_version    "1"
    zor.engine_version    version of the engine that trained the model
    zor.layers            JSON list, per layer: index, kind ("dense", "conv"), size, shape,
                          activation, stateful, decay, refractory, min_charge,
                          reset_on_spike, threshold {min, max, mean} (conv: channels,
                          kernel_size, stride, padding)
    zor.task              JSON: name ("reconstruct", "classify", "generic", ...),
                          input {shape, range, preprocessing, image {height, width,
                          channels}}, output {shape, range, meaning}, labels
    zor.stateful          "true" or "false"
    zor.state             JSON list of {layer, size, input, output, initial, meaning}:
                          the state tensors and the value a fresh stream starts from
                          (``initial`` a number: every unit starts there; 0.0 = rest)
    zor.quantization      JSON: {"mode": "none" | "int8" | "fp16", ...}; int8 adds profile,
                          recipe, spike_budget, max_drop, fallback (connections j kept in
                          float), layers [{layer, spike_agreement, precision, ...}],
                          metric {metric, reference, float, candidate, drop, psnr_drop},
                          size, integer_gates (gate nodes computed as Q(c)·int8(s) on 8-bit
                          values, zero point 0: the same integers); fp16 adds layers, metric, size
    zor.calibration       JSON: calibration figures {source, calibration_rows, steps,
                          layers [{layer, spike_rate, charge_min, charge_max}]}, or {}
    zor.verification      JSON: {"passed": true, "float32": report} (the float graph's parity
                          report: per layer spike_agreement, ties, charge errors; per
                          output max/mean abs diff); fp16 files add "fp16": report, int8
                          files "int8": {spike_agreement, metric_drop, fallback};
                          {"passed": null, "skipped": true} when exported with --no-verify
    zor.weights_sha256    SHA-256 of the float32 weights and thresholds, in layer order:
                          θ_0, W_0, θ_1, W_1, ..., θ_L (θ per unit, as stored in the
                          file), each as little-endian float32
                          bytes in C order (of the trained model, also for int8 files)

    zor.paths             JSON: how each connection j (layer j → j+1) computes h_{j+1}:
                          {requested: "dense" | "sparse" | "auto", profile, break_even,
                          min_synapses, curve, form: "batch1" | "union", max_batch (largest batch
                          the file accepts; null = any), rates {source, rows}, connections
                          [{connection, kind, path: "dense" | "sparse", spike_rate (mean share
                          of layer j's units spiking per row), union_rate (share spiking in
                          any row of a max_batch group), precision: "float32" | "int8",
                          synapses, groups (row groups of a sparse connection), reason}]};
                          auto may add shape_model (the profile's SparseShape) and, per
                          connection, break_even (the profile's rate for its shape);
                          a file without the key is dense everywhere
    zor.weights           JSON: {} when every initializer is inside the .onnx file; else the
                          external weight file: {location (file name next to the .onnx),
                          bytes (its exact size), alignment, tensors [{name, offset, length,
                          dtype, shape, sha256}]}: ONNX external data, one region per
                          tensor, each tensor's bytes little-endian C order at ``offset``
                          (a multiple of ``alignment``), ``in_graph`` whether the graph uses
                          it; outside the graph: ``row_crc32_{j}`` (uint32, n_j), the CRC-32 of
                          each row of W_j as stored, so a reader that gathers rows can check
                          each one the first time it reads it, and ``sparse_bias_{j}`` for a
                          dense connection out of a layer with f(0) ≠ 0; ``location`` is
                          ``NAME.weights``, or ``NAME.<sha12>.weights`` (the first 12 hex digits
                          of the file's SHA-256) when the plain name is taken by the model being
                          replaced, so that the .onnx rename switches the pair at once
    zor.nir               JSON, NIR imports only (zor.export.nir, docs/nir.md): {source (file name), dt,
                          discretisation ("euler"), nodes [{name, kind (NIR type), in_shape, out_shape,
                          state, spiking, discretisation}], edges, recurrent_edges, nir_version}. Such a
                          file computes one time step: ``zor.layers`` is one entry per NIR node in step
                          order, ``zor.task`` has source "nir" and the input/output shapes; its state
                          tensors are ``state_in_{k}_{var}`` / ``state_out_{k}_{var}`` (variable var, "v"
                          or "i", of the stateful node at position k) and ``state_in_edge_{j}`` /
                          ``state_out_edge_{j}`` (recurrent edge j: its source's value one step before,
                          initially the source's rest value), each (B, n) and listed in ``zor.state``
    zor.integrity         JSON: what the runtime checks on every load (``zor.export.metadata.integrity_record``):
                          {"version": 1, "graph": SHA-256 of the graph's bytes other than its
                          initializers (nodes, inputs, outputs, names), "initializers": {name:
                          SHA-256 of that TensorProto's bytes as written: name, dtype, dims and
                          raw data, or the external-data entries location/offset/length},
                          "metadata": SHA-256 of every other metadata entry (:func:`metadata_digest`)}.
                          A file without it was written before this key (its external tensors are
                          still checked against ``zor.weights``). An unkeyed hash finds a file that
                          was changed by accident or by a tool that edits tensors or metadata; it
                          cannot stop someone who rewrites the record too (that needs a signature)

Sparse (event-driven) connections, built from standard operators only (``zor.paths``):

    batch1  mask = Reshape(s_j, (n_j,))                                only B = 1 (else an error)
    union   mask = Cast(ReduceMax(Cast(s_j, int32), axis 0), bool)     B ≤ max_batch
            h_{j+1} = MatMul(Compress(a_j − f_j(0), mask, axis 1), Compress(W_j, mask, axis 0))
                      [+ sparse_bias_{j} = f_j(0) · Σ_rows W_j, when f_j(0) ≠ 0 (sigmoid)]
            with G row groups: Sum over k of the same with mask ∧ ``group_{j}_{k}``
    int8    batch1: the values and a zero column are quantized per call (DynamicQuantizeLinear), the
            rows of ``weight_{j}_int8`` (int8, n_j × n_{j+1}) at [NonZero(mask) | −1] are gathered
            (Gather) and multiplied in integers (MatMulInteger; the extra entry adds exactly 0), and
            the float product is scaled by the values' scale times ``weight_{j}_scale`` (one float32
            per output unit); union (and batch1 files written before that form): the gathered rows
            are Cast to float, multiplied, and the product scaled by ``weight_{j}_scale``

JSON values are strict JSON: a non-finite number (the output layer's default θ = −inf)
is written as the string "-inf" / "inf" / "nan".

A learnable file (``zor-export --learnable``, zor.export.learnable; read by
zor.runtime.Learner) is another contract: ``zor.format`` "zor-learnable"; inputs ``x``
(B, n_0), ``target`` (B, n_L), ``step`` () and the state ``weight_{j}``, ``adam_m_{j}`` /
``adam_v_{j}`` (or ``momentum_{j}``), ``novelty_{j}`` (novelty on), ``threshold_{i}``,
``rate_{i}``, each with its start value as an initializer of the same name; outputs
``output``, ``error``, ``NAME_out`` per state tensor and ``health`` () (files written before
it lack it). The weight-shaped state of a large W_j may come in row blocks instead (listed in
``zor.learnable``'s ``blocks``: {"state", "rows": [lo, hi], "input": ``NAME.k``, "output":
``NAME_out.k``}; ``weight_{j}`` stays an input as a whole too; the initializer keeps the whole
tensor under NAME); metadata ``zor.learnable`` (JSON
hyper-parameters and state names), ``zor.verification`` and ``zor.inference_template``
(base64 of the inference file above for the same start). See docs/learning-on-device.md.
"""

from __future__ import annotations

import hashlib

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "INPUT",
    "OUTPUT",
    "state_in",
    "state_out",
    "spikes",
    "charge",
    "threshold",
    "weight",
    "weight_int8",
    "weight_scale",
    "sparse_bias",
    "row_crc32",
    "weights_file",
    "metadata_digest",
    "INTEGRITY_VERSION",
    "PATHS",
    "FORMS",
    "OPERATORS",
    "CONSTANT_OPERATORS",
    "LEARNABLE_OPERATORS",
    "KEYS",
]

FORMAT = "zor-onnx"
FORMAT_VERSION = 1

INPUT = "input"
OUTPUT = "output"


def state_in(i: int) -> str:
    return f"state_in_{i}"


def state_out(i: int) -> str:
    return f"state_out_{i}"


def spikes(i: int) -> str:
    return f"spikes_{i}"


def charge(i: int) -> str:
    return f"charge_{i}"


def threshold(i: int) -> str:
    return f"threshold_{i}"


def weight(i: int) -> str:
    return f"weight_{i}"


def weight_int8(i: int) -> str:
    return f"weight_{i}_int8"


def weight_scale(i: int) -> str:
    return f"weight_{i}_scale"


def sparse_bias(i: int) -> str:
    return f"sparse_bias_{i}"


def row_crc32(i: int) -> str:
    return f"row_crc32_{i}"


def weights_file(model_file_name: str, digest: str = "") -> str:
    """The external weight file written next to ``model_file_name``: "m.onnx" → "m.weights", or with the
    file's SHA-256 ``digest`` "m.<first 12 hex digits>.weights" (the name used while "m.weights" is taken)."""
    stem = model_file_name[:-5] if model_file_name.endswith(".onnx") else model_file_name
    return f"{stem}.{digest[:12]}.weights" if digest else stem + ".weights"


INTEGRITY_VERSION = 1


def metadata_digest(entries: list[tuple[str, str]]) -> str:
    """SHA-256 over the metadata entries other than ``zor.integrity``, sorted by key, each as its key and
    value in UTF-8, each preceded by its length (8 bytes, little-endian): what ``zor.integrity`` records."""
    h = hashlib.sha256()
    for key, value in sorted((k, v) for k, v in entries if k != KEYS.INTEGRITY):
        for part in (key.encode("utf-8"), value.encode("utf-8")):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
    return h.hexdigest()


# Every operator a Zor graph may hold (default ONNX domain only): what the exporter emits for float32,
# fp16 (Cast), int8 QDQ and QOperator (onnxruntime's static quantization of MatMul and Conv), the sparse
# forms and conv layers. The runtime refuses any other operator, domain, subgraph or model-local function.
OPERATORS = frozenset({
    "Identity", "Greater", "Less", "Where", "And", "Add", "Sub", "Mul", "Sum", "MatMul", "Conv",
    "Sigmoid", "Tanh", "Relu", "Cast", "Reshape", "Compress", "ReduceMax",
    "QuantizeLinear", "DequantizeLinear", "QLinearMatMul", "QLinearConv",
    "Concat", "NonZero", "Gather", "DynamicQuantizeLinear", "MatMulInteger",   # the sparse int8 rows' product
})
# Every operator a learnable file's step graph may hold (zor.export.learnable_graph); zor.runtime.Learner
# refuses any other
LEARNABLE_OPERATORS = frozenset({
    "Identity", "Cast", "Greater", "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Max", "Min", "Clip", "Sqrt", "Pow",
    "Reciprocal", "MatMul", "Gemm", "Transpose", "ReduceMean", "ReduceL2", "ReduceSumSquare", "Shape", "Gather",
    "Relu", "Sigmoid", "Tanh",
    "ReduceSum",            # 0·Σx in the step's health: a NaN or inf in x makes the step refused
    "Expand",               # the (B,) vector of 1/B: batch means as small products
    "BatchNormalization",   # inference mode (mean 0, variance 1, epsilon 0): one-pass affine map in Adam's step
    "NonZero", "Reshape", "Concat", "Pad", "CumSum", "Split",   # co-activity on the active post units only
})
# the operators that may run on constants alone (onnxruntime folds those at load): each one's output
# holds as many elements as its first input, so a small file cannot ask for a large tensor
CONSTANT_OPERATORS = frozenset({"Identity", "Cast", "Reshape", "QuantizeLinear", "DequantizeLinear"})

PATHS = ("dense", "sparse", "auto")     # what ``zor-export --path`` accepts
FORMS = ("batch1", "union")             # the sparse graph forms (see the module docstring)


class KEYS:
    """metadata_props keys."""

    FORMAT = "zor.format"
    FORMAT_VERSION = "zor.format_version"
    ENGINE_VERSION = "zor.engine_version"
    LAYERS = "zor.layers"
    TASK = "zor.task"
    STATEFUL = "zor.stateful"
    STATE = "zor.state"
    QUANTIZATION = "zor.quantization"
    CALIBRATION = "zor.calibration"
    VERIFICATION = "zor.verification"
    WEIGHTS_SHA256 = "zor.weights_sha256"
    PATHS = "zor.paths"
    WEIGHTS = "zor.weights"
    INTEGRITY = "zor.integrity"
