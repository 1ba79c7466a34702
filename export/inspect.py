"""``zor-export inspect``: what an exported file holds, for people and for scripts.

:func:`inspect_file` gathers the metadata, a layer table (kind, size, activation,
state settings, θ summary, calibration spike rate), the verification and
quantization summaries, the graph's I/O, and sizes (file bytes, initializer bytes
by element type); :func:`format_inspection` prints it as text.

A file whose metadata is partial or malformed (a key missing, a value of the wrong JSON
type, a row that is not an object) is still inspected: each structured value that is
not of its expected type shows as absent and is named under ``problems``; nothing in
the metadata makes inspection fail with anything but a :class:`~zor.common.errors.ZorError`.

Example:
    >>> import tempfile, os
    >>> from zor import Zor, Layer
    >>> from zor.export import export
    >>> p = os.path.join(tempfile.mkdtemp(), "m.onnx")
    >>> _ = export(Zor([Layer(4), Layer(2)], seed=0), p)
    >>> inspect_file(p)["layers"][1]["size"]
    2
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Union

import onnx
from onnx import numpy_helper

from zor.common import format as fmt
from zor.common.errors import ModelFileError

from .metadata import read_metadata
from .modelfile import load_model_file

__all__ = ["inspect_file", "format_inspection", "quantization_line", "verification_line", "paths_line"]

_DTYPE = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.INT8: "int8",
          onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT32: "int32", onnx.TensorProto.BOOL: "bool",
          onnx.TensorProto.INT64: "int64"}

# the JSON type each structured key must hold (dict: an object, list: an array)
_EXPECTED = {fmt.KEYS.TASK: dict, fmt.KEYS.LAYERS: list, fmt.KEYS.STATE: list, fmt.KEYS.QUANTIZATION: dict,
             fmt.KEYS.CALIBRATION: dict, fmt.KEYS.VERIFICATION: dict, fmt.KEYS.PATHS: dict, fmt.KEYS.WEIGHTS: dict}
_JSON_NAME = {dict: "a JSON object", list: "a JSON array"}


def _obj(x: Any) -> dict:
    """``x`` when it is a dict, else an empty one (a malformed metadata value reads as absent)."""
    return x if isinstance(x, dict) else {}


def _rows(x: Any) -> list[dict]:
    """The dict rows of ``x`` when it is a list, else none."""
    return [row for row in x if isinstance(row, dict)] if isinstance(x, list) else []


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _shape(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def _typed_metadata(meta: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The metadata with every structured value of the wrong type replaced by None, and the problems found."""
    problems, out = [], dict(meta)
    for key, kind in _EXPECTED.items():
        value = meta.get(key)
        if value is not None and not isinstance(value, kind):
            problems.append(f"{key}: expected {_JSON_NAME[kind]}, got {type(value).__name__} {str(value)[:40]!r}")
            out[key] = None
    for key, kind in ((fmt.KEYS.LAYERS, "layer"), (fmt.KEYS.STATE, "state")):
        bad = [i for i, row in enumerate(out.get(key) or []) if not isinstance(row, dict)]
        if bad:
            problems.append(f"{key}: {kind} rows {bad[:5]} are not JSON objects (left out)")
    return out, problems


def _initializer_bytes(proto: onnx.ModelProto, problems: list[str]) -> dict[str, int]:
    by_type: Counter = Counter()
    for init in proto.graph.initializer:
        kind = _DTYPE.get(init.data_type, str(init.data_type))
        if init.data_location == onnx.TensorProto.EXTERNAL:
            length = {kv.key: kv.value for kv in init.external_data}.get("length", "0")
            if not str(length).isdigit():
                problems.append(f"initializer {init.name}: external length {length!r} is not a byte count")
                continue
            by_type[kind + " (external)"] += int(length)
            continue
        try:
            by_type[kind] += numpy_helper.to_array(init).nbytes
        except Exception as exc:  # onnx raises several families for a tensor it cannot decode
            problems.append(f"initializer {init.name}: cannot be read ({type(exc).__name__})")
    return dict(by_type)


def _layer_rows(meta: dict[str, Any]) -> list[dict[str, Any]]:
    calib = _obj(meta.get(fmt.KEYS.CALIBRATION))
    rates = {}
    for row in _rows(calib.get("layers")):
        if isinstance(row.get("layer"), (int, str)):
            rates[row["layer"]] = row.get("spike_rate")
    layers = []
    for row in _rows(meta.get(fmt.KEYS.LAYERS)):
        index = row.get("index")
        layers.append({**row, "calibration_spike_rate": rates.get(index) if isinstance(index, (int, str)) else None})
    return layers


def inspect_file(path: Union[str, os.PathLike]) -> dict[str, Any]:
    """Everything ``zor-export inspect`` shows, as a dict (JSON-safe); ``problems`` lists the metadata
    values that were malformed (see the module)."""
    path = Path(path)
    proto = load_model_file(path, load_external=False)
    try:
        meta, problems = _typed_metadata(read_metadata(proto))
    except RecursionError:
        raise ModelFileError(f"{path}: metadata JSON nested too deeply to read: expected a Zor export") from None
    weights = meta.get(fmt.KEYS.WEIGHTS)
    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "format": meta.get(fmt.KEYS.FORMAT),
        "format_version": meta.get(fmt.KEYS.FORMAT_VERSION),
        "engine_version": meta.get(fmt.KEYS.ENGINE_VERSION),
        "opset": [{"domain": o.domain or "ai.onnx", "version": o.version} for o in proto.opset_import],
        "ir_version": proto.ir_version,
        "task": meta.get(fmt.KEYS.TASK),
        "stateful": meta.get(fmt.KEYS.STATEFUL) == "true",
        "state": meta.get(fmt.KEYS.STATE),
        "layers": _layer_rows(meta),
        "quantization": meta.get(fmt.KEYS.QUANTIZATION),
        "calibration": meta.get(fmt.KEYS.CALIBRATION) or {},
        "verification": meta.get(fmt.KEYS.VERIFICATION),
        "weights_sha256": meta.get(fmt.KEYS.WEIGHTS_SHA256),
        "paths": meta.get(fmt.KEYS.PATHS) or {},
        "weights": {k: v for k, v in weights.items() if k != "tensors"} if isinstance(weights, dict) else weights,
        "inputs": [{"name": i.name, "shape": _shape(i), "dtype": _DTYPE.get(i.type.tensor_type.elem_type)}
                   for i in proto.graph.input],
        "outputs": [{"name": o.name, "shape": _shape(o), "dtype": _DTYPE.get(o.type.tensor_type.elem_type)}
                    for o in proto.graph.output],
        "nodes": dict(Counter(n.op_type for n in proto.graph.node)),
        "initializer_bytes": _initializer_bytes(proto, problems),
        "problems": problems,
    }


def _num(x: Any, spec: str = ".4g") -> str:
    if _is_num(x):
        return format(x, spec)
    return "-" if x is None else str(x)


def _pct(x: Any, spec: str = ".3f") -> str:
    """A share in [0, 1] as a percentage, or the value as text when it is not a number."""
    return format(100 * x, spec) + " %" if _is_num(x) else _num(x)


def _float_report(key: str, rep: dict) -> str:
    out = _obj(_obj(rep.get("outputs")).get("output"))
    layers = _rows(rep.get("layers"))
    agree = [row.get("spike_agreement", 1.0) for row in layers]
    ties = [row.get("ties", 0) for row in layers]
    min_agree = min(agree, default=1.0) if all(_is_num(a) for a in agree) else None
    n_ties = sum(ties) if all(_is_num(t) for t in ties) else None
    return (f"{key}: max |Δoutput| {_num(out.get('max_abs_diff'), '.3g')}, min spike agreement "
            f"{_pct(min_agree)} ({_num(n_ties)} ties), {_num(rep.get('steps'))} step(s) × "
            f"{_num(rep.get('batch'))} rows")


def verification_line(v: Any) -> str:
    """One line: passed or not, and per stored form its output error and spike agreement."""
    if not isinstance(v, dict) or not v:
        return "none stored"
    if v.get("skipped"):
        return "skipped at export (--no-verify)"
    parts = ["passed" if v.get("passed") else "FAILED"]
    for key in ("float32", "sparse", "fp16"):
        if isinstance(v.get(key), dict):
            parts.append(_float_report(key, v[key]))
    if isinstance(v.get("int8"), dict):
        parts.append(f"int8: metric drop {_num(v['int8'].get('metric_drop'), '.3f')} points")
    return "; ".join(parts)


def paths_line(p: Any) -> str:
    """One line: requested path, form and batch limit, and each connection's path. The profile's
    break-even is the rate for a large connection; each connection's ``reason`` (``zor-export``
    prints it) names the break-even for its own shape and synapse count (lower: the sparse form's fixed
    cost, :func:`zor.export.paths.effective_break_even`), the one it was compared with."""
    if not isinstance(p, dict) or not p:
        return "dense (no zor.paths)"
    conns = _rows(p.get("connections"))
    sparse = [c for c in conns if c.get("path") == "sparse"]
    head = f"{p.get('requested', 'dense')}: {len(sparse)} of {len(conns)} connections sparse"
    if sparse:
        head += f" ({p.get('form')} form, batch ≤ {p.get('max_batch')})"
    if p.get("break_even") is not None and p.get("requested") == "auto":
        head += (f"; profile {p.get('profile')} break-even {_num(p.get('break_even'))} for large connections "
                 "(each connection's own, for its shape and synapse count, below)")
    return head + "".join(f"; {c.get('connection')}: {c.get('path')}" for c in conns)


def quantization_line(q: Any) -> str:
    """One line: the quantization mode, recipe, fallback and metric drop."""
    if not isinstance(q, dict) or q.get("mode", "none") == "none":
        return "none (float32)"
    m = _obj(q.get("metric"))
    if q.get("mode") == "fp16":
        return f"fp16 weights, float32 compute; metric drop {_num(m.get('drop'), '.4f')} ({m.get('metric')} vs {m.get('reference')})"
    r = _obj(q.get("recipe"))
    fallback = q.get("fallback") or []
    return (f"{q.get('mode')} (profile {q.get('profile')}: {r.get('format')} act {r.get('activation_type')} / weight "
            f"{r.get('weight_type')}, per_channel={r.get('per_channel')}, reduce_range={r.get('reduce_range')}); "
            f"charges {q.get('charges')}; fallback connections {fallback or 'none'}; metric drop "
            f"{_num(m.get('drop'), '.4f')} points ({m.get('metric')} vs {m.get('reference')}, "
            f"budget {q.get('max_drop')}); PSNR drop {_num(m.get('psnr_drop'), '.4f')} dB")


def _state_line(info: dict[str, Any]) -> str:
    if not info.get("stateful"):
        return "stateful: no"
    return "stateful: yes, state " + ", ".join(
        f"{s.get('input')}→{s.get('output')} ({s.get('size')}, starts at {s.get('initial')})"
        for s in _rows(info.get("state")))


def _weights_line(w: Any) -> str:
    if not w:
        return "weights: inside the file"
    w = _obj(w)
    return f"weights: external, {w.get('location')} ({_num(w.get('bytes'), ',')} bytes)"


def _header(info: dict[str, Any]) -> list[str]:
    task = _obj(info.get("task"))
    inp, out = _obj(task.get("input")), _obj(task.get("output"))
    opset = _rows(info.get("opset"))
    return [
        f"{info.get('file')}: {_num(info.get('bytes'), ',')} bytes, {info.get('format')} v{info.get('format_version')}, "
        f"engine {info.get('engine_version')}, opset {opset[0].get('version') if opset else '?'}, IR {info.get('ir_version')}",
        f"task: {task.get('name')}",
        f"  input  {inp.get('shape')} {inp.get('dtype')} range {inp.get('range')}; preprocessing: {inp.get('preprocessing')}",
        f"  output {out.get('shape')} {out.get('dtype')} range {out.get('range')}; meaning: {out.get('meaning')}",
        _state_line(info),
        "quantization: " + quantization_line(info.get("quantization")),
        "verification: " + verification_line(info.get("verification")),
        "paths: " + paths_line(info.get("paths")),
        _weights_line(info.get("weights")),
        f"weights sha256: {info.get('weights_sha256')}",
    ]


def _layer_table(info: dict[str, Any]) -> list[str]:
    lines = [f"{'layer':>5}  {'kind':<15}{'size':>6}  {'activation':<10} {'decay':>6} {'refr.':>6} {'min_c':>6} "
             f"{'θ min':>9} {'θ mean':>9} {'θ max':>9} {'spike rate':>10}"]
    for row in _rows(info.get("layers")):
        th = _obj(row.get("threshold"))
        lines.append(
            f"{_num(row.get('index')):>5}  {_num(row.get('kind', '')):<15}{_num(row.get('size')):>6}  "
            f"{_num(row.get('activation', '')):<10} {_num(row.get('decay'), '.3g'):>6} "
            f"{_num(row.get('refractory'), '.3g'):>6} {_num(row.get('min_charge'), '.3g'):>6} "
            f"{_num(th.get('min')):>9} {_num(th.get('mean')):>9} {_num(th.get('max')):>9} "
            f"{_num(row.get('calibration_spike_rate'), '.3f'):>10}")
    q = _obj(info.get("quantization"))
    if q.get("mode") == "int8":
        lines += ["", f"{'layer':>5}  {'precision':<9} {'spike agreement':>15} {'weight bytes':>13} {'float bytes':>12} "
                      f"{'drop alone':>10}"]
        for row in _rows(q.get("layers")):
            lines.append(f"{_num(row.get('layer')):>5}  {_num(row.get('precision', 'input')):<9} "
                         f"{_pct(row.get('spike_agreement')):>16} "
                         f"{_num(row.get('weight_bytes'), ','):>13} {_num(row.get('weight_bytes_float'), ','):>12} "
                         f"{_num(row.get('metric_drop_alone'), '.4f'):>10}")
    return lines


def format_inspection(info: dict[str, Any]) -> str:
    """Human-readable text of :func:`inspect_file`'s dict."""
    sizes = _obj(info.get("initializer_bytes"))
    lines = _header(info) + [""] + _layer_table(info)
    lines += ["", f"sizes: file {_num(info.get('bytes'), ',')} B; initializers "
              + ", ".join(f"{k} {_num(v, ',')} B" for k, v in sorted(sizes.items())),
              "inputs: " + ", ".join(f"{i.get('name')} {i.get('shape')} {i.get('dtype')}" for i in _rows(info.get("inputs"))),
              "outputs: " + ", ".join(f"{o.get('name')} {o.get('shape')} {o.get('dtype')}"
                                      for o in _rows(info.get("outputs"))),
              "nodes: " + ", ".join(f"{k} {v}" for k, v in sorted(_obj(info.get("nodes")).items()))]
    if info.get("problems"):
        lines += ["", "metadata problems (shown as absent above):"] + [f"  {p}" for p in info["problems"]]
    return "\n".join(lines)
