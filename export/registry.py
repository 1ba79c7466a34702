"""The converter registry: one small converter per layer kind.

A *kind* names how a layer becomes ONNX nodes. Today the dense Zor layer comes in
two kinds, ``"dense"`` (stateless: c = x) and ``"dense_stateful"`` (c = λ·c̃ + x with
explicit ``state_in_i``/``state_out_i`` tensors); a convolutional kind will come
later. :func:`kind_of` maps a layer object to its kind, :func:`converter_for` gives
the converter, and an unknown kind raises :class:`~zor.errors.UnsupportedLayerError`
listing the supported kinds: a layer is never skipped.

A converter is a function ``convert(ctx: LayerContext) -> str`` that emits the
layer's nodes through ``ctx.graph`` and returns the name of the tensor it passes on
(h_{i+1} = a_i W_i for a hidden layer, ``output`` for the last one).

Example:
    >>> from zor import Layer
    >>> kind_of(Layer(4)), kind_of(Layer(4, decay=0.5))
    ('dense', 'dense_stateful')
    >>> sorted(supported_kinds())
    ['dense', 'dense_stateful']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from zor.errors import UnsupportedLayerError

__all__ = ["LayerContext", "Converter", "register", "converter_for", "kind_of", "supported_kinds", "REGISTRY"]


@dataclass
class LayerContext:
    """Everything a converter needs for layer i.

    ``threshold`` is θ_i (n_i,) float32, ``weight`` W_i (n_i, n_{i+1}) float32 (None
    for the output layer), ``input_name`` the tensor holding the layer's input h_i
    (``input`` for layer 0, else the previous MatMul's output).
    """

    index: int
    layer: Any
    threshold: np.ndarray
    weight: Optional[np.ndarray]
    input_name: str
    is_last: bool
    graph: Any  # export.builder.GraphBuilder


Converter = Callable[[LayerContext], str]
REGISTRY: dict[str, Converter] = {}


def register(kind: str) -> Callable[[Converter], Converter]:
    """Decorator: register ``fn`` as the converter of layer kind ``kind``."""

    def deco(fn: Converter) -> Converter:
        if kind in REGISTRY and REGISTRY[kind] is not fn:
            raise ValueError(f"a converter for layer kind {kind!r} is already registered")
        REGISTRY[kind] = fn
        return fn

    return deco


def supported_kinds() -> list[str]:
    from . import converters  # noqa: F401  (registers the built-in kinds)

    return sorted(REGISTRY)


def kind_of(layer: Any) -> str:
    """The kind of a layer object: ``dense`` / ``dense_stateful`` for :class:`zor.Layer`.

    Other layer types name their own kind through a ``kind`` attribute, or fall back
    to their class name (which then has to be registered).
    """
    from zor.layer import Layer

    if isinstance(layer, Layer):
        return "dense_stateful" if layer.stateful else "dense"
    kind = getattr(layer, "kind", None)
    return kind if isinstance(kind, str) else type(layer).__name__


def converter_for(layer: Any) -> Converter:
    """The converter for ``layer``; raises UnsupportedLayerError listing the supported kinds."""
    kinds = supported_kinds()
    kind = kind_of(layer)
    if kind not in REGISTRY:
        raise UnsupportedLayerError(
            f"no ONNX converter for layer kind {kind!r} ({type(layer).__name__}): "
            f"supported kinds are {', '.join(kinds)}"
        )
    return REGISTRY[kind]
