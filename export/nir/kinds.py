"""The NIR node types this importer knows: the built-in converters (:mod:`.layers`, :mod:`.neurons`) and lookup.

:func:`converter_for` gives a node type's converter; an unknown type is a NirGraphError listing
:func:`supported_kinds`. :func:`parse_node` checks one raw ``nir`` node's parameters (present,
numbers, finite) and makes a :class:`~.nodes.Node`.
"""

from __future__ import annotations

from typing import Any

from zor.common.errors import NirGraphError

from . import layers, neurons  # noqa: F401  (the built-in converters register on import)
from .nodes import REGISTRY, Converter, Node, check_array_param, declared_input

__all__ = ["converter_for", "supported_kinds", "parse_node"]


def supported_kinds() -> list[str]:
    return sorted(REGISTRY)


def converter_for(kind: str) -> Converter:
    conv = REGISTRY.get(kind)
    if conv is None:
        raise NirGraphError(f"NIR node type {kind!r} is not supported: expected one of {', '.join(supported_kinds())}")
    return conv


def parse_node(name: str, raw: Any, where: str) -> Node:
    """The parsed node (parameters checked) for one raw ``nir`` node object."""
    kind = type(raw).__name__
    conv = REGISTRY.get(kind)
    if conv is None:
        raise NirGraphError(f"{where}: node {name!r} has NIR type {kind!r}, which is not supported: "
                            f"expected one of {', '.join(supported_kinds())}")
    params = {}
    for key in conv.fields:
        value = getattr(raw, key, None)
        if value is None:
            raise NirGraphError(f"{where}: node {name!r} ({kind}) has no parameter {key!r}: expected "
                                f"{', '.join(conv.fields)}")
        params[key] = check_array_param(name, kind, key, value, where)
    for key, default in conv.optional.items():
        value = getattr(raw, key, None)
        params[key] = check_array_param(name, kind, key, default if value is None else value, where)
    node = Node(name=name, kind=kind, params=params, declared_in=declared_input(raw), where=where)
    node.attrs = conv.attrs(raw, node)
    if kind == "Input":
        if node.declared_in is None:
            raise node.fail("no input_type: expected the Input node to declare the input shape")
        node.in_shape = node.declared_in
    return node
