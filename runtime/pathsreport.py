"""The per-file path report of ``zor-bench``: each benchmarked file beside the dense file of its precision.

For a file f with a dense file d of the same precision benchmarked in the same run:

    vs_dense_b1            = p50_b1(d) / p50_b1(f)            speed-up at batch 1
    max_abs_diff_vs_dense  = max |output(f) − output(d)|       on the same input
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .model import Model

__all__ = ["paths_report"]


def paths_report(labels: Sequence[str], models: Sequence[Model], figs: dict[str, Any],
                 output: Callable[[Model], np.ndarray]) -> dict[str, Any]:
    """Per file: path, sparse connections, form, batch limit, and beside a dense file of its precision (one
    without sparse connections) the speed-up over it at batch 1 and the largest output difference;
    ``output(model)`` runs a model on the report's input."""
    dense = {m.precision: (lab, m) for lab, m in zip(labels, models)
             if m.path_kind == "dense" and not m.metadata.sparse_connections}
    out: dict[str, Any] = {}
    for lab, m in zip(labels, models):
        row: dict[str, Any] = {"path": m.path_kind, "sparse_connections": m.metadata.sparse_connections,
                               "form": m.metadata.paths.get("form"), "max_batch": m.max_batch,
                               "vs_dense_b1": None, "max_abs_diff_vs_dense": None}
        if m.precision in dense and dense[m.precision][0] != lab:
            dlab, dm = dense[m.precision]
            row["vs_dense_b1"] = figs[dlab]["p50_ms_b1"] / figs[lab]["p50_ms_b1"]
            row["max_abs_diff_vs_dense"] = float(np.max(np.abs(output(m) - output(dm))))
        out[lab] = row
    return out
