"""Reading an exported file back: a Zor ONNX file, checked, with its external weights.

Example:
    >>> import tempfile, os
    >>> from zor import Zor, Layer
    >>> from zor.export import export
    >>> p = os.path.join(tempfile.mkdtemp(), "m.onnx")
    >>> _ = export(Zor([Layer(4), Layer(2)], seed=0), p, verify_model=False)
    >>> [o.name for o in load_model_file(p).graph.output][:1]
    ['output']
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Union

import onnx

from zor.common import format as fmt
from zor.common.errors import ModelFileError, WeightFileError

__all__ = ["load_model_file"]


def load_model_file(path: Union[str, os.PathLike], load_external: bool = True) -> onnx.ModelProto:
    """Read a Zor ONNX file; ModelFileError when it is missing, not ONNX, or not a Zor export.

    A file with external weights (``zor.weights``) gets them loaded from its ``.weights``
    file (``load_external=False``: left as references); WeightFileError when that file is
    missing or of another size than the metadata says.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist (expected an .onnx file written by zor-export)")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends are not one family
        raise ModelFileError(f"{path}: not a readable ONNX file (truncated or foreign?): {exc}") from exc
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get(fmt.KEYS.FORMAT) != fmt.FORMAT:
        raise ModelFileError(f"{path}: expected a Zor export (metadata {fmt.KEYS.FORMAT}={fmt.FORMAT!r}), got "
                             f"{meta.get(fmt.KEYS.FORMAT)!r}: was it written by zor-export?")
    try:
        version = int(meta.get(fmt.KEYS.FORMAT_VERSION, ""))
    except ValueError as exc:
        raise ModelFileError(f"{path}: bad {fmt.KEYS.FORMAT_VERSION} {meta.get(fmt.KEYS.FORMAT_VERSION)!r}") from exc
    if version > fmt.FORMAT_VERSION:
        raise ModelFileError(f"{path}: format version {version} is newer than this exporter reads "
                             f"(≤ {fmt.FORMAT_VERSION}); upgrade zor-edge")
    if load_external and any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer):
        _check_weights_file(path, meta.get(fmt.KEYS.WEIGHTS, ""))
        try:
            onnx.load_external_data_for_model(proto, str(path.parent))
        except Exception as exc:
            raise WeightFileError(f"{path.name}: cannot read its external weights: {exc}") from exc
    return proto


def _check_weights_file(path: Path, spec_text: str) -> None:
    """ModelFileError / WeightFileError unless the ``.weights`` file next to ``path`` is as ``zor.weights`` says."""
    try:
        spec = json.loads(spec_text) if spec_text else {}
        location, size = str(spec["location"]), int(spec["bytes"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{path.name}: has external weights but no valid {fmt.KEYS.WEIGHTS} metadata "
                             f"({exc}): expected {{location, bytes, tensors}}") from None
    wpath = path.parent / location
    if not wpath.is_file():
        raise WeightFileError(f"{path.name}: its weights file {location} is missing: expected {size:,} bytes next to "
                              "the .onnx (copy both files together)")
    have = wpath.stat().st_size
    if have != size:
        raise WeightFileError(f"{path.name}: its weights file {location} holds {have:,} bytes, expected {size:,} as "
                              f"the metadata says ({'truncated' if have < size else 'another export'}?)")
