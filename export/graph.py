"""Zor model → ONNX ``ModelProto`` (float32), through the converter registry.

Graph (names from :mod:`zor.common.format`; B dynamic):

    inputs   input (B, n_0) float32, state_in_i (B, n_i) per stateful layer
    outputs  output (B, n_L), state_out_i per stateful layer, spikes_i (B, n_i) bool,
             charge_i (B, n_i) float32 for every layer

Each layer is emitted by the converter of its kind (:mod:`zor.export.registry`);
the result passes ``onnx.checker`` (full check) and strict shape inference.

Example:
    >>> from zor import Zor, Layer
    >>> proto = to_onnx(Zor([Layer(4), Layer(3, activation_function="relu"), Layer(2)], seed=0))
    >>> [o.name for o in proto.graph.output][:3]
    ['output', 'spikes_0', 'spikes_1']
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import onnx
from onnx import TensorProto

import zor
from zor.common import format as fmt
from zor.common.errors import ExportError

from . import converters  # noqa: F401  (registers the built-in layer kinds: this module needs them)
from .builder import GraphBuilder
from .metadata import build_metadata, float_arrays, set_metadata
from .paths import PathPlan
from .registry import LayerContext, converter_for

__all__ = ["to_onnx", "check_finite", "check_proto"]


def check_finite(model) -> None:
    """Raise ExportError when a weight is non-finite or a threshold is NaN (θ = ±inf is legal)."""
    thetas, weights = float_arrays(model)
    for i, theta in enumerate(thetas):
        bad = int(np.isnan(theta).sum())
        if bad:
            raise ExportError(f"threshold θ_{i} holds {bad} NaN values: expected numbers (−inf means "
                              "'always spikes'); the model is corrupt or its training diverged")
    for i, w in enumerate(weights):
        bad = int((~np.isfinite(w)).sum())
        if bad:
            raise ExportError(f"weights W_{i} {w.shape} hold {bad} NaN/inf values: expected finite weights; "
                              "the model is corrupt or its training diverged")


def check_proto(proto: onnx.ModelProto) -> None:
    """onnx.checker (full) and strict shape inference; raise ExportError on failure."""
    try:
        onnx.checker.check_model(proto, full_check=True)
        onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the exported graph is not valid ONNX: {exc}") from exc


def to_onnx(model, metadata: Optional[dict[str, str]] = None, engine_version: Optional[str] = None,
            paths: Optional[PathPlan] = None) -> onnx.ModelProto:
    """The per-step graph of ``model`` with its ``zor.*`` metadata.

    ``paths`` (a :class:`zor.export.paths.PathPlan`) makes some connections sparse
    (event-driven); by default every connection is a dense float32 MatMul.
    """
    check_finite(model)
    if paths is not None and len(paths.connections) != len(model.layers) - 1:
        raise ExportError(f"path plan for {len(paths.connections)} connections, but the model has "
                          f"{len(model.layers) - 1}")
    thetas, weights = float_arrays(model)
    g = GraphBuilder()
    g.add_input(fmt.INPUT, [None, model.layers[0].size])
    a = fmt.INPUT
    last = len(model.layers) - 1
    for i, layer in enumerate(model.layers):
        convert = converter_for(layer)
        a = convert(LayerContext(index=i, layer=layer, threshold=thetas[i],
                                 weight=weights[i - 1] if i > 0 else None, input_name=a,
                                 prev_layer=model.layers[i - 1] if i > 0 else None,
                                 is_last=i == last, graph=g,
                                 path=paths.get(i - 1) if (paths is not None and i > 0) else None,
                                 form=paths.form if paths is not None else "batch1"))
    g.add_output(fmt.OUTPUT, [None, model.layers[-1].size])
    for i, layer in enumerate(model.layers):
        if layer.stateful:
            g.add_output(fmt.state_out(i), [None, layer.size])
    for i, layer in enumerate(model.layers):
        g.add_output(fmt.spikes(i), [None, layer.size], TensorProto.BOOL)
    for i, layer in enumerate(model.layers):
        g.add_output(fmt.charge(i), [None, layer.size])
    if engine_version is None:
        engine_version = zor.__version__
    proto = g.model("zor", engine_version, doc="Zor spiking network, per-step graph (see zor.common.format)")
    set_metadata(proto, metadata if metadata is not None else build_metadata(model, engine_version, paths=paths))
    check_proto(proto)
    return proto
