"""NIR import: Neuromorphic Intermediate Representation graphs → verified, stateful ONNX step graphs.

    from zor.export.nir import load_graph, simulate
    from zor.export import export_nir
    g = load_graph("net.nir")                     # read (nir package), flatten, check
    res = simulate(g, xs, dt=1e-4)                # torch reference: xs (T, B, *input_shape)
    export_nir("net.nir", "net.onnx", dt=1e-4)    # build, verify against the reference, write

Parts: :mod:`.graph` (reading and checking, step order, recurrent edges, nested sub-graphs),
:mod:`.nodes` (the converter registry) with :mod:`.layers` and :mod:`.neurons` (one converter per
NIR node type, its discrete step in the docstring), :mod:`.reference` (the torch simulation),
:mod:`.onnxgraph` (the ONNX step graph), :mod:`.verify`, :mod:`.paths` (``--path sparse | auto``), :mod:`.int8`
(``--quantize int8``: spike budget, per-node fallback) and :mod:`.export`. See docs/nir.md.
"""

from .export import export_nir
from .graph import NirGraph, load_graph, read_nir
from .kinds import converter_for, supported_kinds
from .nodes import register
from .reference import SimResult, initial_state, simulate, state_layout

__all__ = ["load_graph", "read_nir", "NirGraph", "simulate", "SimResult", "state_layout", "initial_state",
           "export_nir", "register", "converter_for", "supported_kinds"]
