"""What an export starts from: the model (a Zor model or a checkpoint), the device profile, the output path.

Example:
    >>> from zor import Zor, Layer
    >>> model, version = load_source(Zor([Layer(2), Layer(2)], seed=0))
    >>> resolve_profile("generic").name, version == __import__("zor").__version__
    ('generic', True)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Optional

import zor
from zor import devices
from zor.common.errors import ConfigError, OutputPathError
from zor.common.fileio import check_output_file
from zor.engine.checkpoint import read_config
from zor.engine.network import Zor

__all__ = ["load_source", "resolve_profile", "check_output"]


def resolve_profile(device: Any) -> devices.Profile:
    """A :class:`zor.devices.Profile` from a name (``auto``: the profile detected for this machine) or a profile."""
    if device == "auto":
        return devices.detect().profile
    return devices.get(device)


def load_source(source: Any) -> tuple[Zor, str]:
    """(model on the CPU, engine version) from a Zor model or a checkpoint path."""
    if isinstance(source, Zor):
        return source, zor.__version__
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(f"expected a Zor model or a checkpoint path, got {type(source).__name__}")
    meta = read_config(source)             # CheckpointError for missing / truncated / foreign / newer files
    return Zor.load(source, device="cpu"), str(meta.get("engine_version", "unknown"))


def check_output(path: Path, inputs: Iterable[Optional[Any]] = (), create: bool = False) -> None:
    """OutputPathError unless ``path`` can be written, by the one rule of :mod:`zor.common.fileio`: not the
    same file as any of ``inputs`` (the checkpoint, the calibration data; symlinks and hard links
    included), not a folder, in a writable folder that exists (or, with ``create``, that can be made)."""
    if Path(path).is_dir():
        raise OutputPathError(f"cannot write {path}: it is a folder, expected a file path like model.onnx")
    sources = [p for p in inputs if isinstance(p, (str, os.PathLike))]
    check_output_file(path, sources, create=create, what="output")
