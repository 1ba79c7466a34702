"""A tiny ONNX graph builder: nodes, initializers and I/O with unique names.

Converters add nodes through it; :mod:`zor.export.graph` turns it into a
``ModelProto``. Names are explicit (the file contract in :mod:`zor.common.format` fixes
the I/O names), and a name used twice raises instead of silently aliasing.

Example:
    >>> import numpy as np
    >>> g = GraphBuilder()
    >>> g.add_input("x", [None, 2])
    'x'
    >>> g.node("Relu", ["x"], ["y"], name="relu")
    'y'
    >>> g.add_output("y", [None, 2])
    'y'
    >>> len(g.nodes)
    1
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["GraphBuilder", "OPSET", "IR_VERSION", "BATCH"]

OPSET = 17          # Greater/Where/MatMul/activations all exist since 13; 17 is the floor we promise
IR_VERSION = 8      # the IR that goes with opset 17: readable by onnxruntime ≥ 1.14 on devices
BATCH = "batch"     # the dynamic batch axis


class GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._tensors: set[str] = set()
        self._node_names: set[str] = set()
        self._constants: dict[tuple, str] = {}

    def _claim(self, name: str) -> str:
        if name in self._tensors:
            raise ValueError(f"tensor name {name!r} is already used in the graph")
        self._tensors.add(name)
        return name

    def add_input(self, name: str, shape: Sequence[Optional[int]], elem_type: int = TensorProto.FLOAT) -> str:
        """A graph input; ``None`` in ``shape`` is the dynamic batch axis."""
        self._claim(name)
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, [BATCH if d is None else d for d in shape]))
        return name

    def add_output(self, name: str, shape: Sequence[Optional[int]], elem_type: int = TensorProto.FLOAT) -> str:
        """Declare an existing tensor as a graph output."""
        if name not in self._tensors:
            raise ValueError(f"graph output {name!r} is not produced by any node")
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, [BATCH if d is None else d for d in shape]))
        return name

    def initializer(self, name: str, array: np.ndarray) -> str:
        self._claim(name)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def scalar(self, value: float, name: str) -> str:
        """A float32 scalar initializer, shared between users of the same value and name."""
        key = (name, np.float32(value).tobytes())
        if key not in self._constants:
            self._constants[key] = self.initializer(name, np.array(value, dtype=np.float32))
        return self._constants[key]

    def node(self, op: str, inputs: Sequence[str], outputs: Sequence[str], name: str, **attrs: Any) -> str:
        if name in self._node_names:
            raise ValueError(f"node name {name!r} is already used in the graph")
        self._node_names.add(name)
        for out in outputs:
            self._claim(out)
        self.nodes.append(helper.make_node(op, list(inputs), list(outputs), name=name, **attrs))
        return outputs[0]

    def model(self, graph_name: str, producer_version: str, doc: str = "") -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, graph_name, self.inputs, self.outputs, self.initializers, doc_string=doc)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="zor-export",
            producer_version=producer_version,
        )
        model.ir_version = IR_VERSION
        return model
