"""The converter registry: one small converter per layer kind.

A layer's *kind* is how it is reached from the layer before (the engine's
``Layer.kind``): ``"dense"`` (h_i = a_{i−1} W_{i−1}, a MatMul) or ``"conv"`` (a shared
k×k kernel, an ONNX Conv between two reshapes). Whether the layer keeps state
(decay > 0) is a property of its neuron, handled inside every converter, so each
kind exports stateless and stateful. :func:`converter_for` gives the converter of a
layer, and an unknown kind raises :class:`~zor.common.errors.UnsupportedLayerError` listing
the supported kinds: a layer is never skipped. The built-in converters
(:mod:`zor.export.converters`) register themselves when :mod:`zor.export.graph`, the
module that needs them, is imported (as every use of ``zor.export``'s public names does);
this module imports nothing of the exporter.

A converter is a function ``convert(ctx: LayerContext) -> str``: it emits the
connection into layer i (none for the input layer) and layer i's neuron through
``ctx.graph``, and returns the tensor it passes on (a_i for a hidden layer,
``output`` for the last one).

Example:
    >>> from zor import Layer
    >>> import zor.export.converters          # the built-in kinds register on import
    >>> kind_of(Layer(4)), kind_of(Layer(4, decay=0.5))
    ('dense', 'dense')
    >>> supported_kinds()
    ['conv', 'dense']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from zor.common.errors import UnsupportedLayerError

__all__ = ["LayerContext", "Converter", "register", "converter_for", "kind_of", "supported_kinds",
           "connection_prefix", "REGISTRY"]


@dataclass
class LayerContext:
    """Everything a converter needs for layer i.

    ``threshold`` is θ_i per unit (n_i,) float32; ``weight`` is W_{i−1}, the weight
    of the connection *into* layer i (None for the input layer); ``input_name`` the
    tensor the connection reads (a_{i−1}; ``input`` for layer 0, which has no
    connection); ``prev_layer`` layer i−1 (None for i = 0); ``path`` how the
    connection into layer i is computed (:mod:`zor.export.paths`; None or dense: MatMul).
    """

    index: int
    layer: Any
    threshold: np.ndarray
    weight: Optional[np.ndarray]
    input_name: str
    prev_layer: Any
    is_last: bool
    graph: Any  # export.builder.GraphBuilder
    path: Any = None     # export.paths.ConnectionPath of the connection into layer i (None: dense)
    form: str = "batch1"  # the sparse form ("batch1" or "union") when ``path`` is sparse


Converter = Callable[[LayerContext], str]
REGISTRY: dict[str, Converter] = {}


def connection_prefix(j: int) -> str:
    """Node-name prefix of connection j (layer j → j+1, weight W_j): int8 fallback excludes these nodes."""
    return f"connection{j}."


def register(kind: str) -> Callable[[Converter], Converter]:
    """Decorator: register ``fn`` as the converter of layer kind ``kind``."""

    def deco(fn: Converter) -> Converter:
        if kind in REGISTRY and REGISTRY[kind] is not fn:
            raise ValueError(f"a converter for layer kind {kind!r} is already registered")
        REGISTRY[kind] = fn
        return fn

    return deco


def supported_kinds() -> list[str]:
    """The registered layer kinds, sorted (the built-in ones register when ``zor.export`` is imported)."""
    return sorted(REGISTRY)


def kind_of(layer: Any) -> str:
    """A layer's kind: its ``kind`` attribute (``dense``, ``conv``), else its class name."""
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
