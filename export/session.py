"""onnxruntime sessions for verification and calibration, and a per-step runner.

:class:`Stepper` drives the per-step graph: it feeds ``input`` plus the
``state_in_i`` tensors and carries the ``state_out_i`` tensors to the next step,
exactly as a device stream does.

Example:
    >>> from zor import Zor, Layer
    >>> from zor.export.graph import to_onnx
    >>> import numpy as np
    >>> st = Stepper(to_onnx(Zor([Layer(3, decay=0.5), Layer(2)], seed=0)))
    >>> st.reset(batch=1); out = st.step(np.ones((1, 3), np.float32))
    >>> out["output"].shape
    (1, 2)
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import onnx
import onnxruntime as ort

from zor.common import format as fmt
from zor.common.errors import ModelFileError

__all__ = ["make_session", "Stepper"]


def make_session(model: Union[onnx.ModelProto, bytes, str], threads: int = 1) -> ort.InferenceSession:
    """A CPU session with ``threads`` intra-op threads (verification stays small and deterministic)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    try:
        return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise ModelFileError(f"onnxruntime cannot load the model: {exc}") from exc


class Stepper:
    """Run a Zor per-step graph, carrying its state tensors between calls.

    ``max_batch`` (a sparse export's row limit, ``zor.paths``): a larger batch is run
    in consecutive chunks of at most ``max_batch`` rows (each row is independent, state
    included) and the outputs are concatenated.
    """

    def __init__(self, model: Union[onnx.ModelProto, bytes, str, ort.InferenceSession], threads: int = 1,
                 max_batch: Optional[int] = None) -> None:
        self.session = model if isinstance(model, ort.InferenceSession) else make_session(model, threads)
        self.max_batch = max_batch
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.state_layers = sorted(int(n[len("state_in_"):]) for n in self.input_names if n.startswith("state_in_"))
        self.state: dict[int, np.ndarray] = {}

    def reset(self, batch: int, state: Optional[dict[int, np.ndarray]] = None, sizes: Optional[dict[int, int]] = None) -> None:
        """Start ``batch`` streams at rest (zeros), or from ``state`` {layer: (B, n_i)}."""
        if state is not None:
            self.state = {i: np.asarray(state[i], np.float32) for i in self.state_layers}
            return
        shapes = {i.name: i.shape for i in self.session.get_inputs()}
        self.state = {}
        for i in self.state_layers:
            n = (sizes or {}).get(i) or shapes[fmt.state_in(i)][1]
            self.state[i] = np.zeros((batch, int(n)), np.float32)

    def feeds(self, x: np.ndarray) -> dict[str, np.ndarray]:
        feed = {fmt.INPUT: np.ascontiguousarray(x, dtype=np.float32)}
        for i in self.state_layers:
            feed[fmt.state_in(i)] = self.state[i]
        return feed

    def step(self, x: np.ndarray, names: Optional[list[str]] = None) -> dict[str, np.ndarray]:
        """One step: run the graph on x (B, n_0), carry the state, return the named outputs."""
        wanted = list(self.output_names if names is None else names)
        for i in self.state_layers:
            if fmt.state_out(i) not in wanted:
                wanted.append(fmt.state_out(i))
        feeds = self.feeds(x)
        rows = feeds[fmt.INPUT].shape[0]
        if self.max_batch is None or rows <= self.max_batch:
            out = dict(zip(wanted, self.session.run(wanted, feeds)))
        else:
            parts = [self.session.run(wanted, {k: v[a:a + self.max_batch] for k, v in feeds.items()})
                     for a in range(0, rows, self.max_batch)]
            out = {name: np.concatenate([p[k] for p in parts]) for k, name in enumerate(wanted)}
        for i in self.state_layers:
            self.state[i] = out[fmt.state_out(i)]
        return out
