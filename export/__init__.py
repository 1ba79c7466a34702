"""Zor → ONNX export (needs torch and onnx): one verified, self-describing file.

    from zor.export import export, verify_file, to_onnx
    export("model.zor", "model.onnx")                       # float32, verified
    export("model.zor", "model-int8.onnx", quantize="int8", device="rpi4")

Parts: :mod:`~zor.export.registry` (converter registry) and
:mod:`~zor.export.converters` (one converter per layer kind), :mod:`~zor.export.graph`
(model → ONNX), :mod:`~zor.export.metadata` (the ``zor.*`` keys),
:mod:`~zor.export.verify` (engine vs onnxruntime parity), :mod:`~zor.export.quantize`
(threshold-aware int8), :mod:`~zor.export.fp16`, :mod:`~zor.export.api` (the
pipeline), :mod:`~zor.export.inspect` and :mod:`~zor.export.cli` (``zor-export``).
"""

from .api import ExportResult, export, load_model_file, verify_file
from .graph import to_onnx
from .registry import converter_for, kind_of, register, supported_kinds
from .verify import verify

__all__ = ["export", "verify_file", "verify", "to_onnx", "ExportResult", "load_model_file",
           "register", "converter_for", "kind_of", "supported_kinds"]
