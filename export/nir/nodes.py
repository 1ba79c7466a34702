"""NIR node converters: one small converter per NIR node type, registered by type.

Each converter knows, for one node type: its parameters (float32 arrays, finite), its output shape,
its state variables, and one discrete time step of it written twice, in torch (the reference,
:mod:`.reference`) and as ONNX nodes (the export, :mod:`.onnxgraph`), with the same arithmetic in
the same order so the two agree to float32 rounding. The step's equations are in each converter's
docstring (:mod:`.layers` for the stateless nodes, :mod:`.neurons` for the neurons). An unknown node
type raises :class:`~zor.common.errors.NirGraphError` listing the supported kinds (:mod:`.kinds`,
which loads the built-in converters and looks them up).

Values inside one step are (B, *shape) float32; state variables are (B, *shape) too (flat (B, n) in
the ONNX file's interface).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from zor.common.errors import NirGraphError

__all__ = ["Node", "Converter", "register", "REGISTRY", "check_array_param", "declared_input"]


@dataclass
class Node:
    """One NIR node, parsed: kind (the NIR class name), parameters, shapes."""

    name: str
    kind: str
    params: dict[str, np.ndarray]                  # float32, finite
    attrs: dict[str, Any] = field(default_factory=dict)   # stride, padding, ... (ints)
    declared_in: Optional[tuple[int, ...]] = None  # input_type the file declares (None: not declared)
    in_shape: tuple[int, ...] = ()
    out_shape: tuple[int, ...] = ()
    where: str = ""

    def set_input(self, shape: tuple[int, ...]) -> None:
        shape = tuple(int(v) for v in shape)
        d = self.declared_in
        if d is not None and len(d) > 0 and (d != shape if len(d) == len(shape) else math.prod(d) != math.prod(shape)):
            raise NirGraphError(f"{self.where}: node {self.name!r} ({self.kind}) declares input shape {list(d)} but "
                                f"its incoming edges carry {list(shape)}: expected the shapes to meet along the edge")
        self.in_shape = shape

    def fail(self, what: str) -> NirGraphError:
        return NirGraphError(f"{self.where}: node {self.name!r} ({self.kind}): {what}")


class Converter:
    """Base of a node converter (subclasses set ``kind`` and override what differs)."""

    kind = ""
    fields: tuple[str, ...] = ()     # parameter arrays the node must carry
    optional: dict[str, float] = {}  # parameters with a default when absent
    state: tuple[str, ...] = ()      # state variables, each (B, *shape)
    spiking = False                  # output is a spike train (0/1)
    elementwise = True               # output shape = input shape; parameters broadcast to it

    def attrs(self, raw: Any, node: Node) -> dict[str, Any]:
        return {}

    def out_shape(self, node: Node) -> tuple[int, ...]:
        if self.elementwise:
            for k, p in node.params.items():
                try:
                    ok = np.broadcast_shapes(p.shape, node.in_shape) == node.in_shape
                except ValueError:
                    ok = False
                if not ok:
                    raise node.fail(f"parameter {k} has shape {list(p.shape)}: expected a scalar or a shape "
                                    f"broadcasting to the node's input {list(node.in_shape)}")
        return node.in_shape

    def rest(self, node: Node) -> np.ndarray:
        """The output with zero input and zero state."""
        return np.zeros(node.out_shape, np.float32)

    def torch_step(self, node: Node, x: Any, state: dict[str, Any], dt: float) -> tuple[Any, dict, Any]:
        """(y, new state, spikes or None) for x (B, *in_shape) torch."""
        raise NotImplementedError

    def onnx_step(self, node: Node, b: Any, x: str, state: dict[str, str], dt: float) -> tuple[str, dict, Optional[str]]:
        """The same step as ONNX nodes through the builder ``b``: (y name, new state names, spikes name or None)."""
        raise NotImplementedError


REGISTRY: dict[str, Converter] = {}


def register(kind: str) -> Callable[[type], type]:
    """Class decorator: register a Converter subclass for NIR node type ``kind`` (its class name in ``nir``)."""
    def deco(cls: type) -> type:
        if kind in REGISTRY:
            raise ValueError(f"NIR node type {kind!r} is already registered")
        cls.kind = kind
        REGISTRY[kind] = cls()
        return cls
    return deco


def check_array_param(node_name: str, kind: str, key: str, value: Any, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise NirGraphError(f"{where}: node {node_name!r} ({kind}): parameter {key} is "
                            f"{type(value).__name__}: expected an array of numbers") from None
    if not np.isfinite(arr).all():
        raise NirGraphError(f"{where}: node {node_name!r} ({kind}): parameter {key} holds "
                            f"{int((~np.isfinite(arr)).sum())} non-finite value(s) (NaN or inf): expected finite numbers")
    return arr.astype(np.float32)


def declared_input(raw: Any) -> Optional[tuple[int, ...]]:
    t = getattr(raw, "input_type", None)
    if not isinstance(t, dict) or not t:
        return None
    v = next(iter(t.values()))
    try:
        arr = np.asarray(v).reshape(-1)
        return tuple(int(a) for a in arr) if arr.size else None
    except (TypeError, ValueError):
        return None
