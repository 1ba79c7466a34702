"""``Model``: load a Zor export and run it on onnxruntime, torch-free.

The file is a per-step graph (see :mod:`zor.format`): for layer i with charge c_i,

    s_i = [c_i > θ_i]          (``spikes_{i}``, bool)
    a_i = f_i(c_i ⊙ s_i)       next layer's input is a_i W_i
    output = f_L(c_L)          (``output``)

with c_i = λ_i·state_in_i + h_i for stateful layers (and ``state_out_i`` the reset
charge). :meth:`Model.run` is one pure call: stateful layers start from the initial
state the metadata gives (or from state arrays passed by name) and the new state
comes back as ``state_out_{i}``; :meth:`Model.stream` gives a :class:`Stream` that
carries the state between calls for you.

Thread safety: ``Model.run`` may be called from many threads at once on one Model
(onnxruntime's ``InferenceSession.run`` is thread-safe and the Model keeps no
per-call state). A :class:`Stream` serialises its own steps with a lock; give each
thread (each user, each sensor) its own stream.

Example:
    >>> from zor.runtime import Model                          # doctest: +SKIP
    >>> m = Model("fewshot.onnx", device="auto", threads=2)   # doctest: +SKIP
    >>> m.run(x)["output"].shape                               # doctest: +SKIP
    (16, 784)
    >>> out = m.run(x, spikes=True); out["spike_rates"]        # doctest: +SKIP
    array([0.41, 0.12, 1.  ])
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

import numpy as np

from zor import format as fmt
from zor.devices import Detection, Profile, detect, get
from zor.errors import ConfigError, ModelFileError, ShapeError, StateError

from . import tasks
from .checks import check_array
from .metadata import Metadata, StateSpec, parse
from .session import open_session

if TYPE_CHECKING:
    from .stream import Stream

__all__ = ["Model", "TensorInfo", "resolve_device"]

_NP_DTYPES = {"tensor(float)": np.float32, "tensor(bool)": np.bool_, "tensor(float16)": np.float16,
              "tensor(double)": np.float64, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
              "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: name, shape (None for the dynamic batch axis), numpy dtype."""

    name: str
    shape: tuple
    dtype: Any

    def __str__(self) -> str:
        dims = ", ".join("B" if d is None else str(d) for d in self.shape)
        return f"{self.name} ({dims}) {np.dtype(self.dtype).name}"


def _info(arg) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) else None for d in (arg.shape or []))
    return TensorInfo(arg.name, shape, _NP_DTYPES.get(arg.type, np.float32))


def resolve_device(device: Union[str, Profile, None]) -> tuple[Profile, Optional[Detection]]:
    """The profile for ``device``: "auto" detects this machine; a name or Profile is looked up."""
    if device is None or device == "auto":
        d = detect()
        return d.profile, d
    return get(device), None


class Model:
    """A Zor ONNX export loaded for inference (see the module docstring).

    ``Model(path, device="auto", threads=None)``: ``device`` is a profile name from
    :mod:`zor.devices`, a Profile, or "auto" (detect this machine); ``threads``
    overrides the profile's intra-op thread count.
    """

    def __init__(self, path: Union[str, os.PathLike], device: Union[str, Profile, None] = "auto",
                 threads: Optional[int] = None) -> None:
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"threads: expected a positive int or None, got {threads!r}")
        self.path = Path(path)
        self.profile, self.detection = resolve_device(device)
        self._session, missing = open_session(self.path, self.profile, threads)
        self.notes: list[str] = []
        if missing:
            self.notes.append(f"profile {self.profile.name} prefers {', '.join(missing)}, which this onnxruntime "
                              f"build lacks: running on {', '.join(self._session.get_providers())}")
        self.metadata: Metadata = parse(self._session.get_modelmeta().custom_metadata_map, str(self.path))
        self._inputs = [_info(a) for a in self._session.get_inputs()]
        self._outputs = [_info(a) for a in self._session.get_outputs()]
        self._check_graph()
        self.threads = threads

    # ------------------------------------------------------------------ description
    @property
    def inputs(self) -> list[TensorInfo]:
        """Graph inputs: ``input`` and, for stateful models, ``state_in_{i}``."""
        return list(self._inputs)

    @property
    def outputs(self) -> list[TensorInfo]:
        """Graph outputs: ``output``, ``state_out_{i}``, ``spikes_{i}``, ``charge_{i}``."""
        return list(self._outputs)

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually uses."""
        return self._session.get_providers()

    @property
    def task(self) -> str:
        """The task name from the metadata ("reconstruct", "classify", "generic", ...)."""
        return str(self.metadata.task.get("name", "generic"))

    @property
    def sizes(self) -> list[int]:
        return self.metadata.sizes

    @property
    def stateful(self) -> bool:
        return self.metadata.stateful

    @property
    def precision(self) -> str:
        """"float32", "int8" or "fp16" (from ``zor.quantization``)."""
        return self.metadata.precision

    def __repr__(self) -> str:
        return (f"Model({str(self.path)!r}, sizes={self.sizes}, task={self.task!r}, precision={self.precision!r}, "
                f"device={self.profile.name!r}, stateful={self.stateful})")

    def _check_graph(self) -> None:
        where = str(self.path)
        names_in = {t.name: t for t in self._inputs}
        names_out = {t.name: t for t in self._outputs}
        sizes = self.sizes
        expected_in = {fmt.INPUT} | {s.input for s in self.metadata.state}
        if set(names_in) != expected_in:
            raise ModelFileError(f"{where}: graph inputs {sorted(names_in)} do not match the metadata: "
                                 f"expected {sorted(expected_in)}")
        for name, width in [(fmt.INPUT, sizes[0]), (fmt.OUTPUT, sizes[-1])] + \
                           [(s.input, s.size) for s in self.metadata.state] + \
                           [(s.output, s.size) for s in self.metadata.state]:
            t = names_in.get(name) or names_out.get(name)
            if t is None:
                raise ModelFileError(f"{where}: graph has no tensor {name!r}: expected it by the Zor format "
                                     f"(outputs found: {', '.join(sorted(names_out))})")
            if len(t.shape) != 2 or (t.shape[1] is not None and t.shape[1] != width):
                raise ModelFileError(f"{where}: graph tensor {name!r} has shape {t.shape}: expected (B, {width}) "
                                     "from the metadata's layer sizes")
        self._spike_names = [fmt.spikes(i) for i in range(len(sizes)) if fmt.spikes(i) in names_out]

    # ------------------------------------------------------------------ running
    def _feeds(self, x: Any, state: Optional[Mapping[str, Any]] = None) -> dict[str, np.ndarray]:
        """Validated feeds: ``input`` plus every state input (given, else initial)."""
        given: dict[str, Any]
        if isinstance(x, Mapping):
            given = dict(x)
            known = {t.name for t in self._inputs}
            unknown = sorted(set(given) - known)
            if unknown:
                raise ShapeError(f"unknown input name(s) {', '.join(map(repr, unknown))}: expected "
                                 f"{', '.join(sorted(known))}")
            if fmt.INPUT not in given:
                raise ShapeError(f"missing input {fmt.INPUT!r}: expected a dict with {fmt.INPUT!r} "
                                 f"(and optionally {', '.join(s.input for s in self.metadata.state) or 'nothing else'}), "
                                 f"got keys {sorted(given)}")
        else:
            given = {fmt.INPUT: x}
        if state:
            given.update(state)
        feeds = {fmt.INPUT: check_array(fmt.INPUT, given[fmt.INPUT], self.sizes[0])}
        batch = feeds[fmt.INPUT].shape[0]
        for spec in self.metadata.state:
            if spec.input in given:
                feeds[spec.input] = check_array(spec.input, given[spec.input], spec.size, batch)
            else:
                feeds[spec.input] = initial_state(spec, batch)
        return feeds

    def _run(self, feeds: dict[str, np.ndarray], spikes: bool, extra: Sequence[str] = ()) -> dict[str, np.ndarray]:
        names = [fmt.OUTPUT] + [s.output for s in self.metadata.state]
        if spikes:
            if len(self._spike_names) != len(self.sizes):
                raise ModelFileError(f"{self.path}: spike rates asked for, but the graph has spike outputs "
                                     f"{self._spike_names}: expected spikes_0..spikes_{len(self.sizes) - 1}")
            names += self._spike_names
        out_names = {t.name for t in self._outputs}
        for name in extra:
            if name not in out_names:
                raise ShapeError(f"unknown output name {name!r}: expected one of {', '.join(sorted(out_names))}")
            if name not in names:
                names.append(name)
        try:
            values = self._session.run(names, feeds)
        except Exception as exc:  # validated inputs should never fail; report the model, not a traceback
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelFileError(f"{self.path}: onnxruntime failed on valid inputs "
                                 f"({', '.join(f'{k} {v.shape}' for k, v in feeds.items())}): {first[:300]}") from None
        out = dict(zip(names, values))
        if spikes:
            out["spike_rates"] = np.array([float(np.mean(out[n])) for n in self._spike_names])
        return out

    def run(self, x: Any, spikes: bool = False, outputs: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """One call: ``run(x)`` or ``run({"input": x, "state_in_1": s})`` → dict of named arrays.

        Returns ``output`` (B, n_L) and, for stateful models, ``state_out_{i}``. With
        ``spikes=True`` also ``spikes_{i}`` (bool, B × n_i) and ``spike_rates`` (L,):
        the share of units that spiked in each layer, over the batch. ``outputs``
        names extra graph outputs to fetch (e.g. ``charge_1``).
        """
        return self._run(self._feeds(x), spikes, outputs)

    def __call__(self, x: Any) -> np.ndarray:
        """``model(x)`` is ``model.run(x)["output"]``."""
        return self.run(x)[fmt.OUTPUT]

    def stream(self) -> "Stream":
        """A :class:`Stream` carrying state between calls (stateful models only)."""
        from .stream import Stream

        if not self.stateful:
            raise StateError(f"{self.path.name} is stateless ({fmt.KEYS.STATEFUL} = false): expected a stateful "
                             "model for stream(); call run(x) instead, every call is independent")
        return Stream(self)

    # ------------------------------------------------------------------ task helpers
    def reconstruct(self, x: Any) -> np.ndarray:
        """Reconstruct inputs (rows or images); see :func:`zor.runtime.tasks.reconstruct`."""
        return tasks.reconstruct(self, x)

    def classify(self, x: Any) -> "tasks.Classes":
        """Classify inputs (rows or images); see :func:`zor.runtime.tasks.classify`."""
        return tasks.classify(self, x)


def initial_state(spec: StateSpec, batch: int) -> np.ndarray:
    """The state a fresh stream starts from: the metadata's ``initial`` broadcast to (B, n)."""
    init = np.asarray(spec.initial, dtype=np.float32)
    if init.ndim > 1 or (init.ndim == 1 and init.shape[0] != spec.size):
        raise ModelFileError(f"metadata state of layer {spec.layer}: initial value expected a number or "
                             f"{spec.size} numbers, got shape {init.shape}")
    return np.ascontiguousarray(np.broadcast_to(init, (batch, spec.size)), dtype=np.float32)

