"""``Stream``: one sequence of calls to a stateful model, carrying its charges.

Each step feeds the previous step's ``state_out_{i}`` back as ``state_in_{i}``:

    c_t = λ c̃_{t−1} + x_t,   s_t = [c_t > θ],   c̃_t = reset(c_t, s_t)

A fresh (or reset) stream starts from the metadata's initial state and takes the
batch size of its first step; later steps must keep that batch size (a
:class:`~zor.common.errors.StateError` says so otherwise). Streams of one model are
isolated from each other; a stream's steps are serialised by its own lock, so
sharing one stream between threads is safe but makes them take turns.

Example:
    >>> s = model.stream()                            # doctest: +SKIP
    >>> y1 = s.step(x)["output"]; y2 = s.step(x)["output"]   # doctest: +SKIP
    >>> s.reset()                                     # doctest: +SKIP
    >>> ys = s.run(xs)["output"]                      # xs (T, B, n_0): T steps in one call  # doctest: +SKIP
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Mapping, Optional

import numpy as np

from zor.common import format as fmt
from zor.common.errors import ShapeError, StateError

from .checks import check_array

if TYPE_CHECKING:
    from .model import Model

__all__ = ["Stream"]


class Stream:
    """State carried between calls of a stateful :class:`~zor.runtime.Model` (use ``model.stream()``)."""

    def __init__(self, model: "Model") -> None:
        if not model.stateful:
            raise StateError(f"{model.path.name} is stateless: expected a stateful model for a Stream")
        self._model = model
        self._lock = threading.Lock()
        self._state: Optional[dict[str, np.ndarray]] = None   # state_in name → (B, n) float32
        self._state_names = [s.input for s in model.metadata.state]   # state_out_* of a call, in this order
        self.steps = 0

    @property
    def model(self) -> "Model":
        return self._model

    @property
    def state(self) -> dict[str, np.ndarray]:
        """Copies of the charges carried to the next step, by ``state_in_{i}`` name ({} when fresh)."""
        with self._lock:
            return {k: v.copy() for k, v in (self._state or {}).items()}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Start the next step from ``state`` (every ``state_in_{i}``, each (B, n_i), one B)."""
        specs = {s.input: s for s in self._model.metadata.state}
        missing = sorted(set(specs) - set(state))
        unknown = sorted(set(state) - set(specs))
        if missing or unknown:
            raise StateError(f"set_state: expected exactly the keys {sorted(specs)}, got {sorted(state)}"
                             + (f" (missing {missing})" if missing else "") + (f" (unknown {unknown})" if unknown else ""))
        new: dict[str, np.ndarray] = {}
        batch = None
        for name, spec in specs.items():
            try:
                arr = check_array(name, state[name], spec.size, batch)
            except Exception as exc:
                raise StateError(f"set_state: {exc}") from None
            batch = arr.shape[0]
            new[name] = arr.copy()
        with self._lock:
            self._state = new

    def reset(self) -> None:
        """Forget the carried charges: the next step starts from the initial state."""
        with self._lock:
            self._state = None
            self.steps = 0

    def step(self, x: Any, spikes: bool = False) -> dict[str, np.ndarray]:
        """One step on ``x`` (B, n_0): returns ``output`` (and spikes, as in ``Model.run``)."""
        if isinstance(x, Mapping) and set(x) - {fmt.INPUT}:
            raise StateError(f"stream step: expected only {fmt.INPUT!r}, got also {sorted(set(x) - {fmt.INPUT})}: "
                             "a stream carries its state itself (use set_state to start from given charges)")
        with self._lock:
            if self._state is not None and type(x) is np.ndarray and not spikes:
                return self._carried_step(x)
            feeds = self._model._feeds(x, None)
            batch = feeds[fmt.INPUT].shape[0]
            if self._state is not None:
                carried = next(iter(self._state.values())).shape[0]
                if carried != batch:
                    raise StateError(f"stream step: expected a batch of {carried} rows (the batch this stream "
                                     f"carries state for), got {batch}; call reset() to start a new batch size")
                feeds.update(self._state)
            out = self._model._run(feeds, spikes)
            self._state = {s.input: out.pop(s.output) for s in self._model.metadata.state}
            self.steps += 1
            return out

    def _carried_step(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """step(x) once a state is carried: the same checks and errors, without the initial state that the
        general path builds and then replaces (a third of a 784-128-10 LIF step at batch 1)."""
        m = self._model
        x = m._step_input(x)
        carried = next(iter(self._state.values())).shape[0]
        if x.shape[0] != carried:
            raise StateError(f"stream step: expected a batch of {carried} rows (the batch this stream "
                             f"carries state for), got {x.shape[0]}; call reset() to start a new batch size")
        feeds = {fmt.INPUT: x}
        feeds.update(self._state)
        values = m._run_values(feeds)
        self._state = dict(zip(self._state_names, values[1:]))
        self.steps += 1
        return {fmt.OUTPUT: values[0]}

    def run(self, xs: Any) -> dict[str, np.ndarray]:
        """T steps at once: ``xs`` (T, B, n_0) (a NIR import: also (T, B, *input_shape)) → ``{"output": (T, B, n_L)}``,
        the same values and state as T calls of :meth:`step`, from where this stream is; the inputs are checked
        once for the whole sequence. A failure at step t leaves the state after step t − 1."""
        m = self._model
        xs = xs if isinstance(xs, np.ndarray) else np.asarray(xs)
        if xs.ndim < 3 or not xs.shape[0] or not xs.shape[1]:
            raise ShapeError(f"stream run: expected a sequence (T, B, {m.sizes[0]}) with T, B ≥ 1, got shape "
                             f"{tuple(xs.shape)}; one step is step(x)")
        steps, batch = xs.shape[:2]
        rows = xs.reshape((steps * batch,) + xs.shape[2:])
        if m._event_shape is not None and rows.shape[1:] == m._event_shape:
            rows = rows.reshape(len(rows), -1)
        flat = check_array(fmt.INPUT, rows, m._width).reshape(steps, batch, -1)    # (T, B, n_0), checked once
        with self._lock:
            carried = batch if self._state is None else next(iter(self._state.values())).shape[0]
            if batch != carried:
                raise StateError(f"stream run: expected a batch of {carried} rows (the batch this stream "
                                 f"carries state for), got {batch}; call reset() to start a new batch size")
            if self._state is None or m._limit is not None:
                feeds = m._feeds(flat[0], self._state)        # the batch limit; the initial state of a fresh stream
                self._state = {k: feeds[k] for k in self._state_names}
            out = np.empty((steps, batch, m.sizes[-1]), np.float32)
            for t in range(steps):
                feeds = {fmt.INPUT: flat[t]}
                feeds.update(self._state)
                values = m._run_values(feeds)
                out[t] = values[0]
                self._state = dict(zip(self._state_names, values[1:]))
                self.steps += 1
            return {fmt.OUTPUT: out}

    def __repr__(self) -> str:
        return f"Stream({self._model.path.name!r}, steps={self.steps})"
