"""``zor-export inspect``: what an exported file holds, for people and for scripts.

:func:`inspect_file` gathers the metadata, a layer table (kind, size, activation,
state settings, θ summary, calibration spike rate), the verification and
quantization summaries, the graph's I/O, and sizes (file bytes, initializer bytes
by element type); :func:`format_inspection` prints it as text.

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

from .metadata import read_metadata
from .modelfile import load_model_file

__all__ = ["inspect_file", "format_inspection", "quantization_line", "verification_line", "paths_line"]

_DTYPE = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.INT8: "int8",
          onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT32: "int32", onnx.TensorProto.BOOL: "bool",
          onnx.TensorProto.INT64: "int64"}


def _shape(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def inspect_file(path: Union[str, os.PathLike]) -> dict[str, Any]:
    """Everything ``zor-export inspect`` shows, as a dict (JSON-safe)."""
    path = Path(path)
    proto = load_model_file(path, load_external=False)
    meta = read_metadata(proto)
    by_type: Counter = Counter()
    for init in proto.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            length = {kv.key: kv.value for kv in init.external_data}.get("length", "0")
            by_type[_DTYPE.get(init.data_type, str(init.data_type)) + " (external)"] += int(length)
            continue
        by_type[_DTYPE.get(init.data_type, str(init.data_type))] += numpy_helper.to_array(init).nbytes
    calib = meta.get(fmt.KEYS.CALIBRATION) or {}
    rates = {row.get("layer"): row.get("spike_rate") for row in calib.get("layers", [])} if isinstance(calib, dict) else {}
    layers = []
    for row in meta.get(fmt.KEYS.LAYERS) or []:
        layers.append({**row, "calibration_spike_rate": rates.get(row.get("index"))})
    paths = meta.get(fmt.KEYS.PATHS) or {}
    weights = meta.get(fmt.KEYS.WEIGHTS) or {}
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
        "layers": layers,
        "quantization": meta.get(fmt.KEYS.QUANTIZATION),
        "calibration": calib,
        "verification": meta.get(fmt.KEYS.VERIFICATION),
        "weights_sha256": meta.get(fmt.KEYS.WEIGHTS_SHA256),
        "paths": paths,
        "weights": {k: v for k, v in weights.items() if k != "tensors"} if isinstance(weights, dict) else weights,
        "inputs": [{"name": i.name, "shape": _shape(i), "dtype": _DTYPE.get(i.type.tensor_type.elem_type)}
                   for i in proto.graph.input],
        "outputs": [{"name": o.name, "shape": _shape(o), "dtype": _DTYPE.get(o.type.tensor_type.elem_type)}
                    for o in proto.graph.output],
        "nodes": dict(Counter(n.op_type for n in proto.graph.node)),
        "initializer_bytes": dict(by_type),
    }


def _num(x: Any, spec: str = ".4g") -> str:
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return format(x, spec)
    return "-" if x is None else str(x)


def verification_line(v: Any) -> str:
    if not isinstance(v, dict) or not v:
        return "none stored"
    if v.get("skipped"):
        return "skipped at export (--no-verify)"
    parts = ["passed" if v.get("passed") else "FAILED"]
    for key in ("float32", "sparse", "fp16"):
        rep = v.get(key)
        if isinstance(rep, dict):
            out = rep.get("outputs", {}).get("output", {})
            agree = min((row.get("spike_agreement", 1.0) for row in rep.get("layers", [])), default=1.0)
            ties = sum(row.get("ties", 0) for row in rep.get("layers", []))
            parts.append(f"{key}: max |Δoutput| {_num(out.get('max_abs_diff'), '.3g')}, min spike agreement "
                         f"{100 * agree:.3f} % ({ties} ties), {rep.get('steps')} step(s) × {rep.get('batch')} rows")
    if isinstance(v.get("int8"), dict):
        parts.append(f"int8: metric drop {_num(v['int8'].get('metric_drop'), '.3f')} points")
    return "; ".join(parts)


def paths_line(p: Any) -> str:
    """One line: requested path, form and batch limit, and each connection's path."""
    if not isinstance(p, dict) or not p:
        return "dense (no zor.paths)"
    conns = p.get("connections") or []
    sparse = [c for c in conns if c.get("path") == "sparse"]
    head = f"{p.get('requested', 'dense')}: {len(sparse)} of {len(conns)} connections sparse"
    if sparse:
        head += f" ({p.get('form')} form, batch ≤ {p.get('max_batch')})"
    if p.get("break_even") is not None and p.get("requested") == "auto":
        head += f"; profile {p.get('profile')} break-even {p.get('break_even')}"
    return head + "".join(f"; {c.get('connection')}: {c.get('path')}" for c in conns)


def quantization_line(q: Any) -> str:
    if not isinstance(q, dict) or q.get("mode", "none") == "none":
        return "none (float32)"
    if q["mode"] == "fp16":
        m = q.get("metric", {})
        return f"fp16 weights, float32 compute; metric drop {_num(m.get('drop'), '.4f')} ({m.get('metric')} vs {m.get('reference')})"
    r = q.get("recipe", {})
    m = q.get("metric", {})
    fallback = q.get("fallback") or []
    return (f"int8 (profile {q.get('profile')}: {r.get('format')} act {r.get('activation_type')} / weight "
            f"{r.get('weight_type')}, per_channel={r.get('per_channel')}, reduce_range={r.get('reduce_range')}); "
            f"charges {q.get('charges')}; fallback connections {fallback or 'none'}; metric drop "
            f"{_num(m.get('drop'), '.4f')} points ({m.get('metric')} vs {m.get('reference')}, "
            f"budget {q.get('max_drop')}); PSNR drop {_num(m.get('psnr_drop'), '.4f')} dB")


def format_inspection(info: dict[str, Any]) -> str:
    """Human-readable text of :func:`inspect_file`'s dict."""
    task = info.get("task") or {}
    inp, out = task.get("input", {}), task.get("output", {})
    lines = [
        f"{info['file']}: {info['bytes']:,} bytes, {info['format']} v{info['format_version']}, "
        f"engine {info['engine_version']}, opset {info['opset'][0]['version'] if info['opset'] else '?'}, IR {info['ir_version']}",
        f"task: {task.get('name')}",
        f"  input  {inp.get('shape')} {inp.get('dtype')} range {inp.get('range')}; preprocessing: {inp.get('preprocessing')}",
        f"  output {out.get('shape')} {out.get('dtype')} range {out.get('range')}; meaning: {out.get('meaning')}",
        "stateful: " + ("yes, state " + ", ".join(f"{s['input']}→{s['output']} ({s['size']}, starts at {s['initial']})"
                                                  for s in info.get("state") or []) if info["stateful"] else "no"),
        "quantization: " + quantization_line(info.get("quantization")),
        "verification: " + verification_line(info.get("verification")),
        "paths: " + paths_line(info.get("paths")),
        "weights: " + (f"external, {info['weights'].get('location')} ({info['weights'].get('bytes'):,} bytes)"
                       if info.get("weights") else "inside the file"),
        f"weights sha256: {info.get('weights_sha256')}",
        "",
        f"{'layer':>5}  {'kind':<15}{'size':>6}  {'activation':<10} {'decay':>6} {'refr.':>6} {'min_c':>6} "
        f"{'θ min':>9} {'θ mean':>9} {'θ max':>9} {'spike rate':>10}",
    ]
    for row in info["layers"]:
        th = row.get("threshold", {})
        lines.append(
            f"{row.get('index'):>5}  {row.get('kind', ''):<15}{row.get('size'):>6}  {row.get('activation', ''):<10} "
            f"{_num(row.get('decay'), '.3g'):>6} {_num(row.get('refractory'), '.3g'):>6} {_num(row.get('min_charge'), '.3g'):>6} "
            f"{_num(th.get('min')):>9} {_num(th.get('mean')):>9} {_num(th.get('max')):>9} "
            f"{_num(row.get('calibration_spike_rate'), '.3f'):>10}")
    q = info.get("quantization") or {}
    if isinstance(q, dict) and q.get("mode") == "int8":
        lines += ["", f"{'layer':>5}  {'precision':<9} {'spike agreement':>15} {'weight bytes':>13} {'float bytes':>12} "
                      f"{'drop alone':>10}"]
        for row in q.get("layers", []):
            lines.append(f"{row['layer']:>5}  {row.get('precision', 'input'):<9} {100 * row['spike_agreement']:>14.3f}% "
                         f"{_num(row.get('weight_bytes'), ','):>13} {_num(row.get('weight_bytes_float'), ','):>12} "
                         f"{_num(row.get('metric_drop_alone'), '.4f'):>10}")
    lines += ["", "sizes: file " + f"{info['bytes']:,} B; initializers "
              + ", ".join(f"{k} {v:,} B" for k, v in sorted(info["initializer_bytes"].items())),
              "inputs: " + ", ".join(f"{i['name']} {i['shape']} {i['dtype']}" for i in info["inputs"]),
              "outputs: " + ", ".join(f"{o['name']} {o['shape']} {o['dtype']}" for o in info["outputs"]),
              "nodes: " + ", ".join(f"{k} {v}" for k, v in sorted(info["nodes"].items()))]
    return "\n".join(lines)
