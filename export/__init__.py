"""Zor → ONNX export (needs torch and onnx): one verified, self-describing file.

    from zor.export import export, verify_file, to_onnx
    export("model.zor", "model.onnx")                       # float32, verified
    export("model.zor", "model-int8.onnx", quantize="int8", device="rpi4")

Parts, in the order an export meets them: :mod:`~zor.export.api` (the pipeline) and
:mod:`~zor.export.options` (its settings); :mod:`~zor.export.source` (model, profile,
output) and :mod:`~zor.export.calibration` (data, task metric);
:mod:`~zor.export.graph` (model → ONNX) through :mod:`~zor.export.registry` and
:mod:`~zor.export.converters` (one converter per layer kind) with
:mod:`~zor.export.builder`; :mod:`~zor.export.paths` (dense or sparse per connection)
and :mod:`~zor.export.sparse` (the event-driven form); :mod:`~zor.export.verify`
(engine vs onnxruntime parity, over :mod:`~zor.export.session`);
:mod:`~zor.export.quantize` (threshold-aware int8), :mod:`~zor.export.fp16` and
:mod:`~zor.export.quality`; :mod:`~zor.export.metadata` (the ``zor.*`` keys, strict
JSON by :mod:`~zor.export.jsonsafe`) and :mod:`~zor.export.external` (``.weights``
files). Reading files back: :mod:`~zor.export.modelfile`, :mod:`~zor.export.reverify`,
:mod:`~zor.export.inspect`; :mod:`~zor.export.cli` is ``zor-export``.
"""

import importlib
import sys
import types
from typing import Any

# name -> module that defines it. Importing the package stays light (no torch, no onnx), so
# ``zor-export --help`` and the torch-free parts start fast; the first access of any of these
# names loads them all (PEP 562).
_PUBLIC = {
    "export": ".api",
    "ExportOptions": ".api",
    "ExportResult": ".api",
    "to_onnx": ".graph",
    "load_model_file": ".modelfile",
    "verify_file": ".reverify",
    "verify": ".verify",
    "register": ".registry",
    "converter_for": ".registry",
    "kind_of": ".registry",
    "supported_kinds": ".registry",
    "export_learnable": ".learnable",
    "export_nir": ".nir.export",
}

__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # all at once: the registry's names need the converters that importing the graph registers
    values = {key: getattr(importlib.import_module(module, __name__), key) for key, module in _PUBLIC.items()}
    globals().update(values)
    return values[name]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


class _Package(types.ModuleType):
    """The type of this package's module object.

    The import system binds each submodule on its package when it first loads it;
    ``verify`` names both a submodule and the function, so binding the submodule binds
    its function instead, as an eager ``from .verify import verify`` would leave it.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "verify" and isinstance(value, types.ModuleType):
            value = value.verify
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
