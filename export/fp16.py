"""fp16: weights stored as float16, computed in float32.

Each ``weight_{i}`` initializer becomes ``weight_{i}_fp16`` (float16) followed by a
``Cast`` to float32 named ``weight_{i}``, so the file halves its weight bytes while
the graph's inputs, outputs, thresholds and arithmetic stay float32 (the spike
decision c > θ keeps a float32 θ). Its own verification: the graph must match the
engine with the same fp16-rounded weights to float32 tolerance (:func:`rounded_model`),
and its departure from the float engine is measured like int8's.

Example:
    >>> from zor import Zor, Layer
    >>> from zor.export.graph import to_onnx
    >>> p = to_fp16(to_onnx(Zor([Layer(4), Layer(2)], seed=0)))
    >>> [n.op_type for n in p.graph.node][:1]
    ['Cast']
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

__all__ = ["to_fp16", "rounded_model"]


def to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the float32 graph with every ``weight_{i}`` stored as float16 + Cast."""
    out = copy.deepcopy(proto)
    graph = out.graph
    casts = []
    keep = []
    for init in graph.initializer:
        if init.name.startswith("weight_"):
            w = numpy_helper.to_array(init).astype(np.float16)
            keep.append(numpy_helper.from_array(w, init.name + "_fp16"))
            casts.append(helper.make_node("Cast", [init.name + "_fp16"], [init.name], name=init.name + ".cast",
                                          to=TensorProto.FLOAT))
        else:
            keep.append(init)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return out


def rounded_model(model):
    """A copy of ``model`` whose weights are rounded to float16 and back (the fp16 file's reference)."""
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for w in ref.weights:
            w.copy_(w.to(torch.float16).to(torch.float32))
    return ref
