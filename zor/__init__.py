"""Zor: spiking networks that gate analog charges with binary spikes.

``from zor import Zor, Layer`` gives the torch training engine. Importing ``zor``
itself stays light (no torch): engine names are loaded on first use, so
``import zor.runtime`` works on a device without torch.

Parts:
    zor           the training engine (torch): Zor, Layer, rules, checkpoints, data
    zor.export    Zor → ONNX (torch + onnx), verification, int8
    zor.runtime   torch-free inference on onnxruntime
    zor.devices   device profiles (declarative data, torch-free)
"""

from __future__ import annotations

import importlib
from typing import Any

from zor.common.errors import ZorError

__version__ = "0.1.0"

# name -> module that defines it; loaded on first attribute access (PEP 562).
_LAZY = {
    "Zor": "zor.engine.network",
    "ZorConfig": "zor.engine.config",
    "History": "zor.engine.training",
    "Layer": "zor.engine.layer",
    "Conv": "zor.engine.layer",
    "RULES": "zor.engine.rules",
}

__all__ = ["ZorError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'zor' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
