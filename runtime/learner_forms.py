"""Which step graph a Learner runs: the two forms of one step a masked learnable file carries.

A file whose ``zor.learnable`` lists ``transposed`` state (zor.export.learnable_masked: the
co-activity formed on the post units that spiked for some row) carries a second step graph in
its metadata, ``zor.learnable_every_unit`` (base64, covered by ``zor.integrity``): the same
inputs, outputs and state layout, the same step from every product, block by block. The masked
form costs less the fewer post units spike; above EVERY_UNIT_ABOVE of them (measured: at 75 %
the two are level on the 2-core Xeon, at 100 % the masked one costs 1.16×) the second is cheaper.
The Learner starts with the masked graph and chooses again every CHOOSE_EVERY steps from the
last step's firing rates: a post unit that spiked for no row leaves its rate at exactly
fl(m·r) (r ← m r + (1 − m)·0, float32), so

    share = mean over the masked connections' post units of [r_new ≠ fl(m · r_old)]
    form  = masked if share ≤ EVERY_UNIT_ABOVE else every-unit

Both graphs are checked against the engine at export; the choice changes the speed, not the
step.

Example:
    >>> import numpy as np
    >>> active_share([np.array([0.5, 0.45], np.float32)], [np.array([0.5, 0.5], np.float32)], [np.float32(0.9)])
    0.5
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Optional

import numpy as np
import onnxruntime as ort

from zor.common import format as fmt
from zor.common.errors import ModelFileError

from . import onnxmeta

__all__ = ["EVERY_UNIT_KEY", "EVERY_UNIT_ABOVE", "CHOOSE_EVERY", "Forms", "active_share"]

EVERY_UNIT_KEY = "zor.learnable_every_unit"   # metadata: base64 of the second step graph
EVERY_UNIT_ABOVE = 0.6    # share of active post units above which the every-unit graph runs (level at ~0.7)
CHOOSE_EVERY = 8          # steps between two choices (two (n,) comparisons each, ~20 µs after a step)


def active_share(new: list[np.ndarray], old: list[np.ndarray], momentum: list[np.float32]) -> float:
    """The share of post units whose rate moved off fl(m · r_old): the ones that spiked for some row."""
    moved = sum(int(np.count_nonzero(n != m * o)) for n, o, m in zip(new, old, momentum))
    return moved / max(1, sum(n.size for n in new))


def _twin(meta: dict, opts: ort.SessionOptions, path: Any) -> Optional[ort.InferenceSession]:
    """The every-unit session of a masked file, its operators checked like the main graph's; None without one."""
    text = meta.get(EVERY_UNIT_KEY)
    if text is None:
        return None
    try:
        data = base64.b64decode(text, validate=True)
        scan = onnxmeta.scan_model(data, digests=False)
    except (binascii.Error, ValueError, onnxmeta.ScanError) as exc:
        raise ModelFileError(f"{path}: {EVERY_UNIT_KEY}: expected a base64 ONNX step graph ({exc})") from exc
    odd = sorted({n.op_type for n in scan.nodes if n.domain not in ("", "ai.onnx")
                  or n.op_type not in fmt.LEARNABLE_OPERATORS or n.subgraphs})
    if odd or scan.foreign:
        raise ModelFileError(f"{path}: {EVERY_UNIT_KEY}: operators {odd or scan.foreign} are not ones a learnable "
                             f"export emits; refused")
    try:
        return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:    # onnxruntime raises its own classes for a bad graph
        raise ModelFileError(f"{path}: onnxruntime refused the every-unit step graph ({exc})") from exc


class Forms:
    """The step graphs of one learnable file and the one the next step runs (``form``: 0 the file's own graph,
    1 its every-unit twin)."""

    def __init__(self, meta: dict, spec: dict, opts: ort.SessionOptions, bound: Any, path: Any) -> None:
        self.form = 0
        self.posts = [int(n.rsplit("_", 1)[1]) + 1 for n in spec.get("transposed", []) if n.startswith("weight_")]
        self.momentum = [np.float32(spec["layers"][p]["rate_momentum"]) for p in self.posts]
        twin = _twin(meta, opts, path) if self.posts else None
        self.twin = None if twin is None else bound.add(twin)     # its form number in the bound state
        self.counts = [0, 0]                                        # steps run in each form

    def choose(self, bound: Any, steps_done: int) -> None:
        """After a step (the new state switched in): every CHOOSE_EVERY steps, the form of the next ones."""
        self.counts[self.form] += 1
        if self.twin is None or steps_done % CHOOSE_EVERY:
            return
        live, before = bound.sets[bound.cur], bound.sets[1 - bound.cur]
        share = active_share([live[f"rate_{p}"] for p in self.posts], [before[f"rate_{p}"] for p in self.posts],
                             self.momentum)
        self.form = self.twin if share > EVERY_UNIT_ABOVE else 0
